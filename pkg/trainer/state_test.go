package trainer

import (
	"bytes"
	"strings"
	"testing"
)

// Exact resume: a trainer restored from Save continues with bit-identical weights, optimizer
// state and version, whether restored into an existing trainer or loaded from scratch.
func TestSaveRestoreExact(t *testing.T) {
	cfg := tinyConfig()
	m := newPolicy(t, cfg, 8)
	favourEOS(t, m, 4)
	o := DefaultOptions()
	o.BatchSize = 8
	o.InitialVersion = 3
	a := mustTrainer(t, m, o)
	r := rollout{step: 0, version: 3, g: 4, cfg: 0, maxPlan: 4, seed: 4, promptIDs: []int{0, 1}, reward: targetReward(0)}
	if _, err := a.Step(r.groups(t, m)); err != nil {
		t.Fatal(err)
	}
	state, err := a.Save()
	if err != nil {
		t.Fatal(err)
	}
	r.step, r.version = 1, a.Version()
	next := r.groups(t, m)
	want, err := a.Step(next)
	if err != nil {
		t.Fatal(err)
	}
	wantW, _ := a.Weights()
	wantState, _ := a.Save()

	b := mustTrainer(t, newPolicy(t, cfg, 9), o) // other weights, replaced by Restore
	if err := b.Restore(state); err != nil {
		t.Fatal(err)
	}
	if b.Version() != 4 {
		t.Fatalf("restored version %d, want 4", b.Version())
	}
	got, err := b.Step(next)
	if err != nil {
		t.Fatal(err)
	}
	gotW, _ := b.Weights()
	gotState, _ := b.Save()
	if !bytes.Equal(gotW, wantW) || !bytes.Equal(gotState, wantState) || got.Loss != want.Loss || got.KL != want.KL {
		t.Fatalf("restored step differs: loss %v vs %v, kl %v vs %v, weights equal %v, state equal %v",
			got.Loss, want.Loss, got.KL, want.KL, bytes.Equal(gotW, wantW), bytes.Equal(gotState, wantState))
	}

	c, err := Load(m.Backend, state, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Step(next); err != nil {
		t.Fatal(err)
	}
	cW, _ := c.Weights()
	if !bytes.Equal(cW, wantW) || c.Version() != 5 {
		t.Fatalf("loaded trainer: weights equal %v, version %d", bytes.Equal(cW, wantW), c.Version())
	}

	bad := append([]byte{}, state...)
	bad[len(bad)-10] ^= 1
	for name, b := range map[string][]byte{"corrupt": bad, "truncated": state[:len(state)-5], "empty": nil} {
		if err := a.Restore(b); err == nil || !strings.Contains(err.Error(), "learner state") {
			t.Errorf("%s state: %v", name, err)
		}
	}
	if a.Version() != 5 {
		t.Errorf("failed restores changed the version to %d", a.Version())
	}
}
