package grpo

import (
	"math"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/config"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func TestAdvantagesByHand(t *testing.T) {
	res, err := ComputeAdvantages([][]float64{
		{1, 2, 3},    // mean 2, unbiased std 1
		{0, 0, 1, 1}, // mean 0.5, unbiased std sqrt(1/3)
		{0.3, 0.3, 0.3},
	}, AdvantageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s3 := math.Sqrt(1.0 / 3)
	want := [][]float64{
		{-1 / 1.0001, 0, 1 / 1.0001},
		{-0.5 / (s3 + 1e-4), -0.5 / (s3 + 1e-4), 0.5 / (s3 + 1e-4), 0.5 / (s3 + 1e-4)},
		{0, 0, 0},
	}
	for g := range want {
		for i := range want[g] {
			if !near(res.PerGroup[g][i], want[g][i], 1e-12) {
				t.Errorf("group %d sample %d: A = %.15g, want %.15g", g, i, res.PerGroup[g][i], want[g][i])
			}
		}
	}
	// Tied groups are exactly zero, not rounding noise.
	for _, a := range res.PerGroup[2] {
		if a != 0 {
			t.Errorf("tied group advantage %g, want exactly 0", a)
		}
	}
	st := res.Stats
	if st.Groups != 3 || st.ZeroStd != 1 || !near(st.ZeroStdRatio, 1.0/3, 1e-15) || st.Dropped != 0 {
		t.Errorf("stats = %+v", st)
	}
	if len(res.Kept) != 3 || res.Kept[2] != 2 {
		t.Errorf("kept = %v", res.Kept)
	}
	// Rewards 1,2,3,0,0,1,1,.3,.3,.3: sum 8.9, mean 0.89.
	if !near(st.RewardMean, 0.89, 1e-12) {
		t.Errorf("reward mean %g", st.RewardMean)
	}
	if f := res.Flat(); len(f) != 10 || f[2] != float32(1/1.0001) {
		t.Errorf("flat = %v", f)
	}
}

func TestAdvantagesShiftAndScaleInvariant(t *testing.T) {
	a, _ := ComputeAdvantages([][]float64{{0.1, 0.7, 0.4, 0.9}}, AdvantageOptions{StdEps: 1e-12})
	b, _ := ComputeAdvantages([][]float64{{10.2, 11.4, 10.8, 11.8}}, AdvantageOptions{StdEps: 1e-12})
	for i := range a.PerGroup[0] {
		if !near(a.PerGroup[0][i], b.PerGroup[0][i], 1e-9) {
			t.Fatalf("advantages differ under r -> 2r+10: %v vs %v", a.PerGroup[0], b.PerGroup[0])
		}
	}
	var sum float64
	for _, x := range a.PerGroup[0] {
		sum += x
	}
	if !near(sum, 0, 1e-12) {
		t.Fatalf("advantages sum to %g, want 0", sum)
	}
}

func TestAdvantagesFilterZeroStd(t *testing.T) {
	res, err := ComputeAdvantages([][]float64{{1, 1, 1}, {0, 1, 0}, {0, 0, 0}, {5}}, AdvantageOptions{FilterZeroStd: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.PerGroup) != 1 || len(res.Kept) != 1 || res.Kept[0] != 1 {
		t.Fatalf("kept %v (%d groups), want only group 1", res.Kept, len(res.PerGroup))
	}
	if res.Stats.ZeroStd != 3 || res.Stats.Dropped != 3 || res.Stats.ZeroStdRatio != 0.75 {
		t.Fatalf("stats = %+v", res.Stats)
	}
	// Group {0,1,0}: mean 1/3, unbiased std sqrt(1/3).
	s := math.Sqrt(1.0/3) + 1e-4
	if !near(res.PerGroup[0][1], (2.0/3)/s, 1e-12) {
		t.Fatalf("A = %v", res.PerGroup[0])
	}
}

func TestAdvantagesRejectBadRewards(t *testing.T) {
	for _, bad := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		_, err := ComputeAdvantages([][]float64{{1, 2}, {0, 1, bad}}, AdvantageOptions{})
		if err == nil || !strings.Contains(err.Error(), "group 1 sample 2") {
			t.Errorf("reward %v: error %v, want it to name group 1 sample 2", bad, err)
		}
	}
	if _, err := ComputeAdvantages(nil, AdvantageOptions{}); err == nil {
		t.Error("no groups accepted")
	}
	if _, err := ComputeAdvantages([][]float64{{1}, {}}, AdvantageOptions{}); err == nil || !strings.Contains(err.Error(), "group 1") {
		t.Errorf("empty group: %v", err)
	}
	if _, err := ComputeAdvantages([][]float64{{1, 2}}, AdvantageOptions{StdEps: -1}); err == nil {
		t.Error("negative eps accepted")
	}
}

func TestAdvantagesMinSpreadAndScale(t *testing.T) {
	groups := [][]float64{{0.50, 0.51, 0.50, 0.52}, {0, 1, 0, 1}}
	a, err := ComputeAdvantages(groups, AdvantageOptions{MinSpread: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	if a.Stats.ZeroStd != 1 || a.PerGroup[0][3] != 0 || a.PerGroup[1][1] <= 0.8 {
		t.Fatalf("min spread: zero std %d, advantages %v", a.Stats.ZeroStd, a.PerGroup)
	}
	// Without the spread threshold the noise group gets unit-size advantages.
	a, err = ComputeAdvantages(groups, AdvantageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Stats.ZeroStd != 0 || math.Abs(a.PerGroup[0][3]) < 0.8 {
		t.Fatalf("no threshold: zero std %d, advantages %v", a.Stats.ZeroStd, a.PerGroup)
	}
	a, err = ComputeAdvantages(groups, AdvantageOptions{Scale: config.AdvScaleNone, FilterZeroStd: true, MinSpread: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{-0.5, 0.5, -0.5, 0.5}
	if len(a.Kept) != 1 || a.Kept[0] != 1 {
		t.Fatalf("kept %v, want [1]", a.Kept)
	}
	for i, x := range a.PerGroup[0] {
		if math.Abs(x-want[i]) > 1e-12 {
			t.Fatalf("scale none: advantages %v, want %v", a.PerGroup[0], want)
		}
	}
	for _, bad := range []AdvantageOptions{{MinSpread: -1}, {MinSpread: math.NaN()}, {Scale: "max"}} {
		if _, err := ComputeAdvantages(groups, bad); err == nil {
			t.Errorf("options %+v accepted", bad)
		}
	}
}
