package rolloutworker_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/natsd"

	"github.com/gomlx/gomlx/backends"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/ckpt"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/rolloutworker"
	"github.com/bicot-rl/bicot/pkg/store/local"
)

// BenchmarkRolloutPool measures how fast a pool of rollout workers drains a queue of tasks with
// the shipped base policy (8 tasks of 1 prompt x G = 8): the gain of adding a worker to the pool,
// which is what elastic scaling buys. Workers run in this process, each with its own copy of the
// policy. The backend comes from $BICOT_BACKEND: the default lets one worker's matrix multiplies
// use every core, so on a small machine a second worker mostly competes for the same cores;
// "go:parallelism=0,ops_sequential" gives each worker one core, as one worker per core, GPU or
// machine has.
//
//	go test ./pkg/rollout -run '^$' -bench RolloutPool -benchtime 1x -count 3
//	BICOT_BACKEND=go:parallelism=0,ops_sequential go test ./pkg/rollout -run '^$' -bench RolloutPool -benchtime 1x -count 3
func BenchmarkRolloutPool(b *testing.B) {
	weights, err := os.ReadFile(filepath.Join("..", "..", "models", "base.safetensors"))
	if err != nil {
		b.Skipf("shipped base policy missing: %v", err)
	}
	ps, err := prompts.ReadFile(filepath.Join("..", "..", "data", "prompts", "train.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	backend, err := mlx.NewBackend("")
	if err != nil {
		b.Fatal(err)
	}
	const tasks, g = 8, 8
	for _, n := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", n), func(b *testing.B) {
			var elapsed time.Duration
			for i := 0; b.Loop(); i++ {
				elapsed += drainOnce(b, backend, fmt.Sprintf("pool%d-%d", n, i), n, tasks, g, weights, ps)
			}
			b.ReportMetric(float64(b.N*tasks*g)/elapsed.Seconds(), "samples/s")
		})
	}
}

func drainOnce(b *testing.B, backend backends.Backend, run string, workers, tasks, g int, weights []byte, ps []prompts.Prompt) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	srv, err := natsd.Start(natsd.Options{StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	nc, js, err := bus.Connect(ctx, srv.URL(), bus.ConnectOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	st, err := local.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := bus.EnsureStreams(ctx, js, run); err != nil {
		b.Fatal(err)
	}
	key, sum, err := ckpt.PutWeights(ctx, st, run, 0, weights)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := bus.AnnouncePolicy(ctx, js, bus.PolicyAnnounce{Run: run, Version: 0, WeightsKey: key, SHA256: sum}); err != nil {
		b.Fatal(err)
	}
	ws := make([]*rolloutworker.Worker, workers)
	for i := range ws {
		cfg := config.Default()
		cfg.RunID, cfg.Wire.PollWait = run, config.Duration(200*time.Millisecond)
		ws[i], err = rolloutworker.New(ctx, rolloutworker.Deps{ID: fmt.Sprintf("w%d", i), JS: js, Backend: backend, Store: st, Log: zerolog.Nop()}, cfg)
		if err != nil {
			b.Fatal(err)
		}
	}
	sampling := bus.SamplingParams{Temperature: 1, CFGWeight: 3, MaxPlanTokens: 24}
	for i := range tasks {
		t := bus.BatchTask{Run: run, Step: 0, PolicyVersion: 0, G: g, Seed: 1, Sampling: sampling,
			Prompts: []bus.PromptRef{{Index: i, Prompt: ps[i]}}}
		if _, err := bus.PublishTask(ctx, js, t); err != nil {
			b.Fatal(err)
		}
	}
	t0 := time.Now()
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan error, workers)
	for _, w := range ws {
		go func() { done <- w.Run(wctx) }()
	}
	for {
		var got int64
		for _, w := range ws {
			got += w.Stats().Samples
		}
		if got >= int64(tasks*g) {
			break
		}
		if ctx.Err() != nil {
			b.Fatal("timed out draining the queue")
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(t0)
	wcancel()
	for range ws {
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	return elapsed
}
