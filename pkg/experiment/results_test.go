package experiment

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/evaluate"
	"github.com/bicot-rl/bicot/pkg/trainer"
)

// A record written as RunFromConfig writes it makes a row with the change from the base, the
// reward and oracle first→last, and a learning curve.
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
	rec, err := createRecord(filepath.Join(dir, "run-a.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []map[string]any{
		settingsLine(config.Default(), trainer.DefaultOptions(), DefaultSettings()),
		{"kind": kindEval, "point": Point{Step: 0, Eval: res(0.5)}},
		{"kind": kindStep, "step": Step{Step: 1, TrainSeconds: 60, Stats: trainer.StepStats{RewardMean: 1, PerExpert: map[string]float64{"oracle": 0.4}}}},
		{"kind": kindStep, "step": Step{Step: 2, TrainSeconds: 120, Stats: trainer.StepStats{RewardMean: 2, PerExpert: map[string]float64{"oracle": 0.6}}}},
		{"kind": kindEval, "point": Point{Step: 2, TrainSeconds: 120, Eval: res(0.55)}},
	} {
		if err := rec.write(line); err != nil {
			t.Fatal(err)
		}
	}
	if err := rec.close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := WriteResults(&out, dir); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"| base | 0 | 0.0 | 0.500 | — | 0.500 | 0.250 |", "| run-a | 2 | 2.0 | 0.550 | +0.050 |", "1.000→2.000",
		"0.400→0.600", "Learning curves", "| run-a | 2 | 2.0 | 0.550 | 0.550 | 0.275 |", "Evaluation: 8 samples of 2 held-out prompts"} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, s)
		}
	}
	if err := WriteResults(&out, t.TempDir()); err == nil {
		t.Error("an empty directory gave a table")
	}
}

// A run without plans is compared with the base without plans, and a run never evaluated says so.
func TestResultsNoPlanBaseAndNoEvaluation(t *testing.T) {
	dir := t.TempDir()
	for name, mean := range map[string]float64{"base.json": 0.5, "base-no-plan.json": 0.1} {
		b, err := json.Marshal(evaluate.Result{Mean: mean})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	noPlan := config.Default()
	noPlan.Sampling.MaxPlanTokens = 0
	for name, lines := range map[string][]map[string]any{
		"no-plan.jsonl": {settingsLine(noPlan, trainer.DefaultOptions(), DefaultSettings()),
			{"kind": kindEval, "point": Point{Eval: evaluate.Result{Mean: 0.2}}}},
		"unevaluated.jsonl": {settingsLine(config.Default(), trainer.DefaultOptions(), DefaultSettings()),
			{"kind": kindStep, "step": Step{Step: 1, TrainSeconds: 30}}},
	} {
		rec, err := createRecord(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			if err := rec.write(l); err != nil {
				t.Fatal(err)
			}
		}
		if err := rec.close(); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := WriteResults(&out, dir); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| no-plan | 0 | 0.0 | 0.200 | +0.100 |", "| unevaluated | 1 | 0.5 | (no evaluation) |"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}
