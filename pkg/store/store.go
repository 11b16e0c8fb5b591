// Package store is the object storage behind checkpoints, policy weights and run artifacts. One
// interface, several backends: a local directory (the laptop default, package store/local) and
// S3-compatible storage through minio-go (package store/s3). Keys are slash-separated paths
// relative to the store's root (bucket + prefix for S3).
package store

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotFound is returned (wrapped) by Get and Stat when a key does not exist.
var ErrNotFound = errors.New("object not found")

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key      string
	Size     int64
	Modified time.Time
}

// Store is an object store. Implementations are safe for concurrent use and honour ctx deadlines.
type Store interface {
	// Put writes an object; size may be -1 when unknown. An object is visible only once Put returns
	// nil: a failed Put never leaves a partial object under key.
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// Get opens an object for reading. The caller closes it.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Stat describes an object.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// List returns every object whose key starts with prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]ObjectInfo, error)
	// Delete removes an object; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

// ContextReader reads r until ctx ends, so a copy from a slow or endless source stops with the
// context's error.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
