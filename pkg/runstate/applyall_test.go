package runstate

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestApplyAllInOrderAndStepped: commands proposed together are applied in their order (batches
// take the cursor's prompts in sequence, as one Apply after another would), each gets its own
// result or rejection, and a step_done signals Stepped while the dispatches do not.
func TestApplyAllInOrderAndStepped(t *testing.T) {
	n := openNode(t, "c1", "127.0.0.1:0", t.TempDir(), true)
	defer n.Shutdown()
	waitFor(t, 10*time.Second, "single node leads", n.IsLeader)
	mustApply(t, n, NewInitRun(t0, InitRun{RunID: "r1", Seed: 1, PromptCount: 100}))
	var cmds []Command
	for i := range 8 {
		cmds = append(cmds, NewDispatchBatch(t0, DispatchBatch{BatchID: fmt.Sprintf("s0-b%d", i), Step: 0, Count: 2}))
	}
	cmds = append(cmds, NewStepDone(t0, StepDone{Step: 3})) // a future step: rejected
	res, errs := n.ApplyAll(ctxT(t, 20*time.Second), cmds)
	for i := range 8 {
		if errs[i] != nil {
			t.Fatalf("dispatch %d: %v", i, errs[i])
		}
		if g := res[i].Groups; len(g) != 2 || g[0].PromptIndex != int64(2*i) || g[1].PromptIndex != int64(2*i+1) {
			t.Fatalf("dispatch %d got groups %+v, want prompts %d and %d", i, g, 2*i, 2*i+1)
		}
	}
	if !errors.Is(errs[8], ErrRejected) {
		t.Fatalf("step_done of a future step: error %v, want ErrRejected", errs[8])
	}
	select {
	case <-n.Stepped():
		t.Fatal("Stepped signalled without a step change")
	default:
	}
	var learned []string
	for i := range 16 {
		learned = append(learned, fmt.Sprintf("0/%d", i))
	}
	mustApply(t, n, NewStepDone(t0, StepDone{Step: 0, PolicyVersion: 1, Learned: learned}))
	select {
	case <-n.Stepped():
	case <-time.After(10 * time.Second):
		t.Fatal("no Stepped signal after step 0 was done")
	}
}
