package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/prompts"
)

// prompt_repeats (read by prompts.ReadPool) leaves types out and repeats others in rounds after the file; a type it does
// not name stays once.
func TestReadPromptsRepeats(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "p.jsonl")
	lines := []string{
		`{"prompt":"a red circle","task_type":"color"}`,
		`{"prompt":"a circle left of a cross","task_type":"spatial"}`,
		`{"prompt":"two circles","task_type":"numeracy"}`,
		`{"prompt":"a square","task_type":"shape"}`,
		`{"prompt":"three crosses","task_type":"numeracy"}`,
	}
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := Default()
	c.Prompts = file
	c.PromptRepeats = map[string]int{prompts.Spatial: 0, prompts.Numeracy: 3}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	ps, err := prompts.ReadPool(c.Prompts, c.PromptRepeats)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, p.Prompt)
	}
	want := []string{"a red circle", "two circles", "a square", "three crosses", "two circles", "three crosses", "two circles", "three crosses"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("pool %q, want %q", got, want)
	}
	c.PromptRepeats = map[string]int{prompts.Color: 0, prompts.Spatial: 0, prompts.Numeracy: 0, prompts.Shape: 0}
	if _, err := prompts.ReadPool(c.Prompts, c.PromptRepeats); err == nil || !strings.Contains(err.Error(), "prompt_repeats") {
		t.Fatalf("empty pool: err %v, want one naming prompt_repeats", err)
	}
	for _, bad := range []map[string]int{{prompts.Shape: -1}, {prompts.Shape: MaxPromptRepeats + 1}} {
		c.PromptRepeats = bad
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "prompt_repeats") {
			t.Errorf("prompt_repeats %v: err %v, want one naming prompt_repeats", bad, err)
		}
	}
	for _, bad := range []map[string]int{{"spacial": 2}, {prompts.Shape: -1}} {
		if _, err := prompts.ReadPool(c.Prompts, bad); err == nil || !strings.Contains(err.Error(), "prompt_repeats") {
			t.Errorf("prompt_repeats %v: err %v, want one naming prompt_repeats", bad, err)
		}
	}
}

// The ladder configs that reweight the RL prompts hand out exactly the pools their runs in
// results/ were made from (then written out as files: rl.jsonl without the relation types, and
// that followed by rl.jsonl's shape, numeracy and knowledge prompts again).
func TestLadderPromptPools(t *testing.T) {
	all, err := prompts.ReadFile("../../data/prompts/rl.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	var noRelations, weak []prompts.Prompt
	for _, p := range all {
		switch p.TaskType {
		case prompts.Spatial, prompts.NonSpatial, prompts.Complex:
		default:
			noRelations = append(noRelations, p)
		}
	}
	weak = append(weak, noRelations...)
	for _, p := range all {
		switch p.TaskType {
		case prompts.Shape, prompts.Numeracy, prompts.Knowledge:
			weak = append(weak, p)
		}
	}
	for name, want := range map[string][]prompts.Prompt{"laptop-no-relations.yaml": noRelations, "laptop-weak-x2.yaml": weak} {
		c, err := Load(filepath.Join("../../configs/ladder", name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := prompts.ReadPool(filepath.Join("../..", c.Prompts), c.PromptRepeats)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: a pool of %d prompts, not the %d its run used", name, len(got), len(want))
		}
	}
}

func TestAnchorTypeRepeatsBounds(t *testing.T) {
	c := Default()
	c.AnchorTypeRepeats = map[string]int{prompts.Spatial: 3}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []map[string]int{{prompts.Spatial: 0}, {prompts.Spatial: -1}, {prompts.Spatial: MaxPromptRepeats + 1}} {
		c.AnchorTypeRepeats = bad
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "anchor_type_repeats") {
			t.Errorf("anchor_type_repeats %v: err %v, want one naming anchor_type_repeats", bad, err)
		}
	}
}
