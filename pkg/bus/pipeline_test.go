package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bicot-rl/bicot/pkg/natsd"

	"github.com/nats-io/nats.go/jetstream"
)

// TestPipelineCrashAfterPublishIsDeduplicated runs tasks -> rollout -> samples -> reward ->
// scored -> learner with a rollout worker that "crashes" after publishing its samples but before
// acking its task. The task is redelivered, the samples are published again with the same keys,
// and JetStream's de-duplication leaves exactly one copy of each for the reward pool.
func TestPipelineCrashAfterPublishIsDeduplicated(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	const G = 3
	tk := task(9, 40)
	tk.G = G
	if _, err := PublishTask(ctx, e.js, tk); err != nil {
		t.Fatal(err)
	}
	var rolloutCalls atomic.Int32
	var duplicates atomic.Int32
	rollout := Typed(func(ctx context.Context, bt *BatchTask, _ jetstream.Msg) error {
		for _, p := range bt.Prompts {
			for i := range bt.G {
				s := sample(bt.Step, p.Index, i)
				s.G = bt.G
				s.Prompt = p.Prompt
				s.PolicyVersion = bt.PolicyVersion
				ack, err := PublishSample(ctx, e.js, s)
				if err != nil {
					return err
				}
				if ack.Duplicate {
					duplicates.Add(1)
				}
			}
		}
		if rolloutCalls.Add(1) == 1 {
			return errors.New("simulated crash after publishing")
		}
		return nil
	})
	reward := Typed(func(ctx context.Context, s *Sample, _ jetstream.Msg) error {
		_, err := PublishScored(ctx, e.js, ScoredSample{Sample: *s, Reward: float64(s.SampleIndex), PerExpert: map[string]float64{"det": 1}})
		return err
	})
	var mu sync.Mutex
	got := map[string]int{}
	learner := Typed(func(ctx context.Context, s *ScoredSample, _ jetstream.Msg) error {
		mu.Lock()
		got[s.Key()]++
		mu.Unlock()
		return nil
	})
	o := ConsumeOptions{RetryDelay: 10 * time.Millisecond, PollWait: 200 * time.Millisecond}
	runConsume(t, e, e.topo.Tasks, rollout, o)
	runConsume(t, e, e.topo.Samples, reward, ConsumeOptions{Fetchers: 2, PollWait: 200 * time.Millisecond})
	runConsume(t, e, e.topo.Scored, learner, o)

	want := len(tk.Prompts) * G
	waitFor(t, "every scored sample", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == want
	})
	waitFor(t, "all queues drained", func() bool {
		for _, q := range []Queue{e.topo.Tasks, e.topo.Samples, e.topo.Scored} {
			if p, a := depth(t, e, q); p+a != 0 {
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	for _, p := range tk.Prompts {
		for i := range G {
			k := SampleKey("run1", 9, p.Index, i)
			if got[k] != 1 {
				t.Errorf("learner saw %s %d times, want once (all: %v)", k, got[k], got)
			}
		}
	}
	if rolloutCalls.Load() != 2 || int(duplicates.Load()) != want {
		t.Fatalf("rollout ran %d times with %d duplicate publishes; want 2 and %d", rolloutCalls.Load(), duplicates.Load(), want)
	}
	if d := deadLetters(t, e); len(d) != 0 {
		t.Fatalf("dead letters: %+v", d)
	}
}

func BenchmarkPublishSample(b *testing.B) {
	srv, err := natsd.Start(natsd.Options{StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	ctx := context.Background()
	nc, js, err := Connect(ctx, srv.URL(), ConnectOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	if _, err := EnsureStreams(ctx, js, "bench"); err != nil {
		b.Fatal(err)
	}
	s := sample(0, 0, 0)
	s.Run = "bench"
	s.ImageTokens = make([]int32, 36)
	s.ImageLogp = make([]float32, 36)
	for i := 0; b.Loop(); i++ {
		s.Step = int64(i)
		if _, err := PublishSample(ctx, js, s); err != nil {
			b.Fatal(fmt.Errorf("publish %d: %w", i, err))
		}
	}
}
