package trainer

import (
	"bytes"
	"errors"
	"testing"
)

// TestStepSimulated: a simulated step checks and scores the groups like Step, runs the given
// compute once, advances the version and leaves the weights as they were; tied groups and stale
// samples are refused as by Step.
func TestStepSimulated(t *testing.T) {
	m := newPolicy(t, tinyConfig(), 1)
	o := DefaultOptions()
	o.FilterZeroStd = true
	tr := mustTrainer(t, m, o)
	before, err := tr.Weights()
	if err != nil {
		t.Fatal(err)
	}
	gs := rollout{g: 8, maxPlan: 4, seed: 5, promptIDs: []int{0, 1}, reward: targetReward(1)}.groups(t, m)
	calls := 0
	st, err := tr.StepSimulated(gs, func() { calls++ })
	if err != nil {
		t.Fatal(err)
	}
	after, err := tr.Weights()
	if err != nil {
		t.Fatal(err)
	}
	// The batch is laid out (its statistics count the kept groups' samples) as for a real update.
	if calls != 1 || tr.Version() != 1 || st.PolicyVersion != 1 || st.Groups != 2 || st.GroupsUsed < 1 || st.Samples != 8*st.GroupsUsed || !bytes.Equal(before, after) {
		t.Fatalf("simulated step: %d compute calls, version %d (stats %d), %d groups (%d kept), %d samples, weights changed %v",
			calls, tr.Version(), st.PolicyVersion, st.Groups, st.GroupsUsed, st.Samples, !bytes.Equal(before, after))
	}
	tied := rollout{version: 1, step: 1, g: 8, maxPlan: 4, seed: 5, promptIDs: []int{0}}.groups(t, m)
	if _, err := tr.StepSimulated(tied, func() { calls++ }); !errors.Is(err, ErrAllFiltered) || calls != 1 || tr.Version() != 1 {
		t.Fatalf("tied groups: error %v, %d compute calls, version %d; want ErrAllFiltered, 1, 1", err, calls, tr.Version())
	}
	tr.opts.MaxStaleness = 0
	tr.version = 3
	var stale *StaleError
	if _, err := tr.StepSimulated(gs, func() { calls++ }); !errors.As(err, &stale) || calls != 1 {
		t.Fatalf("stale samples: error %v, %d compute calls; want a *StaleError and no compute", err, calls)
	}
}
