package prompts

import (
	"maps"
	"slices"
	"strings"
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

// A repeat key may name a task type's form: it decides for the prompts of that form and the
// type's own key for the others; an unknown type or form is refused by name.
func TestRepeatByForm(t *testing.T) {
	count := Prompt{Prompt: "as many squares as a triangle has corners", TaskType: Knowledge,
		NumeracyInfo: []NumeracyInfo{{ObjName: "square", Num: 3}}}
	colour := Prompt{Prompt: "a ball the color of grass", TaskType: Knowledge}
	rel := Prompt{Prompt: "a ball left of a box", TaskType: Knowledge,
		SpatialInfo: &SpatialInfo{Obj1: "circle", Obj2: "square", Locality: "left of"}}
	num := Prompt{Prompt: "two circles", TaskType: Numeracy, NumeracyInfo: []NumeracyInfo{{ObjName: "circle", Num: 2}}}
	ps := []Prompt{count, colour, rel, num}
	texts := func(pool []Prompt) []string {
		var out []string
		for _, p := range pool {
			out = append(out, p.Prompt)
		}
		return out
	}
	for _, tc := range []struct {
		repeats map[string]int
		want    []Prompt
	}{
		{map[string]int{"knowledge/count": 3}, []Prompt{count, colour, rel, num, count, count}},
		{map[string]int{"knowledge": 0, "knowledge/attribute": 2}, []Prompt{colour, num, colour}},
		{map[string]int{"knowledge": 2, "knowledge/relation": 1, "numeracy/count": 0}, []Prompt{count, colour, rel, count, colour}},
	} {
		if err := CheckRepeatKeys(tc.repeats); err != nil {
			t.Fatalf("%v: %v", tc.repeats, err)
		}
		if got, want := texts(Repeat(ps, tc.repeats)), texts(tc.want); !slices.Equal(got, want) {
			t.Errorf("%v: pool %q, want %q", tc.repeats, got, want)
		}
	}
	for key, word := range map[string]string{"knowledge/colour": "colour", "knowlege/count": "knowlege", "/count": `""`} {
		if err := CheckRepeatKeys(map[string]int{key: 1}); err == nil || !strings.Contains(err.Error(), word) {
			t.Errorf("key %q: err %v, want one naming %s", key, err, word)
		}
	}
}
