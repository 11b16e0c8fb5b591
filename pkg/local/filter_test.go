package local

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/rewardworker"
	"github.com/bicot-rl/bicot/pkg/trainer"
)

// tieScorer gives every image of the listed prompts the same reward (so their groups tie) and
// scores the rest with the real ensemble. It holds back the scores of the prompts in holds until
// their channel is closed.
type tieScorer struct {
	inner rewardworker.Scorer
	mu    sync.Mutex
	tie   map[string]bool
	holds map[string]chan struct{}
}

// holdBack holds the scores of prompt back until release is called (once or more).
func (s *tieScorer) holdBack(prompt string) (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	if s.holds == nil {
		s.holds = map[string]chan struct{}{}
	}
	s.holds[prompt] = ch
	s.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

func (s *tieScorer) set(prompts []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tie = map[string]bool{}
	for _, p := range prompts {
		s.tie[p] = true
	}
}

func (s *tieScorer) Score(ctx context.Context, items []reward.Item) ([]reward.Scores, error) {
	for _, it := range items {
		s.mu.Lock()
		release := s.holds[it.Prompt.Prompt]
		s.mu.Unlock()
		if release != nil {
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	out, err := s.inner.Score(ctx, items)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, it := range items {
		if s.tie[it.Prompt.Prompt] {
			out[i] = reward.Scores{Total: 0.5, PerExpert: map[string]float64{"tie": 0.5}}
		}
	}
	return out, nil
}

// runTied runs c (DAPO filtering on, exact ties only, max_resample_rounds rounds) with a reward
// that ties the prompts tie names once the cluster is up, and returns how the run ended.
func runTied(t *testing.T, c config.Config, rounds int, tie func(*Cluster) []string) (Result, error) {
	return runTiedWith(t, c, rounds, tie, nil)
}

// runTiedWith is runTied with during, when not nil, called with the running cluster and its
// scorer before the run is waited for.
func runTiedWith(t *testing.T, c config.Config, rounds int, tie func(*Cluster) []string,
	during func(context.Context, *Cluster, *tieScorer)) (Result, error) {
	t.Helper()
	e := testEnv(t)
	c.GRPO.FilterZeroStd = true
	c.GRPO.MinSpread = 0 // exact ties only: the experts' scores never tie by chance
	c.MaxResampleRounds = rounds
	ts := &tieScorer{inner: e.ens}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cl, err := Start(ctx, Options{Config: c, RolloutWorkers: 1, RewardWorkers: 1, Out: t.TempDir(),
		Backend: e.backend, Ensemble: ts, InitPolicy: e.policy, SkipEval: true, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ts.set(tie(cl))
	if during != nil {
		during(ctx, cl, ts)
	}
	werr := cl.Wait(ctx)
	res := cl.Result()
	cl.Stop()
	return res, werr
}

// TestAllTiedStepIsResampled uses DAPO filtering (grpo.filter_zero_std) with a reward that ties
// every group of step 1's prompts: the learner makes no update for them (trainer.ErrAllFiltered),
// counts the round, and the coordinator dispatches the next prompts of the cursor for the same
// step, which train. The run completes with every step learned once and nothing left in flight.
// With max_resample_rounds 0 the same run stops with an error naming the step.
func TestAllTiedStepIsResampled(t *testing.T) {
	if testing.Short() {
		t.Skip("two pipeline runs; skipped with -short")
	}
	for _, rounds := range []int{8, 0} {
		c := testConfig(t, 2)
		c.RunID = "tied" + string(rune('0'+rounds))
		res, werr := runTied(t, c, rounds, func(cl *Cluster) (tied []string) {
			for i := range c.PromptsPerStep {
				tied = append(tied, cl.Coordinator.PromptAt(0, int64(c.PromptsPerStep+i)).Prompt)
			}
			return tied
		})
		if rounds == 0 {
			if werr == nil || !errors.Is(werr, trainer.ErrAllFiltered) || !strings.Contains(werr.Error(), "step 1") {
				t.Errorf("max_resample_rounds 0: run ended with %v, want ErrAllFiltered naming step 1", werr)
			}
			continue
		}
		if werr != nil {
			t.Fatal(werr)
		}
		checkLearned(t, c, res.Accounting)
		if n := res.Accounting.Resampled[1]; n != 1 {
			t.Errorf("step 1 re-sampled %d times, want 1", n)
		}
		for _, g := range res.Accounting.Learned[1] {
			if g.PromptIndex < 2*c.PromptsPerStep {
				t.Errorf("step 1 trained prompt %d of the tied round", g.PromptIndex)
			}
		}
		if !res.Status.Done || res.Status.GroupsInFlight != 0 || res.Status.PolicyVersion != int64(c.Steps) {
			t.Errorf("status at the end: done %v, %d groups in flight, version %d", res.Status.Done, res.Status.GroupsInFlight, res.Status.PolicyVersion)
		}
		if res.Status.Cursor.Offset != int64(3*c.PromptsPerStep) {
			t.Errorf("cursor at %d, want %d (two steps and one re-sampled round)", res.Status.Cursor.Offset, 3*c.PromptsPerStep)
		}
	}
}

// TestPartlyTiedStepIsToppedUp is DAPO's dynamic sampling: one of step 1's P groups ties, so the
// learner makes no update with the other two; it keeps them, asks for one fresh prompt (the next
// of the cursor) and trains step 1 on P informative groups. With max_resample_rounds 0 it asks
// for nothing and trains the two informative groups.
func TestPartlyTiedStepIsToppedUp(t *testing.T) {
	if testing.Short() {
		t.Skip("two pipeline runs; skipped with -short")
	}
	for _, rounds := range []int{8, 0} {
		c := testConfig(t, 3)
		c.RunID = "topup" + string(rune('0'+rounds))
		P := c.PromptsPerStep
		res, werr := runTied(t, c, rounds, func(cl *Cluster) []string {
			return []string{cl.Coordinator.PromptAt(0, int64(P)).Prompt}
		})
		if werr != nil {
			t.Fatalf("max_resample_rounds %d: %v", rounds, werr)
		}
		var got []int
		for _, g := range res.Accounting.Learned[1] {
			got = append(got, g.PromptIndex)
		}
		slices.Sort(got)
		want, cursor, resampled := []int{P + 1, P + 2, 2 * P}, 3*P+1, 1
		if rounds == 0 {
			want, cursor, resampled = []int{P + 1, P + 2}, 3*P, 0
		} else {
			checkLearned(t, c, res.Accounting)
		}
		if !slices.Equal(got, want) {
			t.Errorf("max_resample_rounds %d: step 1 learned prompts %v, want %v", rounds, got, want)
		}
		if n := res.Accounting.Resampled[1]; n != resampled {
			t.Errorf("max_resample_rounds %d: step 1 asked for fresh prompts %d times, want %d", rounds, n, resampled)
		}
		if res.Status.Cursor.Offset != int64(cursor) {
			t.Errorf("max_resample_rounds %d: cursor at %d, want %d", rounds, res.Status.Cursor.Offset, cursor)
		}
		if !res.Status.Done || res.Status.GroupsInFlight != 0 || res.Status.PolicyVersion != int64(c.Steps) {
			t.Errorf("status at the end: done %v, %d groups in flight, version %d", res.Status.Done, res.Status.GroupsInFlight, res.Status.PolicyVersion)
		}
	}
}

// TestLearnerRestartMidTopUp kills the learner in the middle of a top-up round: step 1 has asked
// for one fresh prompt, whose scores are held back, when the learner dies. The new learner
// resumes from the checkpoint of step 0, finds the same tied group in step 1's replay, asks for
// the same fresh prompt again, and the run ends as if nothing had happened: step 1 trains the
// same P groups, the cursor stands where it would, every step is learned once. The old round's
// samples reach the new learner while the replayed tied group is still held back: taking them
// would give it P informative groups without asking (the rewound run's cursor would then hand
// the same prompt to step 2), so it drops them as superseded.
func TestLearnerRestartMidTopUp(t *testing.T) {
	if testing.Short() {
		t.Skip("a pipeline run with a learner restart; skipped with -short")
	}
	c := testConfig(t, 3)
	c.RunID = "topup-restart"
	c.CheckpointEvery = 1
	P := c.PromptsPerStep
	// The last of step 1's prompts ties: it is a task of its own (P 3, two prompts a task).
	tied := P + 2
	res, werr := runTiedWith(t, c, 8, func(cl *Cluster) []string {
		return []string{cl.Coordinator.PromptAt(0, int64(tied)).Prompt}
	}, func(ctx context.Context, cl *Cluster, ts *tieScorer) {
		releaseTopUp := ts.holdBack(cl.Coordinator.PromptAt(0, int64(2*P)).Prompt)
		defer releaseTopUp()
		for cl.Learner.Accounting().Resampled[1] == 0 {
			if ctx.Err() != nil {
				t.Fatal("step 1 never asked for a fresh prompt")
			}
			time.Sleep(20 * time.Millisecond)
		}
		// The tied group was scored before the restart; its replay is held back from here on.
		releaseTied := ts.holdBack(cl.Coordinator.PromptAt(0, int64(tied)).Prompt)
		defer releaseTied()
		if err := cl.RestartLearner(ctx); err != nil {
			t.Fatal(err)
		}
		if got := cl.Learner.NextStep(); got != 1 {
			t.Errorf("the new learner resumed at step %d, want 1", got)
		}
		releaseTopUp()
		// Step 1's two informative groups are replayed and the old round's group arrives: a
		// learner that took it would have P informative groups and train without asking.
		old, first, second := bus.GroupKey{Step: 1, PromptIndex: 2 * P}, bus.GroupKey{Step: 1, PromptIndex: P}, bus.GroupKey{Step: 1, PromptIndex: P + 1}
		for {
			a := cl.Learner.Accounting()
			if a.Superseded+a.Received[old] >= c.GroupSize && a.Received[first] >= c.GroupSize && a.Received[second] >= c.GroupSize {
				break
			}
			if ctx.Err() != nil {
				t.Fatal("the replayed groups or the old top-up round's samples never reached the new learner")
			}
			time.Sleep(20 * time.Millisecond)
		}
		releaseTied()
	})
	if werr != nil {
		t.Fatal(werr)
	}
	a := res.Accounting
	var got []int
	for _, g := range a.Learned[1] {
		got = append(got, g.PromptIndex)
	}
	slices.Sort(got)
	if want := []int{P, P + 1, 2 * P}; !slices.Equal(got, want) {
		t.Errorf("step 1 learned prompts %v, want %v", got, want)
	}
	if n := a.Resampled[1]; n != 1 {
		t.Errorf("the new learner asked for fresh prompts for step 1 %d times, want 1", n)
	}
	if a.Superseded < c.GroupSize {
		t.Errorf("the new learner dropped %d samples of the old round as superseded, want at least %d", a.Superseded, c.GroupSize)
	}
	if len(a.Learned) != 2 || len(a.Learned[2]) != P {
		t.Errorf("the new learner learned steps %v, want 1 and 2 with %d groups each", keys(a.Learned), P)
	}
	if res.Status.Cursor.Offset != int64(3*P+1) {
		t.Errorf("cursor at %d, want %d", res.Status.Cursor.Offset, 3*P+1)
	}
	if !res.Status.Done || res.Status.GroupsInFlight != 0 || res.Status.PolicyVersion != int64(c.Steps) {
		t.Errorf("status at the end: done %v, %d groups in flight, version %d", res.Status.Done, res.Status.GroupsInFlight, res.Status.PolicyVersion)
	}
}

func keys[V any](m map[int64]V) []int64 {
	out := slices.Collect(maps.Keys(m))
	slices.Sort(out)
	return out
}
