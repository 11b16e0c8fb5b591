package prompts

import (
	"maps"
	"testing"
)

// The shipped eval set mixes forms only in knowledge (docs/learner.md counts on it): relation
// types are all relations, numeracy all counts, the single-attribute types and object none.
func TestFormOfTheEvalSet(t *testing.T) {
	ps, err := ReadFile("../../data/prompts/eval.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]int{}
	for _, p := range ps {
		if got[p.TaskType] == nil {
			got[p.TaskType] = map[string]int{}
		}
		got[p.TaskType][Form(p)]++
	}
	want := map[string]map[string]int{
		"color": {FormAttribute: 120}, "shape": {FormAttribute: 120}, "texture": {FormAttribute: 120},
		"object": {FormAttribute: 120}, "spatial": {FormRelation: 120}, "non": {FormRelation: 120},
		"complex": {FormRelation: 120}, "numeracy": {FormCount: 120},
		"knowledge": {FormAttribute: 42, FormCount: 15, FormRelation: 63},
	}
	for tt, w := range want {
		if !maps.Equal(got[tt], w) {
			t.Errorf("%s: forms %v, want %v", tt, got[tt], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("task types %v", got)
	}
}

// A relation wins over a count, and a prompt from elsewhere (no spec) is judged by its metadata.
func TestFormPrecedence(t *testing.T) {
	for _, c := range []struct {
		p    Prompt
		want string
	}{
		{Prompt{SpatialInfo: &SpatialInfo{}, NumeracyInfo: []NumeracyInfo{{}}}, FormRelation},
		{Prompt{NumeracyInfo: []NumeracyInfo{{}}}, FormCount},
		{Prompt{AttrNouns: []string{"red circle"}}, FormAttribute},
	} {
		if got := Form(c.p); got != c.want {
			t.Errorf("Form(%+v) = %s, want %s", c.p, got, c.want)
		}
	}
}
