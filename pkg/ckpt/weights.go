package ckpt

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"github.com/bicot-rl/bicot/pkg/store"
)

// WeightsKey is where PutWeights stores a policy version's weights.
func WeightsKey(run string, version int64) string {
	return fmt.Sprintf("%s/weights/%012d.bin", run, version)
}

// PutWeights publishes the weights of a policy version for rollout workers and returns the key and
// SHA-256 to announce with the version. Re-publishing a version overwrites it atomically.
func PutWeights(ctx context.Context, st store.Store, run string, version int64, data []byte) (key, sum string, err error) {
	if err := validateRun(run); err != nil {
		return "", "", fmt.Errorf("put weights: %w", err)
	}
	if version < 0 {
		return "", "", fmt.Errorf("put weights %s: negative policy version %d", run, version)
	}
	key, sum = WeightsKey(run, version), Sum(data)
	if err := put(ctx, st, key, data, sum); err != nil {
		return "", "", fmt.Errorf("put weights %s v%d: %w", run, version, err)
	}
	return key, sum, nil
}

// GetWeights fetches announced weights and verifies them against the announced SHA-256.
func GetWeights(ctx context.Context, st store.Store, key, sum string) ([]byte, error) {
	if len(sum) != 64 {
		return nil, fmt.Errorf("get weights %s: announced sha256 %q is not 64 hex digits", key, sum)
	}
	info, err := st.Stat(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("get weights: %w", err)
	}
	var buf bytes.Buffer
	buf.Grow(int(info.Size))
	if err := readVerified(ctx, st, PartInfo{Key: key, Size: info.Size, SHA256: sum}, &buf); err != nil {
		return nil, fmt.Errorf("get weights: %w", err)
	}
	return buf.Bytes(), nil
}

// WeightCache keeps the current policy weights of a rollout worker: asking again for the version
// it holds costs nothing, asking for a new one downloads and verifies it and replaces the old.
// Concurrent callers share one download (they wait on the cache's lock). The returned bytes are
// shared: callers must not modify them.
type WeightCache struct {
	st store.Store

	mu        sync.Mutex
	key, sum  string
	data      []byte
	downloads int
}

// NewWeightCache returns an empty cache over st.
func NewWeightCache(st store.Store) *WeightCache { return &WeightCache{st: st} }

// Get returns the weights at key with SHA-256 sum, from the cache when they are the current ones.
func (c *WeightCache) Get(ctx context.Context, key, sum string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.data != nil && c.key == key && c.sum == sum {
		return c.data, nil
	}
	data, err := GetWeights(ctx, c.st, key, sum)
	if err != nil {
		return nil, err
	}
	c.key, c.sum, c.data = key, sum, data
	c.downloads++
	return data, nil
}

// Current returns the cached weights' key and SHA-256 ("" when empty).
func (c *WeightCache) Current() (key, sum string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.key, c.sum
}

// Downloads counts the fetches from the store so far (for metrics).
func (c *WeightCache) Downloads() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.downloads
}
