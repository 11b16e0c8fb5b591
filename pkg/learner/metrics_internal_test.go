package learner

import (
	"context"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/runfiles"
	"github.com/bicot-rl/bicot/pkg/store/local"
)

// The metrics are appended segment by segment: a step writes at most its segment (never the
// whole history), every step's line is read back in order, and a learner resuming from a
// checkpoint drops the lines of later steps (and their segments) and goes on appending.
func TestMetricsSegments(t *testing.T) {
	ctx := context.Background()
	st, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.RunID = "seg"
	l := &Learner{o: Deps{Store: st}, cfg: cfg}
	n := int64(2*runfiles.MetricsSegmentSteps + 30)
	var largest int64
	for step := range n {
		if err := l.appendMetrics(ctx, StepRecord{Step: step, PolicyVersion: step + 1}); err != nil {
			t.Fatal(err)
		}
		info, err := st.Stat(ctx, runfiles.MetricsSegmentKey("seg", step))
		if err != nil {
			t.Fatal(err)
		}
		largest = max(largest, info.Size)
	}
	recs, err := runfiles.ReadMetrics(ctx, st, "seg")
	if err != nil || int64(len(recs)) != n {
		t.Fatalf("%d records read back (%v), want %d", len(recs), err, n)
	}
	for i, r := range recs {
		if runfiles.MetricsStep(r) != int64(i) {
			t.Fatalf("record %d is of step %d", i, runfiles.MetricsStep(r))
		}
	}
	line := int64(len(recs[0])) + 1
	if largest > (runfiles.MetricsSegmentSteps+1)*(line+4) {
		t.Errorf("a step wrote %d bytes of metrics, more than a segment of %d lines", largest, runfiles.MetricsSegmentSteps)
	}

	// A learner resuming from the checkpoint of step 150: steps 151.. are learned again.
	l2 := &Learner{o: Deps{Store: st}, cfg: cfg}
	if err := l2.resumeMetrics(ctx, 150); err != nil {
		t.Fatal(err)
	}
	recs, _ = runfiles.ReadMetrics(ctx, st, "seg")
	if len(recs) != 151 || runfiles.MetricsStep(recs[150]) != 150 {
		t.Fatalf("after resuming at 150: %d records, last of step %d", len(recs), runfiles.MetricsStep(recs[len(recs)-1]))
	}
	if _, err := st.Stat(ctx, runfiles.MetricsSegmentKey("seg", 200)); err == nil {
		t.Error("the segment of steps 200.. is still there")
	}
	for step := int64(151); step < 160; step++ {
		if err := l2.appendMetrics(ctx, StepRecord{Step: step}); err != nil {
			t.Fatal(err)
		}
	}
	recs, _ = runfiles.ReadMetrics(ctx, st, "seg")
	if len(recs) != 160 || runfiles.MetricsStep(recs[159]) != 159 {
		t.Fatalf("after appending to the resumed segment: %d records", len(recs))
	}
	// Starting over (no checkpoint) drops everything.
	if err := (&Learner{o: Deps{Store: st}, cfg: cfg}).resumeMetrics(ctx, -1); err != nil {
		t.Fatal(err)
	}
	if recs, err := runfiles.ReadMetrics(ctx, st, "seg"); err == nil && len(recs) > 0 {
		t.Fatalf("%d records after starting over", len(recs))
	} else if err != nil && !strings.Contains(err.Error(), "not found") {
		t.Fatal(err)
	}

	// A run of an earlier version (one metrics.jsonl) resumed at step 3 keeps steps 0-3 of it.
	old := "{\"step\":0}\n{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n{\"step\":4}\n{\"step\":5}\n"
	if err := st.Put(ctx, runfiles.LegacyMetricsKey("seg"), strings.NewReader(old), int64(len(old))); err != nil {
		t.Fatal(err)
	}
	if err := (&Learner{o: Deps{Store: st}, cfg: cfg}).resumeMetrics(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if recs, err := runfiles.ReadMetrics(ctx, st, "seg"); err != nil || len(recs) != 4 || runfiles.MetricsStep(recs[3]) != 3 {
		t.Fatalf("legacy metrics after resuming at 3: %d records, %v", len(recs), err)
	}
}
