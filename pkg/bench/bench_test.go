package bench

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// simCompute is the simulated compute of the scaling benchmark: a rollout task (1 prompt x G 8)
// takes 320 ms, scoring a sample 5 ms, an update 100 ms. Real text-to-image sampling takes
// seconds per image, so these steps are shorter, and the orchestration's share larger, than in a
// real run.
var simCompute = Compute{Sample: 40 * time.Millisecond, Score: 5 * time.Millisecond, Learn: 100 * time.Millisecond}

func simOptions(tb testing.TB, workers int) SimOptions {
	root, err := RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	return SimOptions{Root: root, Out: tb.TempDir(), RolloutWorkers: workers, RewardWorkers: workers,
		PromptsPerStep: 2 * workers, GroupSize: 8, Warmup: 2, Steps: 10, Compute: simCompute}
}

// BenchmarkScaling is weak scaling: every rollout worker samples two prompts (two tasks) per step
// at 1, 4, 16 and 64 rollout and as many reward workers, so linear scaling keeps the step time
// and multiplies the samples per second by the worker count. efficiency-% is the samples per
// second against that line (the 1-worker run of the same benchmark times the workers).
func BenchmarkScaling(b *testing.B) {
	var base float64
	for _, n := range []int{1, 4, 16, 64} {
		b.Run(fmt.Sprintf("workers=%d", n), func(b *testing.B) {
			var r SimResult
			for b.Loop() {
				var err error
				if r, err = RunSimulated(context.Background(), simOptions(b, n)); err != nil {
					b.Fatal(err)
				}
			}
			if n == 1 {
				base = r.SamplesPerSecond
			}
			b.ReportMetric(r.SamplesPerSecond, "samples/s")
			b.ReportMetric(r.Wall.Seconds()/float64(r.Steps), "s/step")
			b.ReportMetric(r.CoresBusy, "cores-busy")
			b.ReportMetric(float64(r.CPUPerSample.Microseconds()), "cpu-us/sample")
			if base > 0 {
				b.ReportMetric(100*r.SamplesPerSecond/(base*float64(n)), "efficiency-%")
			}
		})
	}
}

// BenchmarkAsync compares staleness 0 (each step samples with the policy the previous step made)
// with 1 and 2 (the next steps are sampled while the learner updates) on 16 workers of each kind
// whose rollout phase (2 tasks of 320 ms each per worker) is as long as the update (640 ms): the
// ideal speed-up is then 2x. speedup is against staleness 0 in the same benchmark; learner-busy-%
// is the share of the wall time the learner spent updating (100 % when it never waits for work).
func BenchmarkAsync(b *testing.B) {
	var sync0 float64
	for _, k := range []int{0, 1, 2} {
		b.Run(fmt.Sprintf("staleness=%d", k), func(b *testing.B) {
			o := simOptions(b, 16)
			o.Compute.Learn = 2 * o.Compute.Sample * time.Duration(o.GroupSize)
			o.Staleness = k
			var r SimResult
			for b.Loop() {
				var err error
				if r, err = RunSimulated(context.Background(), o); err != nil {
					b.Fatal(err)
				}
			}
			if k == 0 {
				sync0 = r.SamplesPerSecond
			}
			b.ReportMetric(r.SamplesPerSecond, "samples/s")
			b.ReportMetric(100*r.LearnerBusy, "learner-busy-%")
			if sync0 > 0 {
				b.ReportMetric(r.SamplesPerSecond/sync0, "speedup")
			}
		})
	}
}

// BenchmarkOverhead is the orchestration's share of a laptop run's step (configs/laptop.yaml: 8
// prompts x 8 samples, real model and experts, one rollout and one reward worker) against the
// same compute called directly (RunOverhead), each run twice in the order system, direct,
// direct, system. same-rewards is 1 when all four runs computed the same rewards at every step.
func BenchmarkOverhead(b *testing.B) {
	root, err := RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	var r OverheadResult
	for b.Loop() {
		if r, err = RunOverhead(context.Background(), OverheadOptions{Root: root, Out: b.TempDir(), Warmup: 2, Steps: 6, BothOrders: true}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(r.Orchestrated.Seconds(), "s/step")
	b.ReportMetric(r.Direct.Seconds(), "direct-s/step")
	b.ReportMetric(r.OrchestratedUpdate.Seconds(), "update-s/step")
	b.ReportMetric(r.DirectUpdate.Seconds(), "direct-update-s/step")
	b.ReportMetric(r.Percent, "overhead-%")
	b.ReportMetric(boolMetric(r.SameRewards), "same-rewards")
}

func boolMetric(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// TestOverheadComparesTheSameCompute: the direct loop of the overhead benchmark computes exactly
// what the laptop run computes (the same rewards at every step, so the same samples and
// updates), which is what makes the two step times comparable.
func TestOverheadComparesTheSameCompute(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	r, err := RunOverhead(context.Background(), OverheadOptions{Root: root, Out: t.TempDir(), Warmup: 1, Steps: 1, PromptsPerStep: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !r.SameRewards || r.Steps != 1 || r.Runs != 2 || r.Orchestrated <= 0 || r.Direct <= 0 ||
		r.OrchestratedUpdate <= 0 || r.OrchestratedUpdate >= r.Orchestrated || r.DirectUpdate <= 0 || r.DirectUpdate >= r.Direct {
		t.Fatalf("overhead: %+v, want the same rewards and two step times", r)
	}
}

// TestSimulatedRun checks the harness: a short run with simulated compute learns every step and
// every sample it dispatched, at staleness 0 and 1.
func TestSimulatedRun(t *testing.T) {
	for _, k := range []int{0, 1} {
		o := simOptions(t, 2)
		o.Warmup, o.Steps, o.Staleness = 1, 3, k
		o.Compute = Compute{Sample: time.Millisecond, Score: time.Millisecond, Learn: 10 * time.Millisecond}
		r, err := RunSimulated(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		if want := o.Steps * o.PromptsPerStep * o.GroupSize; r.Samples != want || r.Steps != o.Steps {
			t.Errorf("staleness %d: %d samples in %d steps, want %d in %d", k, r.Samples, r.Steps, want, o.Steps)
		}
		if !(r.SamplesPerSecond > 0) || !(r.LearnerBusy > 0 && r.LearnerBusy <= 1) {
			t.Errorf("staleness %d: %.1f samples/s, learner busy %.2f", k, r.SamplesPerSecond, r.LearnerBusy)
		}
	}
}
