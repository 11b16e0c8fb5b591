package rolloutworker_test

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/gomlx/gomlx/backends"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/bus/bustest"
	"github.com/bicot-rl/bicot/pkg/ckpt"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/rolloutworker"
	"github.com/bicot-rl/bicot/pkg/store/local"
	"github.com/bicot-rl/bicot/pkg/vq"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/gomlx/gomlx/backends/simplego.(*workersPool).lockedRunTaskInGoroutine.func1"),
		goleak.IgnoreCurrent())
}

// fixture is what a worker test runs on: an embedded JetStream, the pure-Go backend, a tiny
// untrained policy's checkpoint, a local store and the training prompts.
func fixture(t *testing.T) (jetstream.JetStream, backends.Backend, []byte, *local.Store, []prompts.Prompt) {
	t.Helper()
	js := bustest.JetStream(t)
	backend, err := mlx.NewBackend("")
	if err != nil {
		t.Fatal(err)
	}
	cb, err := vq.Load(filepath.Join("..", "..", "models", "codebook.vq"))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := model.TinyCheckpoint(backend, cb, 11)
	if err != nil {
		t.Fatal(err)
	}
	st, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ps, err := prompts.ReadFile(filepath.Join("..", "..", "data", "prompts", "train.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return js, backend, pol, st, ps
}

// TestSamplesAreDeterministicPerKey samples the same task in two runs by two workers, once as one
// batch and once split differently: every sample (tokens, log-probs, plan) is identical, because
// its random stream depends only on (seed, step, prompt index, sample index) and the weights. A
// redelivered or re-dispatched task therefore reproduces its samples exactly.
func TestSamplesAreDeterministicPerKey(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js, backend, pol, st, ps := fixture(t)
	refs := []bus.PromptRef{{Index: 4, Prompt: ps[4]}, {Index: 9, Prompt: ps[9]}, {Index: 2, Prompt: ps[2]}}
	sampling := bus.SamplingParams{Temperature: 1, CFGWeight: 3, MaxPlanTokens: 5}
	got := map[string]map[string]bus.Sample{}
	for i, run := range []string{"da", "db"} {
		if _, err := bus.EnsureStreams(ctx, js, run); err != nil {
			t.Fatal(err)
		}
		key, sum, err := ckpt.PutWeights(ctx, st, run, 0, pol)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bus.AnnouncePolicy(ctx, js, bus.PolicyAnnounce{Run: run, Version: 0, WeightsKey: key, SHA256: sum}); err != nil {
			t.Fatal(err)
		}
		// Run da gets one task of three prompts, run db the same prompts as two tasks.
		tasks := [][]bus.PromptRef{refs}
		if i == 1 {
			tasks = [][]bus.PromptRef{refs[2:], refs[:2]}
		}
		for _, tp := range tasks {
			if _, err := bus.PublishTask(ctx, js, bus.BatchTask{Run: run, Step: 3, PolicyVersion: 0, Prompts: tp, G: 3, Seed: 42, Sampling: sampling}); err != nil {
				t.Fatal(err)
			}
		}
		cfg := config.Default()
		cfg.RunID, cfg.Wire.PollWait = run, config.Duration(200*time.Millisecond)
		w, err := rolloutworker.New(ctx, rolloutworker.Deps{ID: "w-" + run, JS: js, Backend: backend, Store: st, Log: zerolog.Nop()}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.Run(wctx) }()
		got[run] = collect(t, ctx, js, run, 9)
		// A task's counters move after its last sample is published: wait for them.
		for deadline := time.Now().Add(5 * time.Second); w.Stats().Tasks < int64(len(tasks)) && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		wcancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if s := w.Stats(); s.Tasks != int64(len(tasks)) || s.Samples != 9 {
			t.Errorf("run %s: worker stats %+v", run, s)
		}
	}
	for k, a := range got["da"] {
		b, ok := got["db"][k]
		if !ok {
			t.Fatalf("sample %s missing from the second run", k)
		}
		a.Run, b.Run, a.Worker, b.Worker = "", "", "", ""
		if !reflect.DeepEqual(a, b) {
			t.Errorf("sample %s differs:\n%+v\n%+v", k, a, b)
		}
	}
}

func collect(t *testing.T, ctx context.Context, js jetstream.JetStream, run string, n int) map[string]bus.Sample {
	t.Helper()
	topo, _ := bus.NewTopology(run)
	cons, err := js.Consumer(ctx, topo.Samples.Stream, topo.Samples.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bus.Sample{}
	for len(out) < n {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("run %s: %d of %d samples: %v", run, len(out), n, err)
		}
		var s bus.Sample
		if err := bus.Decode(msg.Data(), &s); err != nil {
			t.Fatal(err)
		}
		_ = msg.Ack()
		out[fmt.Sprintf("%d/%d/%d", s.Step, s.PromptIndex, s.SampleIndex)] = s
	}
	return out
}

// A task waiting for a policy version nobody has announced (yet) does not hold the worker's
// sampling lock: with two fetchers, a task whose version is there is sampled meanwhile.
func TestWaitingTaskDoesNotBlockOthers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js, backend, pol, st, ps := fixture(t)
	const run = "wait"
	if _, err := bus.EnsureStreams(ctx, js, run); err != nil {
		t.Fatal(err)
	}
	key, sum, err := ckpt.PutWeights(ctx, st, run, 0, pol)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.AnnouncePolicy(ctx, js, bus.PolicyAnnounce{Run: run, Version: 0, WeightsKey: key, SHA256: sum}); err != nil {
		t.Fatal(err)
	}
	sampling := bus.SamplingParams{Temperature: 1, CFGWeight: 3, MaxPlanTokens: 5}
	publish := func(v int64) {
		task := bus.BatchTask{Run: run, Step: v, PolicyVersion: v, Prompts: []bus.PromptRef{{Index: int(v), Prompt: ps[v]}}, G: 2, Seed: 1, Sampling: sampling}
		if _, err := bus.PublishTask(ctx, js, task); err != nil {
			t.Fatal(err)
		}
	}
	// First a task of a version that is never announced, taken and waited on ...
	publish(7)
	cfg := config.Default()
	cfg.RunID, cfg.Wire.PollWait, cfg.Wire.RolloutFetchers = run, config.Duration(200*time.Millisecond), 2
	cfg.Wire.PolicyWait = config.Duration(time.Minute)
	w, err := rolloutworker.New(ctx, rolloutworker.Deps{ID: "w", JS: js, Backend: backend, Store: st, Log: zerolog.Nop()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	time.Sleep(time.Second)
	// ... then one of version 0.
	publish(0)
	start := time.Now()
	got := collect(t, ctx, js, run, 2) // fails after 5 s without a sample
	if _, ok := got["0/0/0"]; !ok {
		t.Errorf("samples %v, want those of the version-0 task", got)
	}
	t.Logf("version-0 task sampled after %v while the other waited", time.Since(start).Round(time.Millisecond))
	wcancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
