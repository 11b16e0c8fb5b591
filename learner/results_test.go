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
	"github.com/bicot-rl/bicot/pkg/learn"
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
		{"kind": "step", "step": experiment.Step{Step: 1, TrainSeconds: 60, Stats: learn.StepStats{RewardMean: 1, PerExpert: map[string]float64{"oracle": 0.4}}}},
		{"kind": "step", "step": experiment.Step{Step: 2, TrainSeconds: 120, Stats: learn.StepStats{RewardMean: 2, PerExpert: map[string]float64{"oracle": 0.6}}}},
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
