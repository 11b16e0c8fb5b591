package bus

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bicot-rl/bicot/pkg/natsd"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/bicot-rl/bicot/pkg/prompts"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type env struct {
	srv  *natsd.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	topo Topology
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv, err := natsd.Start(natsd.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, js, err := Connect(ctx, srv.URL(), ConnectOptions{Name: t.Name()})
	if err != nil {
		srv.Shutdown()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nc.Close()
		srv.Shutdown()
	})
	topo, err := EnsureStreams(ctx, js, "run1")
	if err != nil {
		t.Fatal(err)
	}
	return &env{srv: srv, nc: nc, js: js, topo: topo}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func task(step int64, first int) BatchTask {
	return BatchTask{
		Run: "run1", Step: step, PolicyVersion: 3, G: 4, Seed: 42,
		Prompts: []PromptRef{
			{Index: first, Prompt: prompts.Prompt{Prompt: "a red circle", TaskType: prompts.Color, Nouns: []string{"circle"}}},
			{Index: first + 1, Prompt: prompts.Prompt{Prompt: "two blue squares", TaskType: prompts.Numeracy}},
		},
		Sampling: SamplingParams{Temperature: 1, CFGWeight: 5, MaxPlanTokens: 24},
	}
}

func sample(step int64, prompt, idx int) Sample {
	return Sample{
		Run: "run1", Step: step, PromptIndex: prompt, SampleIndex: idx, G: 4, PolicyVersion: 3,
		PlanTokens: []int32{5, 6, 2, 0}, PlanLogp: []float32{-0.5, -1, -0.1, 0}, PlanLen: 3,
		ImageTokens: []int32{1, 2, 3}, ImageLogp: []float32{-2, -3, -0.25},
		Prompt: prompts.Prompt{Prompt: "a red circle", TaskType: prompts.Color},
	}
}

// runConsume runs Consume in the background; the returned stop cancels it and waits.
func runConsume(t *testing.T, e *env, q Queue, h Handler, o ConsumeOptions) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Consume(ctx, e.js, q, h, o) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Consume: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func deadLetters(t *testing.T, e *env) []DeadLetter {
	t.Helper()
	ctx := testCtx(t)
	s, err := e.js.Stream(ctx, e.topo.DeadStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []DeadLetter
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		raw, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		var d DeadLetter
		if err := Decode(raw.Data, &d); err != nil {
			t.Fatalf("dead letter %d: %v", seq, err)
		}
		out = append(out, d)
	}
	return out
}

func depth(t *testing.T, e *env, q Queue) (uint64, uint64) {
	t.Helper()
	p, a, err := Depth(testCtx(t), e.js, q.Stream, q.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	return p, a
}

// depthWhen reads the queue's pending and ack-pending counts until ok accepts them or 5 s pass:
// the consumer's counters follow publishes and acks asynchronously, and a single read under load
// can still see the old values.
func depthWhen(t *testing.T, e *env, q Queue, ok func(p, a uint64) bool) (uint64, uint64) {
	t.Helper()
	p, a := depth(t, e, q)
	for deadline := time.Now().Add(5 * time.Second); !ok(p, a) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		p, a = depth(t, e, q)
	}
	return p, a
}

func TestRoundTrip(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	want := task(7, 100)
	ack, err := PublishTask(ctx, e.js, want)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Stream != e.topo.Tasks.Stream || ack.Duplicate {
		t.Fatalf("ack = %+v", ack)
	}
	if p, a := depthWhen(t, e, e.topo.Tasks, func(p, a uint64) bool { return p == 1 && a == 0 }); p != 1 || a != 0 {
		t.Fatalf("depth before consume = %d,%d want 1,0", p, a)
	}
	got := make(chan *BatchTask, 1)
	stop := runConsume(t, e, e.topo.Tasks, Typed(func(ctx context.Context, m *BatchTask, _ jetstream.Msg) error {
		got <- m
		return nil
	}), ConsumeOptions{PollWait: 200 * time.Millisecond})
	var m *BatchTask
	select {
	case m = <-got:
	case <-ctx.Done():
		t.Fatal("no message")
	}
	want.V = SchemaVersion
	wb, _ := json.Marshal(want)
	gb, _ := json.Marshal(m)
	if string(wb) != string(gb) {
		t.Fatalf("round trip:\n got %s\nwant %s", gb, wb)
	}
	// The work queue deletes a message once acked.
	waitFor(t, "ack to empty the queue", func() bool {
		s, _ := e.js.Stream(ctx, e.topo.Tasks.Stream)
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
	stop()
	if p, a := depthWhen(t, e, e.topo.Tasks, func(p, a uint64) bool { return p == 0 && a == 0 }); p != 0 || a != 0 {
		t.Fatalf("depth after consume = %d,%d want 0,0", p, a)
	}
}

func TestDuplicatePublishStoredOnce(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	s := sample(1, 5, 2)
	a1, err := PublishSample(ctx, e.js, s)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := PublishSample(ctx, e.js, s)
	if err != nil {
		t.Fatal(err)
	}
	if a1.Duplicate || !a2.Duplicate || a1.Sequence != a2.Sequence {
		t.Fatalf("acks %+v then %+v: want second flagged duplicate of first", a1, a2)
	}
	other := sample(1, 5, 3)
	if _, err := PublishSample(ctx, e.js, other); err != nil {
		t.Fatal(err)
	}
	if p, _ := depthWhen(t, e, e.topo.Samples, func(p, _ uint64) bool { return p == 2 }); p != 2 {
		t.Fatalf("pending = %d, want 2 (duplicate stored once)", p)
	}
}

func TestHandlerErrorRedelivers(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	if _, err := PublishSample(ctx, e.js, sample(1, 0, 0)); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	var delivered []uint64
	var mu sync.Mutex
	runConsume(t, e, e.topo.Samples, Typed(func(ctx context.Context, s *Sample, msg jetstream.Msg) error {
		meta, _ := msg.Metadata()
		mu.Lock()
		delivered = append(delivered, meta.NumDelivered)
		mu.Unlock()
		if calls.Add(1) == 1 {
			return errors.New("expert server unavailable")
		}
		return nil
	}), ConsumeOptions{RetryDelay: 20 * time.Millisecond, PollWait: 200 * time.Millisecond})
	waitFor(t, "second delivery", func() bool { return calls.Load() >= 2 })
	waitFor(t, "queue drained", func() bool {
		p, a := depth(t, e, e.topo.Samples)
		return p == 0 && a == 0
	})
	mu.Lock()
	defer mu.Unlock()
	if len(delivered) != 2 || delivered[0] != 1 || delivered[1] != 2 {
		t.Fatalf("deliveries = %v, want [1 2]", delivered)
	}
	if d := deadLetters(t, e); len(d) != 0 {
		t.Fatalf("dead letters = %+v, want none", d)
	}
}

func TestCrashWithoutAckRedeliversAfterAckWait(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	o := ConsumeOptions{AckWait: 300 * time.Millisecond, PollWait: 200 * time.Millisecond}
	cons, err := EnsureConsumer(ctx, e.js, e.topo.Samples, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := PublishSample(ctx, e.js, sample(2, 1, 1)); err != nil {
		t.Fatal(err)
	}
	// A worker takes the message and dies without acking.
	m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if meta, _ := m.Metadata(); meta.NumDelivered != 1 {
		t.Fatalf("first delivery count %d", meta.NumDelivered)
	}
	got := make(chan uint64, 4)
	runConsume(t, e, e.topo.Samples, Typed(func(ctx context.Context, s *Sample, msg jetstream.Msg) error {
		meta, _ := msg.Metadata()
		got <- meta.NumDelivered
		return nil
	}), o)
	select {
	case n := <-got:
		if n != 2 {
			t.Fatalf("redelivered with count %d, want 2", n)
		}
	case <-ctx.Done():
		t.Fatal("unacked message never came back")
	}
}

func TestPoisonGoesToDeadLetter(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	// Undecodable bytes and a decodable but invalid sample (log-prob > 0).
	if _, err := e.js.Publish(ctx, e.topo.Samples.Subject, []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	bad := sample(1, 0, 0)
	bad.V = SchemaVersion
	bad.ImageLogp[1] = 0.7
	raw, _ := json.Marshal(bad)
	if _, err := e.js.Publish(ctx, e.topo.Samples.Subject, raw); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	runConsume(t, e, e.topo.Samples, Typed(func(ctx context.Context, s *Sample, msg jetstream.Msg) error {
		calls.Add(1)
		return nil
	}), ConsumeOptions{PollWait: 200 * time.Millisecond})
	var d []DeadLetter
	waitFor(t, "two dead letters", func() bool { d = deadLetters(t, e); return len(d) == 2 })
	if calls.Load() != 0 {
		t.Fatalf("handler ran %d times on poison", calls.Load())
	}
	if !strings.Contains(d[0].Error, "decode sample") || string(d[0].Data) != "{not json" || d[0].Deliveries != 1 {
		t.Fatalf("dead letter 0 = %+v", d[0])
	}
	if !strings.Contains(d[1].Error, "image_logp") || d[1].Stream != e.topo.Samples.Stream {
		t.Fatalf("dead letter 1 = %+v", d[1])
	}
	waitFor(t, "queue drained", func() bool {
		p, a := depth(t, e, e.topo.Samples)
		return p == 0 && a == 0
	})
}

func TestWrongTypeIsPoison(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	// A task published onto the samples subject by mistake.
	tk := task(1, 0)
	if _, err := Publish(ctx, e.js, e.topo.Samples.Subject, &BatchTask{V: 1, Run: tk.Run, Step: 1, G: 4, Prompts: tk.Prompts, Sampling: tk.Sampling}); err != nil {
		t.Fatal(err)
	}
	runConsume(t, e, e.topo.Samples, Typed(func(ctx context.Context, s *Sample, msg jetstream.Msg) error {
		return nil
	}), ConsumeOptions{PollWait: 200 * time.Millisecond})
	var d []DeadLetter
	waitFor(t, "dead letter", func() bool { d = deadLetters(t, e); return len(d) == 1 })
	if !strings.Contains(d[0].Error, `"batch_task"`) || d[0].Headers[HeaderType] != TypeBatchTask {
		t.Fatalf("dead letter = %+v", d[0])
	}
}

func TestMaxDeliverDeadLetters(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	if _, err := PublishScored(ctx, e.js, ScoredSample{Sample: sample(3, 2, 1), Reward: 0.5}); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	runConsume(t, e, e.topo.Scored, Typed(func(ctx context.Context, s *ScoredSample, msg jetstream.Msg) error {
		calls.Add(1)
		return errors.New("learner cannot place sample")
	}), ConsumeOptions{MaxDeliver: 3, RetryDelay: 10 * time.Millisecond, PollWait: 200 * time.Millisecond})
	var d []DeadLetter
	waitFor(t, "dead letter", func() bool { d = deadLetters(t, e); return len(d) == 1 })
	if calls.Load() != 3 {
		t.Fatalf("handler ran %d times, want MaxDeliver=3", calls.Load())
	}
	if d[0].Deliveries != 3 || !strings.Contains(d[0].Error, "learner cannot place sample") || d[0].Subject != e.topo.Scored.Subject {
		t.Fatalf("dead letter = %+v", d[0])
	}
	var s ScoredSample
	if err := Decode(d[0].Data, &s); err != nil || s.Key() != "run1/3/2/1" {
		t.Fatalf("dead letter keeps the original message: %v %q", err, s.Key())
	}
	waitFor(t, "queue drained", func() bool {
		p, a := depth(t, e, e.topo.Scored)
		return p == 0 && a == 0
	})
}

func TestCrashOnLastDeliveryDeadLetters(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	o := ConsumeOptions{MaxDeliver: 1, AckWait: 300 * time.Millisecond, PollWait: 200 * time.Millisecond}
	cons, err := EnsureConsumer(ctx, e.js, e.topo.Samples, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := PublishSample(ctx, e.js, sample(1, 0, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	runConsume(t, e, e.topo.Samples, Typed(func(ctx context.Context, s *Sample, msg jetstream.Msg) error {
		calls.Add(1)
		return nil
	}), o)
	var d []DeadLetter
	waitFor(t, "dead letter", func() bool { d = deadLetters(t, e); return len(d) == 1 })
	if calls.Load() != 0 || d[0].Deliveries != 2 || !strings.Contains(d[0].Error, "not acked") {
		t.Fatalf("calls %d, dead letter %+v", calls.Load(), d[0])
	}
}

func TestHandlerPanicIsPoison(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	if _, err := PublishSample(ctx, e.js, sample(1, 0, 0)); err != nil {
		t.Fatal(err)
	}
	runConsume(t, e, e.topo.Samples, func(ctx context.Context, msg jetstream.Msg) error {
		panic("index out of range")
	}, ConsumeOptions{PollWait: 200 * time.Millisecond})
	var d []DeadLetter
	waitFor(t, "dead letter", func() bool { d = deadLetters(t, e); return len(d) == 1 })
	if !strings.Contains(d[0].Error, "panic: index out of range") {
		t.Fatalf("dead letter = %+v", d[0])
	}
}

func TestInProgressPreventsRedelivery(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	if _, err := PublishTask(ctx, e.js, task(1, 0)); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	done := make(chan struct{})
	// Two fetchers: a redelivery would reach the idle one while the first is still busy.
	runConsume(t, e, e.topo.Tasks, Typed(func(ctx context.Context, m *BatchTask, msg jetstream.Msg) error {
		if calls.Add(1) == 1 {
			time.Sleep(1500 * time.Millisecond) // 2.5 ack waits
			close(done)
		}
		return nil
	}), ConsumeOptions{Fetchers: 2, AckWait: 600 * time.Millisecond, InProgressEvery: 100 * time.Millisecond, PollWait: 200 * time.Millisecond})
	<-done
	waitFor(t, "queue drained", func() bool {
		p, a := depth(t, e, e.topo.Tasks)
		return p == 0 && a == 0
	})
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1 (in-progress ticks should hold the message)", n)
	}
}

func TestWithoutInProgressSlowMessageRedelivers(t *testing.T) {
	// The control for TestInProgressPreventsRedelivery: the same slow handler without ticks is
	// redelivered, so the test above measures the ticks, not a lucky schedule.
	e := newEnv(t)
	ctx := testCtx(t)
	if _, err := PublishTask(ctx, e.js, task(1, 0)); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	runConsume(t, e, e.topo.Tasks, Typed(func(ctx context.Context, m *BatchTask, msg jetstream.Msg) error {
		if calls.Add(1) == 1 {
			time.Sleep(1200 * time.Millisecond)
		}
		return nil
	}), ConsumeOptions{Fetchers: 2, AckWait: 300 * time.Millisecond, InProgressEvery: -1, PollWait: 200 * time.Millisecond})
	waitFor(t, "redelivery", func() bool { return calls.Load() >= 2 })
}

func TestFetchersShareWork(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	const n = 6
	for i := range n {
		if _, err := PublishSample(ctx, e.js, sample(1, i/4, i%4)); err != nil {
			t.Fatal(err)
		}
	}
	var active, peak, total atomic.Int32
	release := make(chan struct{})
	var mu sync.Mutex
	seen := map[string]int{}
	runConsume(t, e, e.topo.Samples, Typed(func(ctx context.Context, s *Sample, msg jetstream.Msg) error {
		a := active.Add(1)
		for {
			p := peak.Load()
			if a <= p || peak.CompareAndSwap(p, a) {
				break
			}
		}
		<-release
		active.Add(-1)
		mu.Lock()
		seen[s.Key()]++
		mu.Unlock()
		total.Add(1)
		return nil
	}), ConsumeOptions{Fetchers: 3, PollWait: 200 * time.Millisecond})
	waitFor(t, "three handlers at once", func() bool { return active.Load() == 3 })
	close(release)
	waitFor(t, "all processed", func() bool { return total.Load() == n })
	if peak.Load() != 3 {
		t.Fatalf("peak concurrency %d, want 3", peak.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != n {
		t.Fatalf("processed %d distinct samples, want %d: %v", len(seen), n, seen)
	}
}

func TestTwoProcessesShareOneConsumer(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	const n = 8
	for i := range n {
		if _, err := PublishSample(ctx, e.js, sample(1, i/4, i%4)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	byWorker := map[int]int{}
	seen := map[string]bool{}
	both := make(chan struct{})
	var bothOnce sync.Once
	h := func(w int) Handler {
		return Typed(func(ctx context.Context, s *Sample, msg jetstream.Msg) error {
			mu.Lock()
			byWorker[w]++
			seen[s.Key()] = true
			if byWorker[0] > 0 && byWorker[1] > 0 {
				bothOnce.Do(func() { close(both) })
			}
			mu.Unlock()
			// Hold the first message until the other process has one too: with one fetcher
			// each, that can only happen if the consumer hands work to both.
			select {
			case <-both:
			case <-ctx.Done():
			}
			return nil
		})
	}
	o := ConsumeOptions{PollWait: 200 * time.Millisecond}
	runConsume(t, e, e.topo.Samples, h(0), o)
	runConsume(t, e, e.topo.Samples, h(1), o)
	waitFor(t, "all processed", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == n })
	mu.Lock()
	defer mu.Unlock()
	if byWorker[0]+byWorker[1] != n || byWorker[0] == 0 || byWorker[1] == 0 {
		t.Fatalf("work split %v, want both workers used and %d total", byWorker, n)
	}
}

func TestDepthCountsPendingAndInFlight(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	for i := range 3 {
		if _, err := PublishTask(ctx, e.js, task(int64(i), 0)); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := e.js.Consumer(ctx, e.topo.Tasks.Stream, e.topo.Tasks.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// The server updates a consumer's counters asynchronously after a delivery; under load the
	// first read can still show the message as neither pending nor in flight.
	var p, a uint64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if p, a = depth(t, e, e.topo.Tasks); p == 2 && a == 1 {
			break
		}
	}
	if p != 2 || a != 1 {
		t.Fatalf("depth = pending %d, ack pending %d; want 2, 1", p, a)
	}
	if _, _, err := Depth(ctx, e.js, e.topo.Tasks.Stream, "nobody"); err == nil {
		t.Fatal("Depth of a missing consumer succeeded")
	}
}

func TestRunsAreIsolated(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	if _, err := EnsureStreams(ctx, e.js, "run2"); err != nil {
		t.Fatal(err)
	}
	// Idempotent.
	if _, err := EnsureStreams(ctx, e.js, "run1"); err != nil {
		t.Fatal(err)
	}
	s := sample(1, 0, 0)
	s.Run = "run2"
	if _, err := PublishSample(ctx, e.js, s); err != nil {
		t.Fatal(err)
	}
	if p, _ := depthWhen(t, e, e.topo.Samples, func(p, _ uint64) bool { return p == 0 }); p != 0 {
		t.Fatalf("run1 sees run2's sample (pending %d)", p)
	}
	t2, _ := NewTopology("run2")
	if p, _ := depthWhen(t, e, t2.Samples, func(p, _ uint64) bool { return p == 1 }); p != 1 {
		t.Fatalf("run2 pending %d, want 1", p)
	}
	if err := DeleteStreams(ctx, e.js, "run2"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Stream(ctx, t2.Samples.Stream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("stream after DeleteStreams: %v", err)
	}
}

func TestPolicyAnnounceLatestAndWatch(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	if _, err := LatestPolicy(ctx, e.js, "run1"); !errors.Is(err, ErrNoPolicy) {
		t.Fatalf("LatestPolicy before any announcement: %v", err)
	}
	sha := strings.Repeat("ab", 32)
	for v := int64(1); v <= 2; v++ {
		if _, err := AnnouncePolicy(ctx, e.js, PolicyAnnounce{Run: "run1", Version: v, Step: v * 10, WeightsKey: "w", SHA256: sha}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := LatestPolicy(ctx, e.js, "run1")
	if err != nil || p.Version != 2 || p.Step != 20 {
		t.Fatalf("LatestPolicy = %+v, %v; want version 2", p, err)
	}
	// A late joiner sees the current version first, then new ones.
	wctx, cancel := context.WithCancel(ctx)
	got := make(chan int64, 8)
	done := make(chan error, 1)
	go func() {
		done <- WatchPolicy(wctx, e.js, "run1", func(p PolicyAnnounce) { got <- p.Version }, nil)
	}()
	if v := <-got; v != 2 {
		t.Fatalf("watch first saw version %d, want 2", v)
	}
	if _, err := AnnouncePolicy(ctx, e.js, PolicyAnnounce{Run: "run1", Version: 3, Step: 30, WeightsKey: "w", SHA256: sha}); err != nil {
		t.Fatal(err)
	}
	if v := <-got; v != 3 {
		t.Fatalf("watch then saw version %d, want 3", v)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("WatchPolicy: %v", err)
	}
	si, err := e.js.Stream(ctx, e.topo.PolicyStream)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := si.Info(ctx)
	if info.State.Msgs != 3 {
		t.Fatalf("policy stream holds %d messages, want the 3 announcements (up to %d are kept)", info.State.Msgs, PolicyHistory)
	}
}

func TestPublishRejectsInvalid(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	s := sample(1, 0, 0)
	s.PlanLogp[0] = float32(math.NaN())
	if _, err := PublishSample(ctx, e.js, s); err == nil || !strings.Contains(err.Error(), "plan_logp") {
		t.Fatalf("PublishSample with NaN: %v", err)
	}
	sc := ScoredSample{Sample: sample(1, 0, 0), Reward: math.Inf(1)}
	if _, err := PublishScored(ctx, e.js, sc); err == nil || !strings.Contains(err.Error(), "reward") {
		t.Fatalf("PublishScored with Inf: %v", err)
	}
	big := sample(1, 0, 1)
	big.PNG = append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, DefaultMaxPayload)...)
	if _, err := PublishSample(ctx, e.js, big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("PublishSample too large: %v", err)
	}
	if p, _ := depthWhen(t, e, e.topo.Samples, func(p, _ uint64) bool { return p == 0 }); p != 0 {
		t.Fatalf("invalid samples reached the queue (%d)", p)
	}
}

func TestLargeSampleWithPNG(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	s := sample(1, 0, 0)
	s.PNG = append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 2<<20)...)
	if _, err := PublishSample(ctx, e.js, s); err != nil {
		t.Fatalf("2 MiB sample: %v", err)
	}
}

func TestEventsQueue(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	if _, err := PublishEvent(ctx, e.js, Event{Run: "run1", Kind: EventTaskDone, Worker: "rw-1", Role: "rollout", Step: 4, Count: 8}); err != nil {
		t.Fatal(err)
	}
	got := make(chan Event, 1)
	runConsume(t, e, e.topo.Events, Typed(func(ctx context.Context, ev *Event, _ jetstream.Msg) error {
		got <- *ev
		return nil
	}), ConsumeOptions{PollWait: 200 * time.Millisecond})
	ev := <-got
	if ev.Kind != EventTaskDone || ev.Worker != "rw-1" || ev.Count != 8 || ev.Time.IsZero() {
		t.Fatalf("event = %+v", ev)
	}
}

func TestDepthCollector(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	for i := range 2 {
		if _, err := PublishSample(ctx, e.js, sample(1, 0, i)); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewDepthCollector(e.js, e.topo))
	gather := func() map[string]float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				name := mf.GetName()
				for _, l := range m.GetLabel() {
					if l.GetName() == "queue" {
						name += "/" + l.GetValue()
					}
				}
				got[name] = m.GetGauge().GetValue()
			}
		}
		return got
	}
	// The consumer's pending count follows the publishes asynchronously; under load the first
	// read can still see 0.
	got := gather()
	for deadline := time.Now().Add(5 * time.Second); got["bicot_queue_pending/samples"] != 2 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		got = gather()
	}
	if len(got) != 9 { // 4 queues x 2 gauges + dead letters
		t.Fatalf("metrics %v, want 9", got)
	}
	if got["bicot_queue_pending/samples"] != 2 || got["bicot_queue_pending/tasks"] != 0 || got["bicot_queue_dead_letters"] != 0 {
		t.Fatalf("metrics %v", got)
	}
}

func TestEmbeddedMonitoringEndpoint(t *testing.T) {
	srv, err := natsd.Start(natsd.Options{StoreDir: t.TempDir(), MonitorPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	addr := srv.MonitorAddr()
	if addr == "" {
		t.Fatal("no monitoring address")
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/jsz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	c.CloseIdleConnections()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "memory") {
		t.Fatalf("/jsz: %d %s", resp.StatusCode, body)
	}
	if _, err := natsd.Start(natsd.Options{Port: 70000}); err == nil {
		t.Fatal("port 70000 accepted")
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// An idle pool polls quietly: an expired pull is "no work yet", not a failed fetch.
func TestIdleConsumerDoesNotWarn(t *testing.T) {
	e := newEnv(t)
	var logs syncBuffer
	lg := zerolog.New(&logs)
	stop := runConsume(t, e, e.topo.Tasks, func(context.Context, jetstream.Msg) error { return nil },
		ConsumeOptions{PollWait: 150 * time.Millisecond, Logger: &lg})
	time.Sleep(1200 * time.Millisecond)
	stop()
	if strings.Contains(logs.String(), "fetch failed") {
		t.Fatalf("idle consumer logged failures:\n%s", logs.String())
	}
}

// A group handed out again (attempt 1) publishes samples JetStream keeps, though the first
// attempt's copies with the same key are still in the de-duplication window; a copy of the same
// attempt is dropped.
func TestReDispatchedSamplesAreNotDeduplicated(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	s := sample(2, 7, 1)
	if ack, err := PublishSample(ctx, e.js, s); err != nil || ack.Duplicate {
		t.Fatalf("first publish: %+v %v", ack, err)
	}
	if ack, err := PublishSample(ctx, e.js, s); err != nil || !ack.Duplicate {
		t.Fatalf("same attempt again: %+v %v, want a duplicate", ack, err)
	}
	s.Attempt = 1
	if ack, err := PublishSample(ctx, e.js, s); err != nil || ack.Duplicate {
		t.Fatalf("attempt 1: %+v %v, want it kept", ack, err)
	}
	sc := ScoredSample{Sample: s, Reward: 1}
	if sc.MsgID() != s.Key()+"/a1" {
		t.Errorf("scored sample message id %q, want %q", sc.MsgID(), s.Key()+"/a1")
	}
}

// A message on the policy subject that is not a valid announcement (anyone on the bus can publish
// one) does not hide the last valid one; a periodic re-announcement and a restarted learner's
// announcement of the same version are kept, a retried publish is not.
func TestPolicyAnnouncementSurvivesGarbage(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	sha := strings.Repeat("ab", 32)
	a := PolicyAnnounce{Run: "run1", Version: 4, Step: 4, WeightsKey: "w", SHA256: sha, Learner: "learner-1"}
	if _, err := AnnouncePolicy(ctx, e.js, a); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(ctx, e.topo.PolicySubject, []byte("{not an announcement")); err != nil {
		t.Fatal(err)
	}
	p, err := LatestPolicy(ctx, e.js, "run1")
	if err != nil || p.Version != 4 || p.Learner != "learner-1" {
		t.Fatalf("LatestPolicy after garbage = %+v, %v; want version 4", p, err)
	}
	if ack, err := AnnouncePolicy(ctx, e.js, a); err != nil || !ack.Duplicate {
		t.Fatalf("retried publish: %+v %v, want a duplicate", ack, err)
	}
	a.Repeat = 1
	if ack, err := AnnouncePolicy(ctx, e.js, a); err != nil || ack.Duplicate {
		t.Fatalf("re-announcement: %+v %v, want it kept", ack, err)
	}
	b := PolicyAnnounce{Run: "run1", Version: 4, Step: 4, WeightsKey: "w", SHA256: sha, Learner: "learner-2"}
	if ack, err := AnnouncePolicy(ctx, e.js, b); err != nil || ack.Duplicate {
		t.Fatalf("a new learner's announcement of version 4: %+v %v, want it kept", ack, err)
	}
	if p, err := LatestPolicy(ctx, e.js, "run1"); err != nil || p.Learner != "learner-2" {
		t.Fatalf("LatestPolicy = %+v, %v; want learner-2's", p, err)
	}
}

// TestEnsureStreamsLooksFirst: streams as EnsureStreams defines them are found as they are, so a
// role without the right to create or update streams (a worker under natsd.Permissions) can call
// it once the coordinator has.
func TestEnsureStreamsLooksFirst(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	topo, err := EnsureStreams(ctx, e.js, "looks")
	if err != nil {
		t.Fatal(err)
	}
	names := []string{topo.DeadStream, topo.PolicyStream}
	for _, q := range topo.Queues() {
		names = append(names, q.Stream)
	}
	o := StreamOptions{}
	if err := o.defaults(); err != nil {
		t.Fatal(err)
	}
	want := map[string]jetstream.StreamConfig{}
	for _, c := range streamConfigs(topo, o) {
		want[c.Name] = c
	}
	for _, n := range names {
		s, err := e.js.Stream(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		have := s.CachedInfo().Config
		if !sameStream(have, want[n]) {
			t.Errorf("stream %s as created differs from its definition: %+v", n, have)
		}
		if have.MaxBytes <= 0 || have.MaxMsgSize <= 0 {
			t.Errorf("stream %s is unbounded: max bytes %d, max message %d", n, have.MaxBytes, have.MaxMsgSize)
		}
	}
}
