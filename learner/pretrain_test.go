package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/spf13/cobra"
)

func runLearner(t *testing.T, cmd *cobra.Command, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, errOut.String())
	}
	return out.String()
}

// Pretrain a tiny policy for a few steps on the real prompts and codebook, then evaluate it: the
// checkpoint and its config are written, and eval reports every task type it sampled.
func TestPretrainThenEval(t *testing.T) {
	dir := t.TempDir()
	ck := filepath.Join(dir, "tiny.safetensors")
	cfgFile := filepath.Join(dir, "pretrain.yaml")
	if err := os.WriteFile(cfgFile, []byte("d_model: 16\nheads: 2\nlayers: 1\nff: 32\nbatch: 4\nwarmup: 1\nshards: 2\ncell_bag: true\ntext_len: 36\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := "../"
	out := runLearner(t, newPretrainCmd(), "--config", cfgFile, "--steps", "3", "--seed", "2", "--out", ck,
		"--prompts", root+"data/prompts/train.jsonl", "--codebook", root+"models/codebook.vq", "--log-level", "warn")
	var sum pretrainSummary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("summary %q: %v", out, err)
	}
	if sum.Steps != 3 || sum.Config.DModel != 16 || sum.Params == 0 || !sum.Config.CellBag || sum.Config.TextLen != 36 {
		t.Fatalf("summary %+v", sum)
	}
	if _, err := os.Stat(configPath(ck)); err != nil {
		t.Fatal(err)
	}
	js := filepath.Join(dir, "eval.json")
	grid := filepath.Join(dir, "grid.png")
	samples := filepath.Join(dir, "samples.jsonl")
	runLearner(t, newEvalCmd(), "--checkpoint", ck, "--limit", "1", "--g", "2", "--json", js, "--grid", grid, "--samples", samples,
		"--prompts", root+"data/prompts/eval.jsonl", "--codebook", root+"models/codebook.vq", "--log-level", "warn")
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	var res evalResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.TaskTypes) < 8 || res.N != 2*res.Prompts || res.Mean < 0 || res.Mean > 1 || res.Diversity <= 0 {
		t.Fatalf("eval result %+v", res)
	}
	if st, err := os.Stat(grid); err != nil || st.Size() == 0 {
		t.Fatalf("grid: %v", err)
	}
	// One samples line per sample, each naming its prompt and sample index.
	sb, err := os.ReadFile(samples)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(sb), []byte("\n"))
	if len(lines) != res.N {
		t.Fatalf("%d sample lines, want %d", len(lines), res.N)
	}
	for i, l := range lines {
		var r sampleRecord
		if err := json.Unmarshal(l, &r); err != nil || r.Prompt == "" || r.TaskType == "" || r.Sample != i%2 || r.Score < 0 || r.Score > 1 {
			t.Fatalf("sample line %d %s: %+v %v", i, l, r, err)
		}
	}
	// A checkpoint that does not exist is a clear error.
	cmd := newEvalCmd()
	cmd.SetArgs([]string{"--checkpoint", filepath.Join(dir, "nope.safetensors"), "--log-level", "warn"})
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	if err := cmd.Execute(); err == nil {
		t.Fatal("missing checkpoint accepted")
	}
}

// configs/pretrain.yaml documents every setting at its default: loading it gives exactly the
// defaults, so the file and the code cannot drift apart.
func TestPretrainYAMLIsTheDefaults(t *testing.T) {
	cmd := newPretrainCmd()
	c := defaultPretrainConfig()
	if err := loadPretrainConfig("../configs/pretrain.yaml", &c, cmd); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, defaultPretrainConfig()) {
		t.Fatalf("configs/pretrain.yaml:\n%+v\ndefaults:\n%+v", c, defaultPretrainConfig())
	}
}
