package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/evaluate"
	"github.com/bicot-rl/bicot/pkg/experiment"
	"github.com/bicot-rl/bicot/pkg/trainer"
)

func TestResultsTable(t *testing.T) {
	dir := t.TempDir()
	res := func(mean float64) evaluate.Result {
		return evaluate.Result{Mean: mean, TaskTypes: map[string]float64{"color": mean, "spatial": mean / 2}, N: 8, Prompts: 2,
			Checks: map[string]float64{"extra_per_image": 0.25}}
	}
	base, err := json.Marshal(res(0.5))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "base.json"), base, 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, line := range []map[string]any{
		{"kind": "config", "config": map[string]any{"sampling": map[string]any{"max_plan_tokens": 24}}},
		{"kind": "eval", "point": experiment.Point{Step: 0, Eval: res(0.5)}},
		{"kind": "step", "step": experiment.Step{Step: 1, TrainSeconds: 60, Stats: trainer.StepStats{RewardMean: 1, PerExpert: map[string]float64{"oracle": 0.4}}}},
		{"kind": "step", "step": experiment.Step{Step: 2, TrainSeconds: 120, Stats: trainer.StepStats{RewardMean: 2, PerExpert: map[string]float64{"oracle": 0.6}}}},
		{"kind": "eval", "point": experiment.Point{Step: 2, TrainSeconds: 120, Eval: res(0.55)}},
	} {
		if err := enc.Encode(line); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "run-a.jsonl"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := printResults(&out, dir); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"| run-a | 2 | 2.0 | 0.550 | +0.050 |", "1.000→2.000", "0.400→0.600", "Learning curves", "| run-a | 2 | 2.0 | 0.550 | 0.550 | 0.275 |"} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, s)
		}
	}
	if err := printResults(&out, t.TempDir()); err == nil {
		t.Error("an empty directory gave a table")
	}
}

// compare pairs the two evaluations prompt by prompt: the change and its interval come from the
// per-prompt differences, and evaluations of different prompts or seeds are refused.
func TestCompare(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, r evalResult) string {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	res := func(scores []float64) evalResult {
		var sum float64
		for _, s := range scores {
			sum += s
		}
		m := sum / float64(len(scores))
		return evalResult{Result: evaluate.Result{Mean: m, TaskTypes: map[string]float64{"color": m}, N: 4 * len(scores),
			Prompts: len(scores), PromptScores: scores, Checks: map[string]float64{"extra_per_image": 0.3}}, G: 4, Seed: 1}
	}
	a := write("a.json", res([]float64{0.5, 0.5, 0.5, 0.5}))
	b := write("b.json", res([]float64{0.6, 0.7, 0.6, 0.7}))
	cmd := newCompareCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{a, b})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	// Differences 0.1, 0.2, 0.1, 0.2: mean 0.15, sd 0.0577, half-width 1.96 x 0.0577 / 2 = 0.057.
	for _, want := range []string{"mean change +0.150 ± 0.057", "color", "+0.150"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	other := res([]float64{0.6, 0.7, 0.6, 0.7})
	other.Seed = 2
	c := write("c.json", other)
	cmd = newCompareCmd()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{a, c})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "seed") {
		t.Errorf("different seeds: %v", err)
	}
	old := write("old.json", evalResult{Result: evaluate.Result{Mean: 0.5, N: 4, Prompts: 1}, G: 4, Seed: 1})
	cmd = newCompareCmd()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{old, b})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "prompt_scores") {
		t.Errorf("result without prompt scores: %v", err)
	}
}
