package evaluate

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/prompts"
)

// With the evaluated prompts, compare breaks the scores down by form where a task type mixes
// them, and over all prompts; prompts that are not the evaluated ones are refused.
func TestCompareFilesByForm(t *testing.T) {
	ps, err := prompts.Read(strings.NewReader(`{"prompt":"a ball the color of grass","task_type":"knowledge","nouns":["circle"],"attr_nouns":["green circle"]}
{"prompt":"a cross below a ball","task_type":"knowledge","nouns":["cross","circle"],"spatial_info":{"obj1":"cross","obj2":"circle","locality":"below"}}
{"prompt":"a box above a ball","task_type":"knowledge","nouns":["square","circle"],"spatial_info":{"obj1":"square","obj2":"circle","locality":"above"}}
{"prompt":"a red cross","task_type":"color","nouns":["cross"],"attr_nouns":["red cross"]}
`), "test")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, scores []float64) string {
		r := Report{Result: Result{TaskTypes: map[string]float64{"knowledge": (scores[0] + scores[1] + scores[2]) / 3, "color": scores[3]},
			N: 4 * len(scores), Prompts: len(scores), PromptScores: scores}, G: 4, Seed: 1, Checkpoint: name}
		p := filepath.Join(dir, name)
		if err := r.WriteFile(p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := write("a.json", []float64{0.5, 0.1, 0.3, 0.8})
	b := write("b.json", []float64{0.75, 0.2, 0.2, 0.9})
	var out bytes.Buffer
	if err := CompareFiles(&out, a, b, ps); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"knowledge/attribute      1    0.500    0.750   +0.250",
		"knowledge/relation       2    0.200    0.200   +0.000",
		"all/attribute            2    0.650    0.825   +0.175",
		"all/relation             2    0.200    0.200   +0.000",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "color/") {
		t.Errorf("a task type of one form is broken down:\n%s", out.String())
	}
	if err := CompareFiles(&out, a, b, ps[:3]); err == nil || !strings.Contains(err.Error(), "3 prompts given") {
		t.Errorf("too few prompts: %v", err)
	}
	if err := CompareFiles(&out, a, b, []prompts.Prompt{ps[3], ps[1], ps[2], ps[0]}); err == nil || !strings.Contains(err.Error(), "not the ones evaluated") {
		t.Errorf("prompts in another order: %v", err)
	}
}
