package coordinator

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/bus/bustest"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/runstate"
)

// A task recorded in the run state whose publish fails - the NATS server restarting, JetStream
// not having the stream back yet - goes out as soon as the bus takes it again, not a re-dispatch
// timeout (10 minutes by default) later. Before, the tick skipped a batch already recorded, and
// its groups waited for the re-dispatch: a 5-second NATS outage stalled a chaos run for a minute.
func TestTaskPublishedOnceTheBusIsBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := bustest.JetStream(t)
	node := singleNode(ctx, t)
	cfg := config.Default()
	cfg.RunID, cfg.Steps, cfg.PromptsPerStep, cfg.PromptsPerTask, cfg.GroupSize = "pubfail", 2, 2, 2, 4
	cfg.RedispatchAfter = config.Duration(10 * time.Minute)
	cfg.Wire.DispatchTick = config.Duration(50 * time.Millisecond)
	c, err := New(ctx, Deps{JS: js, Prompts: testPrompts(t, 10), Node: node, Log: zerolog.Nop()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	topo := mustTopo(t, cfg.RunID)
	if _, err := bus.EnsureStreams(ctx, js, cfg.RunID); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := c.Run(rctx); err != nil {
			t.Error(err)
		}
	}()
	defer func() {
		rcancel()
		wg.Wait()
	}()
	// tasksOf reads the task queue: the steps of the tasks it holds.
	tasksOf := func() []int64 {
		s, err := js.Stream(ctx, topo.Tasks.Stream)
		if err != nil {
			return nil
		}
		var steps []int64
		for seq := uint64(1); ; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if err != nil {
				return steps
			}
			var bt bus.BatchTask
			if bus.Decode(m.Data, &bt) == nil {
				steps = append(steps, bt.Step)
			}
		}
	}
	waitFor := func(what string, limit time.Duration, f func() bool) {
		t.Helper()
		deadline := time.Now().Add(limit)
		for !f() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v (tasks queued for steps %v, run state at step %d)", what, limit, tasksOf(), node.State().Step)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("step 0's task", 10*time.Second, func() bool { return len(tasksOf()) == 1 })

	// The task queue goes away; step 0 is learned, so step 1 is recorded and its publish fails.
	if err := js.DeleteStream(ctx, topo.Tasks.Stream); err != nil {
		t.Fatal(err)
	}
	var learned []string
	for _, g := range node.State().Groups {
		learned = append(learned, g.Key())
	}
	rep := bus.NewReporter(js, cfg.RunID, "learner", bus.RoleLearner, zerolog.Nop())
	if err := rep.EmitJSON(ctx, bus.EventStepDone, 0, 1, bus.StepReport{Learned: learned}, ""); err != nil {
		t.Fatal(err)
	}
	waitFor("step 1 recorded", 10*time.Second, func() bool {
		_, ok := node.State().Batches[batchID(1, 0)]
		return ok
	})
	// Long enough for the client's own retries of a publish nobody answers (2 x 250 ms) to give up.
	time.Sleep(2 * time.Second)
	if _, err := bus.EnsureStreams(ctx, js, cfg.RunID); err != nil {
		t.Fatal(err)
	}
	waitFor("step 1's task once the queue is back", 5*time.Second, func() bool {
		steps := tasksOf()
		return len(steps) == 1 && steps[0] == 1
	})
	if g := node.State().GroupsByStatus(runstate.GroupDispatched); len(g) != 2 || g[0].Attempts != 1 {
		t.Errorf("groups in flight %+v, want step 1's two, first attempt", g)
	}
}
