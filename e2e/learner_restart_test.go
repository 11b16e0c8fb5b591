package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/local"
	"github.com/bicot-rl/bicot/pkg/local/localtest"
)

// TestLearnerRestartLosesNothing stops the learner two steps past its newest checkpoint (it
// checkpoints every 3 steps) and starts a new one, as when a learner process dies mid-run: the
// new learner resumes from the checkpoint, the coordinator rewinds the run state to it and hands
// the lost steps out again under new attempts (JetStream does not drop them as duplicates), and
// the run finishes with every step from the checkpoint on learned exactly once by the new
// learner, P complete groups of G samples each. Before the rewind existed the run waited for
// good.
func TestLearnerRestartLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("a full pipeline run; skipped with -short")
	}
	e := sharedEnv.Get(t)
	c := localtest.Config(t, 6)
	c.CheckpointEvery = 3
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cl, err := local.Start(ctx, local.Options{Config: c, RolloutWorkers: 1, RewardWorkers: 1, Out: t.TempDir(),
		Backend: e.Backend, Ensemble: e.Ensemble, InitPolicy: e.Policy, SkipEval: true, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Stop()
	for cl.Learner.NextStep() < 5 {
		if ctx.Err() != nil {
			t.Fatal("the first learner did not reach step 5")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cl.RestartLearner(ctx); err != nil {
		t.Fatal(err)
	}
	if got := cl.Learner.NextStep(); got != 3 {
		t.Fatalf("the new learner resumed at step %d, want 3 (after the checkpoint of step 2)", got)
	}
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	if err := cl.Wait(wctx); err != nil {
		t.Fatalf("the run after the restart: %v", err)
	}
	res := cl.Result()
	a := res.Accounting
	if len(a.Learned) != 3 {
		t.Fatalf("the new learner learned steps %v, want 3, 4 and 5", keys(a.Learned))
	}
	for step := int64(3); step < 6; step++ {
		gs := a.Learned[step]
		if len(gs) != c.PromptsPerStep {
			t.Errorf("step %d: %d groups learned, want %d", step, len(gs), c.PromptsPerStep)
		}
		for _, g := range gs {
			if g.Samples != c.GroupSize {
				t.Errorf("step %d prompt %d: %d samples, want %d", step, g.PromptIndex, g.Samples, c.GroupSize)
			}
		}
	}
	if res.Steps != 6 || res.Status.Step != 6 {
		t.Errorf("run ended at learner step %d, run-state step %d; want 6 and 6", res.Steps, res.Status.Step)
	}
}

func keys[V any](m map[int64]V) []int64 {
	var out []int64
	for k := range m {
		out = append(out, k)
	}
	return out
}
