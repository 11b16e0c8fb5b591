package rewardworker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/reward"
)

// scoreByPrompt scores an item by the number in its prompt; "bad" fails the call and "down" makes
// it unavailable. It counts calls and records their sizes.
type scoreByPrompt struct {
	calls atomic.Int64
	mu    sync.Mutex
	sizes []int
}

func (s *scoreByPrompt) score(_ context.Context, items []reward.Item) ([]reward.Scores, error) {
	s.calls.Add(1)
	s.mu.Lock()
	s.sizes = append(s.sizes, len(items))
	s.mu.Unlock()
	out := make([]reward.Scores, len(items))
	for i, it := range items {
		switch it.Prompt.Prompt {
		case "bad":
			return nil, errors.New("expert choked on an image")
		case "down":
			return nil, fmt.Errorf("hps: %w", reward.ErrUnavailable)
		}
		v, _ := strconv.Atoi(it.Prompt.Prompt)
		out[i] = reward.Scores{Total: float64(v)}
	}
	return out, nil
}

func scoreConcurrently(t *testing.T, b *batcher, ps ...string) []batchRes {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := make([]batchRes, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc, err := b.Score(ctx, reward.Item{Prompt: prompts.Prompt{Prompt: p}})
			out[i] = batchRes{scores: sc, err: err}
		}()
	}
	wg.Wait()
	return out
}

func TestBatcherScoresConcurrentSamplesInOneCall(t *testing.T) {
	s := &scoreByPrompt{}
	b := newBatcher(s.score, 4, 2*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.run(ctx) }()
	defer func() { cancel(); <-done }()

	res := scoreConcurrently(t, b, "1", "2", "3", "4")
	for i, r := range res {
		if r.err != nil || r.scores.Total != float64(i+1) {
			t.Errorf("sample %d: %+v, want total %d", i, r, i+1)
		}
	}
	if n := s.calls.Load(); n != 1 {
		t.Errorf("%d ensemble calls for 4 concurrent samples with a batch of 4, want 1 (sizes %v)", n, s.sizes)
	}

	// One bad sample fails only itself: the batch is scored again one by one.
	s.calls.Store(0)
	res = scoreConcurrently(t, b, "5", "bad", "7", "8")
	for i, r := range res {
		if (i == 1) != (r.err != nil) {
			t.Errorf("sample %d: %+v", i, r)
		}
	}
	if n := s.calls.Load(); n != 5 {
		t.Errorf("%d calls, want 1 batch + 4 alone", n)
	}
	// An unavailable expert fails the whole batch alike (each handler rides it out).
	res = scoreConcurrently(t, b, "down", "2")
	for i, r := range res {
		if !errors.Is(r.err, reward.ErrUnavailable) {
			t.Errorf("sample %d during an outage: %v, want ErrUnavailable", i, r.err)
		}
	}
}

// A lone sample waits at most the batch window.
func TestBatcherLoneSample(t *testing.T) {
	s := &scoreByPrompt{}
	b := newBatcher(s.score, 8, 50*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.run(ctx) }()
	defer func() { cancel(); <-done }()
	res := scoreConcurrently(t, b, "3")
	if res[0].err != nil || res[0].scores.Total != 3 || s.calls.Load() != 1 {
		t.Fatalf("lone sample: %+v after %d calls", res[0], s.calls.Load())
	}
}
