package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/bus/bustest"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/runstate"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// An apply raft accepted just before it shut down is never answered (runstate.Node.await).
		goleak.IgnoreAnyFunction("github.com/bicot-rl/bicot/pkg/runstate.(*Node).await.func1"),
	)
}

func testPrompts(t *testing.T, n int) []prompts.Prompt {
	ps, err := prompts.ReadFile(filepath.Join("..", "..", "data", "prompts", "train.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return ps[:n]
}

func TestPromptOrderIsAShuffledPermutationPerEpoch(t *testing.T) {
	cfg := config.Default()
	cfg.RunID, cfg.PromptsPerStep = "order", 4
	ps := testPrompts(t, 20)
	c, err := New(context.Background(), Deps{Prompts: ps, Node: &runstate.Node{}}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := New(context.Background(), Deps{Prompts: ps, Node: &runstate.Node{}}, cfg)
	var e0, e1 []string
	seen := map[string]bool{}
	for i := range int64(20) {
		p := c.PromptAt(0, i)
		if p.Prompt != c2.PromptAt(0, i).Prompt {
			t.Fatalf("offset %d: two coordinators disagree", i)
		}
		seen[p.Prompt] = true
		e0 = append(e0, p.Prompt)
		e1 = append(e1, c.PromptAt(1, i).Prompt)
	}
	if len(seen) != 20 {
		t.Errorf("epoch 0 covers %d of 20 prompts", len(seen))
	}
	same, inOrder := true, true
	for i := range e0 {
		same = same && e0[i] == e1[i]
		inOrder = inOrder && e0[i] == ps[i].Prompt
	}
	if same || inOrder {
		t.Errorf("epochs equal %v, file order kept %v: want a fresh shuffle per epoch", same, inOrder)
	}
}

// singleNode is a one-node raft cluster over TCP on loopback, leading, shut down with the test.
func singleNode(ctx context.Context, t *testing.T) *runstate.Node {
	t.Helper()
	node, err := runstate.Open(runstate.NodeConfig{ID: "c0", RaftAddr: "127.0.0.1:0", DataDir: filepath.Join(t.TempDir(), "raft"), Bootstrap: true}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Shutdown() })
	if _, err := node.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	return node
}

// TestRedispatchAndStepDone runs a coordinator on a single-node raft over embedded NATS with no
// workers: the step's task goes out, its groups are re-dispatched with the next attempt after the
// timeout until they are reported scored, and a step_done event finishes the run.
func TestRedispatchAndStepDone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := bustest.JetStream(t)
	node := singleNode(ctx, t)
	cfg := config.Default()
	cfg.RunID, cfg.Steps, cfg.PromptsPerStep, cfg.PromptsPerTask, cfg.GroupSize = "rd", 1, 2, 2, 4
	cfg.RedispatchAfter = config.Duration(400 * time.Millisecond)
	cfg.Wire.DispatchTick = config.Duration(50 * time.Millisecond)
	c, err := New(ctx, Deps{JS: js, Prompts: testPrompts(t, 10), Node: node, HTTPAddr: "127.0.0.1:0", Log: zerolog.Nop()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.EnsureStreams(ctx, js, cfg.RunID); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := c.Run(rctx); err != nil {
			t.Error(err)
		}
	}()

	var mu sync.Mutex
	var tasks []bus.BatchTask
	tl := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel)
	go func() {
		defer wg.Done()
		if err := bus.Consume(rctx, js, mustTopo(t, cfg.RunID).Tasks, bus.Typed(func(_ context.Context, bt *bus.BatchTask, _ jetstream.Msg) error {
			mu.Lock()
			tasks = append(tasks, *bt)
			mu.Unlock()
			return nil
		}), bus.ConsumeOptions{PollWait: 2 * time.Second, Logger: &tl}); err != nil {
			t.Error(err)
		}
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(tasks) }
	waitFor := func(what string, f func() bool) {
		t.Helper()
		for !f() {
			if ctx.Err() != nil {
				t.Fatalf("timed out waiting for %s (%d tasks)", what, count())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("the task and two re-dispatches", func() bool { return count() >= 3 })
	mu.Lock()
	first := tasks[0]
	re := tasks[1:3]
	mu.Unlock()
	if first.Attempt != 0 || len(first.Prompts) != 2 || first.Step != 0 || first.G != 4 {
		t.Errorf("first task %+v", first)
	}
	for _, r := range re {
		if r.Attempt != 1 || len(r.Prompts) != 1 {
			t.Errorf("re-dispatch: attempt %d with %d prompts, want attempt 1 with 1", r.Attempt, len(r.Prompts))
		}
	}
	rep := bus.NewReporter(js, cfg.RunID, "learner", bus.RoleLearner, zerolog.Nop())
	for _, p := range first.Prompts {
		rep.Emit(ctx, bus.EventGroupComplete, 0, 0, 4, runstate.GroupKey(0, int64(p.Index)), "")
	}
	waitFor("groups scored", func() bool { return len(node.State().GroupsByStatus(runstate.GroupScored)) == 2 })
	n := count()
	time.Sleep(600 * time.Millisecond)
	if count() != n {
		t.Errorf("scored groups were re-dispatched again (%d tasks, then %d)", n, count())
	}
	learned := []string{runstate.GroupKey(0, int64(first.Prompts[0].Index)), runstate.GroupKey(0, int64(first.Prompts[1].Index))}
	// Forged step reports: a rollout worker's, and one that claims the learner's role on the
	// rollout workers' subject. Both are dead-lettered; the run does not end.
	forged, _ := json.Marshal(bus.StepReport{Learned: learned})
	worker := bus.NewReporter(js, cfg.RunID, "rollout-9", bus.RoleRollout, zerolog.Nop())
	if err := worker.EmitJSON(ctx, bus.EventStepDone, 0, 1, bus.StepReport{Learned: learned}, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Publish(ctx, js, bus.EventSubject(cfg.RunID, bus.RoleRollout), &bus.Event{V: bus.SchemaVersion, Run: cfg.RunID,
		Kind: bus.EventStepDone, Worker: "learner", Role: bus.RoleLearner, PolicyVersion: 1, Message: string(forged)}); err != nil {
		t.Fatal(err)
	}
	topo := mustTopo(t, cfg.RunID)
	waitFor("two forged step reports dead-lettered", func() bool {
		s, err := js.Stream(ctx, topo.DeadStream)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 2
	})
	select {
	case <-c.Done():
		t.Fatal("a forged step report ended the run")
	default:
	}
	if st := c.Status(ctx); st.PolicyVersion != 0 {
		t.Fatalf("a forged step report moved the policy version to %d", st.PolicyVersion)
	}
	if err := rep.EmitJSON(ctx, bus.EventStepDone, 0, 1, bus.StepReport{Learned: learned, Metrics: map[string]float64{"loss": 0.5}}, ""); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("run not done after step_done")
	}
	st := c.Status(ctx)
	if st.PolicyVersion != 1 || st.GroupsInFlight != 0 || st.LastMetrics["loss"] != 0.5 || st.Redispatched != 2 {
		t.Errorf("status %+v", st)
	}
	if len(c.Workers()) != 1 || c.Workers()[0].Role != bus.RoleLearner {
		t.Errorf("workers %+v", c.Workers())
	}
	rcancel()
	wg.Wait()
}

func mustTopo(t *testing.T, run string) bus.Topology {
	topo, err := bus.NewTopology(run)
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

func TestPromptsOutsideTheVocabularyAreSkipped(t *testing.T) {
	ps := testPrompts(t, 5)
	ps = append(ps, prompts.Prompt{Prompt: "a photo of a zebra", TaskType: prompts.Object})
	cfg := config.Default()
	cfg.RunID, cfg.PromptsPerStep = "vocab", 2
	c, err := New(context.Background(), Deps{Prompts: ps, Node: &runstate.Node{}}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.o.Prompts) != 5 {
		t.Errorf("kept %d prompts, want the 5 encodable ones", len(c.o.Prompts))
	}
	if _, err := New(context.Background(), Deps{Prompts: ps[5:], Node: &runstate.Node{}}, cfg); err == nil {
		t.Error("a file with no encodable prompt was accepted")
	}
}

// A coordinator restarted with a prompt file of another length than the run was started with
// (the replicated prompt count) refuses to coordinate with an error naming both counts, instead
// of dispatching offsets past the end of its file (a panic in PromptAt, restarted in a loop).
func TestRestartWithAnotherPromptFileIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := bustest.JetStream(t)
	node := singleNode(ctx, t)
	cfg := config.Default()
	cfg.RunID, cfg.Steps, cfg.PromptsPerStep, cfg.PromptsPerTask, cfg.GroupSize = "short", 3, 2, 2, 4
	// The run starts with 10 prompts and dispatches its first step.
	if _, err := node.Apply(ctx, runstate.NewInitRun(time.Now(), runstate.InitRun{RunID: cfg.RunID, Seed: cfg.Seed, PromptCount: 10})); err != nil {
		t.Fatal(err)
	}
	c, err := New(ctx, Deps{JS: js, Prompts: testPrompts(t, 4), Node: node, Log: zerolog.Nop()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "10 prompts") || !strings.Contains(err.Error(), "4") {
			t.Fatalf("Run: %v, want an error naming the run's 10 prompts and the file's 4", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the coordinator kept running with a prompt file shorter than the run's")
	}
}

// The coordinator remembers at most MaxWorkers workers, forgetting the least recently seen.
func TestWorkerMapIsBounded(t *testing.T) {
	c := &Coordinator{workers: map[string]*WorkerInfo{}}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range MaxWorkers + 10 {
		c.makeRoomForWorker()
		id := fmt.Sprintf("rollout-%d", i)
		c.workers[id] = &WorkerInfo{ID: id, LastSeen: t0.Add(time.Duration(i) * time.Second)}
	}
	if len(c.workers) != MaxWorkers {
		t.Fatalf("%d workers remembered, want %d", len(c.workers), MaxWorkers)
	}
	if c.workers["rollout-9"] != nil || c.workers["rollout-10"] == nil {
		t.Error("not the least recently seen workers were forgotten")
	}
}
