package experiment

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// A run config's learning problem on a tiny policy with the oracle as the reward: the record
// holds the settings, every step and both evaluations, the final policy is written, and the
// results table reads the record.
func TestRunFromConfigWritesRecordAndPolicy(t *testing.T) {
	dir := t.TempDir()
	backend, err := mlx.NewBackend("")
	if err != nil {
		t.Fatal(err)
	}
	cb, err := vq.Load("../../models/codebook.vq")
	if err != nil {
		t.Fatal(err)
	}
	tiny, err := model.TinyCheckpoint(backend, cb, 3)
	if err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	c.PolicyInit, c.ExpertConfig = filepath.Join(dir, "tiny.safetensors"), filepath.Join(dir, "experts.yaml")
	c.Prompts, c.PretrainPrompts = "../../data/prompts/train.jsonl", "../../data/prompts/train.jsonl"
	c.Eval.Prompts, c.Codebook = "../../data/prompts/eval.jsonl", "../../models/codebook.vq"
	c.PromptsPerStep, c.GroupSize, c.Steps = 2, 2, 2
	if err := os.WriteFile(c.PolicyInit, tiny, 0o644); err != nil {
		t.Fatal(err)
	}
	experts := "models: ../../models/experts\nexperts: {oracle: {weight: 1}, detector: {weight: 0}, vqa: {weight: 0}, hps: {weight: 0}, orm: {weight: 0}}\n"
	if err := os.WriteFile(c.ExpertConfig, []byte(experts), 0o644); err != nil {
		t.Fatal(err)
	}
	s := Settings{EvalLimit: 1, EvalG: 1, EvalSeed: 1, Out: filepath.Join(dir, "runs", "tiny.jsonl"), Save: filepath.Join(dir, "final.safetensors")}
	res, err := RunFromConfig(context.Background(), c, s, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Steps) != 2 || len(res.Curve) != 2 {
		t.Fatalf("%d steps, %d evaluations", len(res.Steps), len(res.Curve))
	}
	b, err := os.ReadFile(s.Out)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var line struct {
			Kind string `json:"kind"`
		}
		if err := json.Unmarshal(l, &line); err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, line.Kind)
	}
	if got := strings.Join(kinds, " "); got != "config eval step step eval" {
		t.Fatalf("record kinds %q", got)
	}
	if _, err := model.LoadFile(backend, s.Save); err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := WriteResults(&table, filepath.Dir(s.Out)); err != nil || !strings.Contains(table.String(), "| tiny | 2 |") {
		t.Fatalf("results table (%v):\n%s", err, table.String())
	}
	c.GroupSize = 0
	if _, err := RunFromConfig(context.Background(), c, s, zerolog.Nop()); err == nil {
		t.Fatal("an invalid run config was run")
	}
}
