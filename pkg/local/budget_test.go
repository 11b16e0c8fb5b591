package local

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/ckpt"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/coordinator"
	"github.com/bicot-rl/bicot/pkg/trainer"
)

// TestTimeBudgetEndsTheRun gives a run of 100 steps a time budget a few steps long (each update
// held 300 ms): the learner ends the run with the last step whose successor, as long as it, would
// pass the budget; the coordinator sees the run done; the final announcement ends the workers'
// RunEnded; every checkpoint records the run's clock; and a learner started again on the ended
// run trains nothing.
func TestTimeBudgetEndsTheRun(t *testing.T) {
	if testing.Short() {
		t.Skip("a full pipeline run; skipped with -short")
	}
	e := testEnv(t)
	c := testConfig(t, 100)
	c.CheckpointEvery = 1
	budget := 2500 * time.Millisecond
	c.TimeBudget = config.Duration(budget)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	slow := func(tr *trainer.Trainer, gs []trainer.Group) (trainer.StepStats, error) {
		time.Sleep(300 * time.Millisecond)
		return tr.Step(gs)
	}
	cl, err := Start(ctx, Options{Config: c, RolloutWorkers: 1, RewardWorkers: 1, Out: t.TempDir(),
		Backend: e.backend, Ensemble: e.ens, InitPolicy: e.policy, SkipEval: true, Update: slow, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	wait(t, cl)
	res := cl.Result()
	if res.Steps < 1 || res.Steps > int64(budget/(300*time.Millisecond)) {
		t.Fatalf("the run learned %d steps of at least 300 ms in a %v budget", res.Steps, budget)
	}
	if !res.Status.Done || !res.Status.Ended || res.Status.PolicyVersion != res.Steps || res.Status.GroupsInFlight != 0 {
		t.Errorf("status at the end: done %v, ended %v, version %d (want %d), %d groups in flight", res.Status.Done, res.Status.Ended,
			res.Status.PolicyVersion, res.Steps, res.Status.GroupsInFlight)
	}
	t.Logf("%d steps in a %v budget", res.Steps, budget)
	c.Steps = int(res.Steps)
	checkLearned(t, c, res.Accounting)

	ms, err := ckpt.List(ctx, cl.st, c.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(ms)) != res.Steps {
		t.Fatalf("%d checkpoints for %d steps", len(ms), res.Steps)
	}
	prev := 0.0
	for i, m := range ms {
		b, err := ckpt.Load(ctx, cl.st, m, ckpt.PartProgress)
		if err != nil {
			t.Fatal(err)
		}
		var p ckpt.Progress
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatal(err)
		}
		last := i == len(ms)-1
		over := p.ElapsedSeconds+p.LastStepSeconds > budget.Seconds()
		if p.Final != last || over != last || p.ElapsedSeconds <= prev || p.LastStepSeconds < 0.3 {
			t.Errorf("step %d of %d: clock %+v after %.3f s", m.Step, len(ms), p, prev)
		}
		prev = p.ElapsedSeconds
	}

	if r, err := coordinator.LoadResume(ctx, cl.st, c.RunID, zerolog.Nop()); err != nil || !r.State.Ended || r.State.Step != res.Steps {
		t.Errorf("coordinator resume of the ended run: ended %v at step %d, %v", r.State.Ended, r.State.Step, err)
	}

	js, err := cl.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	ended, stop := bus.RunEnded(ctx, js, c.RunID, 100, zerolog.Nop())
	defer stop()
	select {
	case <-ended.Done():
	case <-time.After(30 * time.Second):
		t.Error("the final announcement did not end RunEnded")
	}
	if ctx.Err() != nil {
		t.Fatal(ctx.Err())
	}

	// A learner started again on the ended run (as after a crash right after the last step)
	// resumes from the final checkpoint and returns without training.
	if err := cl.RestartLearner(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cl.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got := cl.Learner.NextStep(); got != res.Steps {
		t.Errorf("a learner started on the ended run is at step %d, want %d", got, res.Steps)
	}
	if n := len(cl.Learner.Accounting().Learned); n != 0 {
		t.Errorf("a learner started on the ended run learned %d steps", n)
	}
}
