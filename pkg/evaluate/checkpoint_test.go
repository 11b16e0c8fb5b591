package evaluate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/mlx"
)

// The shipped checkpoint evaluated on one prompt per task type: the report covers every task
// type, the grid and the samples file are written, progress counts the prompts, and the stored
// report reads back as it was.
func TestCheckpointWritesReportGridAndSamples(t *testing.T) {
	dir := t.TempDir()
	backend, err := mlx.NewBackend("")
	if err != nil {
		t.Fatal(err)
	}
	o := DefaultCheckpointOptions()
	o.Checkpoint, o.Prompts, o.Codebook = "../../models/base.safetensors", "../../data/prompts/eval.jsonl", "../../models/codebook.vq"
	o.Limit, o.G = 1, 2
	o.Grid, o.Samples = filepath.Join(dir, "grid.png"), filepath.Join(dir, "samples.jsonl")
	var done []int
	o.Progress = func(d, total int) { done = append(done, d, total) }
	rep, err := Checkpoint(context.Background(), backend, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.TaskTypes) < 8 || rep.N != 2*rep.Prompts || rep.Mean < 0 || rep.Mean > 1 || rep.Diversity <= 0 ||
		rep.Checkpoint != o.Checkpoint || rep.G != 2 || rep.CFG != 3 || rep.Seed != 1 {
		t.Fatalf("report %+v", rep)
	}
	if len(done) < 4 || done[0] != 0 || done[len(done)-2] != rep.Prompts || done[len(done)-1] != rep.Prompts {
		t.Fatalf("progress (done, total) pairs %v for %d prompts", done, rep.Prompts)
	}
	if st, err := os.Stat(o.Grid); err != nil || st.Size() == 0 {
		t.Fatalf("grid: %v", err)
	}
	// One samples line per sample, each naming its prompt and sample index.
	sb, err := os.ReadFile(o.Samples)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(sb), []byte("\n"))
	if len(lines) != rep.N {
		t.Fatalf("%d sample lines, want %d", len(lines), rep.N)
	}
	for i, l := range lines {
		var r SampleRecord
		if err := json.Unmarshal(l, &r); err != nil || r.Prompt == "" || r.TaskType == "" || r.Sample != i%2 || r.Score < 0 || r.Score > 1 {
			t.Fatalf("sample line %d %s: %+v %v", i, l, r, err)
		}
	}
	js := filepath.Join(dir, "eval.json")
	if err := rep.WriteFile(js); err != nil {
		t.Fatal(err)
	}
	back, err := readComparable(js)
	if err != nil {
		t.Fatal(err)
	}
	back.Seconds, rep.Seconds = 0, 0
	if !reflect.DeepEqual(back, rep) {
		t.Fatalf("read back %+v\nwrote %+v", back, rep)
	}
	var table bytes.Buffer
	rep.WriteTable(&table)
	for _, want := range []string{"base.safetensors (with plans, G=2, cfg=3, T=1, seed=1)", "plan quality", "image_follows_plan"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
}

// Bad sampling settings are refused before anything is loaded, and a checkpoint that does not
// exist is a clear error.
func TestCheckpointRejects(t *testing.T) {
	backend, err := mlx.NewBackend("")
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string]func(*CheckpointOptions){
		"g":           func(o *CheckpointOptions) { o.G = 0 },
		"batch":       func(o *CheckpointOptions) { o.Batch = 0 },
		"temperature": func(o *CheckpointOptions) { o.Temperature = 0 },
	} {
		o := DefaultCheckpointOptions()
		bad(&o)
		if err := o.Validate(); err == nil {
			t.Errorf("%s: %+v accepted", name, o)
		}
	}
	o := DefaultCheckpointOptions()
	o.Checkpoint = filepath.Join(t.TempDir(), "nope.safetensors")
	if _, err := Checkpoint(context.Background(), backend, o); err == nil || !strings.Contains(err.Error(), "nope.safetensors") {
		t.Fatalf("missing checkpoint: %v", err)
	}
	// An interrupted evaluation ends with the interruption, not a report of the prompts it did.
	o = DefaultCheckpointOptions()
	o.Checkpoint, o.Prompts, o.Codebook = "../../models/base.safetensors", "../../data/prompts/eval.jsonl", "../../models/codebook.vq"
	o.Limit, o.G, o.Batch = 1, 1, 1
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Checkpoint(ctx, backend, o); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled evaluation: %v", err)
	}
}

// CompareFiles pairs the two evaluations prompt by prompt: the change and its interval come from
// the per-prompt differences, and evaluations of different prompts or seeds are refused.
func TestCompareFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, r Report) string {
		p := filepath.Join(dir, name)
		if err := r.WriteFile(p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	res := func(scores []float64) Report {
		var sum float64
		for _, s := range scores {
			sum += s
		}
		m := sum / float64(len(scores))
		return Report{Result: Result{Mean: m, TaskTypes: map[string]float64{"color": m}, N: 4 * len(scores),
			Prompts: len(scores), PromptScores: scores, Checks: map[string]float64{"extra_per_image": 0.3}}, G: 4, Seed: 1}
	}
	a := write("a.json", res([]float64{0.5, 0.5, 0.5, 0.5}))
	b := write("b.json", res([]float64{0.6, 0.7, 0.6, 0.7}))
	var out bytes.Buffer
	if err := CompareFiles(&out, a, b, nil); err != nil {
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
	if err := CompareFiles(&out, a, c, nil); err == nil || !strings.Contains(err.Error(), "seed") {
		t.Errorf("different seeds: %v", err)
	}
	excl := res([]float64{0.6, 0.7, 0.6, 0.7})
	excl.ExclusiveCells = true
	e := write("e.json", excl)
	if err := CompareFiles(&out, a, e, nil); err == nil || !strings.Contains(err.Error(), "exclusive cells") {
		t.Errorf("one with exclusive cells, one without: %v", err)
	}
	old := write("old.json", Report{Result: Result{Mean: 0.5, N: 4, Prompts: 1}, G: 4, Seed: 1})
	if err := CompareFiles(&out, old, b, nil); err == nil || !strings.Contains(err.Error(), "prompt_scores") {
		t.Errorf("result without prompt scores: %v", err)
	}
}
