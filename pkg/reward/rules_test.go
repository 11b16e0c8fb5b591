package reward

import (
	"math"
	"testing"

	"github.com/bicot-rl/bicot/pkg/prompts"
)

// cell returns a box covering grid cell (row, col) of a 4x4 grid.
func cell(label string, score float64, row, col int) Box {
	return Box{Label: label, Score: score, Box: [4]float64{float64(col) / 4, float64(row) / 4, float64(col+1) / 4, float64(row+1) / 4}}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestDetectorRule(t *testing.T) {
	r := ReferenceDetectorRule()
	spatial := func(o1, loc, o2 string) prompts.Prompt {
		return prompts.Prompt{TaskType: prompts.Spatial, Nouns: []string{o1, o2}, SpatialInfo: &prompts.SpatialInfo{Obj1: o1, Obj2: o2, Locality: loc}}
	}
	num := func(info ...prompts.NumeracyInfo) prompts.Prompt {
		var nouns []string
		for _, n := range info {
			nouns = append(nouns, n.ObjName)
		}
		return prompts.Prompt{TaskType: prompts.Numeracy, Nouns: nouns, NumeracyInfo: info}
	}
	overlap := Box{Label: "square", Score: 0.9, Box: [4]float64{0.2, 0, 0.45, 0.25}} // IoU 1/3 with cell(0,0)... shifted right
	tests := []struct {
		name  string
		p     prompts.Prompt
		boxes []Box
		want  float64
	}{
		{"no nouns is 1", prompts.Prompt{TaskType: prompts.Color}, nil, 1},
		{"object all found", prompts.Prompt{TaskType: prompts.Color, Nouns: []string{"circle", "square"}}, []Box{cell("circle", 0.9, 0, 0), cell("square", 0.8, 1, 1)}, 1},
		{"object half found", prompts.Prompt{TaskType: prompts.Shape, Nouns: []string{"circle", "square"}}, []Box{cell("circle", 0.9, 0, 0)}, 0.5},
		{"object below threshold", prompts.Prompt{TaskType: prompts.Texture, Nouns: []string{"circle"}}, []Box{cell("circle", 0.3, 0, 0)}, 0},
		{"object plural label", prompts.Prompt{TaskType: prompts.Object, Nouns: []string{"crosses"}}, []Box{cell("cross", 0.5, 0, 0)}, 1},
		{"object none", prompts.Prompt{TaskType: prompts.Complex, Nouns: []string{"circle"}}, nil, 0},
		{"spatial none", spatial("circle", "left of", "square"), nil, 0},
		{"spatial one", spatial("circle", "left of", "square"), []Box{cell("circle", 0.9, 0, 0)}, 0.2},
		{"spatial left ok", spatial("circle", "left of", "square"), []Box{cell("circle", 0.9, 0, 0), cell("square", 0.9, 0, 2)}, 0.9},
		{"spatial left wrong side", spatial("circle", "left of", "square"), []Box{cell("circle", 0.9, 0, 2), cell("square", 0.9, 0, 0)}, 0.4},
		{"spatial left diagonal", spatial("circle", "left of", "square"), []Box{cell("circle", 0.9, 0, 0), cell("square", 0.9, 1, 1)}, 0.4},
		{"spatial right ok", spatial("circle", "right of", "square"), []Box{cell("circle", 0.9, 2, 3), cell("square", 0.9, 2, 1)}, 0.9},
		{"spatial above ok", spatial("circle", "above", "square"), []Box{cell("circle", 0.9, 0, 1), cell("square", 0.9, 3, 1)}, 0.9},
		{"spatial above wrong", spatial("circle", "above", "square"), []Box{cell("circle", 0.9, 3, 1), cell("square", 0.9, 0, 1)}, 0.4},
		{"spatial below ok", spatial("circle", "below", "square"), []Box{cell("circle", 0.9, 3, 1), cell("square", 0.9, 1, 1)}, 0.9},
		{"spatial most confident box used", spatial("circle", "left of", "square"), []Box{cell("circle", 0.5, 0, 3), cell("circle", 0.9, 0, 0), cell("square", 0.9, 0, 2)}, 0.9},
		{"spatial overlap softened", spatial("circle", "left of", "square"), []Box{cell("circle", 0.9, 0, 0), overlap}, 0.4 + 0.5*0.1/(0.05/0.45)},
		{"spatial next to adjacent", spatial("circle", "next to", "square"), []Box{cell("circle", 0.9, 0, 0), cell("square", 0.9, 0, 1)}, 0.9},
		{"spatial next to far", spatial("circle", "next to", "square"), []Box{cell("circle", 0.9, 0, 0), cell("square", 0.9, 0, 3)}, 0.4 + 0.5*0.3/0.75},
		{"spatial far from", spatial("circle", "far from", "square"), []Box{cell("circle", 0.9, 0, 0), cell("square", 0.9, 0, 1)}, 0.4 + 0.5*0.25/0.45},
		{"spatial same noun", spatial("circle", "left of", "circle"), []Box{cell("circle", 0.9, 0, 3), cell("circle", 0.8, 0, 0)}, 0.9},
		{"spatial same noun single box", spatial("circle", "left of", "circle"), []Box{cell("circle", 0.9, 0, 3)}, 0.4},
		{"numeracy exact", num(prompts.NumeracyInfo{ObjName: "circle", Num: 2}), []Box{cell("circle", 0.9, 0, 0), cell("circle", 0.9, 1, 1)}, 1},
		{"numeracy duplicate suppressed", num(prompts.NumeracyInfo{ObjName: "circle", Num: 1}), []Box{cell("circle", 0.9, 0, 0), cell("circle", 0.6, 0, 0)}, 1},
		{"numeracy wrong count", num(prompts.NumeracyInfo{ObjName: "circle", Num: 3}), []Box{cell("circle", 0.9, 0, 0)}, 0.2},
		{"numeracy absent", num(prompts.NumeracyInfo{ObjName: "circle", Num: 3}), []Box{cell("square", 0.9, 0, 0)}, 0},
		{"numeracy averaged", num(prompts.NumeracyInfo{ObjName: "circle", Num: 1}, prompts.NumeracyInfo{ObjName: "square", Num: 2}), []Box{cell("circle", 0.9, 0, 0), cell("square", 0.9, 1, 0)}, 0.6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := r.Reward(tc.p, Raw{Boxes: tc.boxes})
			if err != nil {
				t.Fatal(err)
			}
			if !near(got, tc.want) {
				t.Fatalf("reward %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDetectorRuleExtensions(t *testing.T) {
	r := DefaultDetectorRule()
	rel := func(task, o1, loc, o2 string) prompts.Prompt {
		return prompts.Prompt{TaskType: task, Nouns: []string{o1, o2}, SpatialInfo: &prompts.SpatialInfo{Obj1: o1, Obj2: o2, Locality: loc}}
	}
	left, right := []Box{cell("circle", 0.9, 0, 0), cell("square", 0.9, 0, 2)}, []Box{cell("circle", 0.9, 0, 2), cell("square", 0.9, 0, 0)}
	extra := append(append([]Box{}, left...), cell("cross", 0.8, 3, 3))
	tests := []struct {
		name   string
		p      prompts.Prompt
		boxes  []Box
		want   float64
		refWas float64 // what the reference rule gives
	}{
		{"complex relation checked", rel(prompts.Complex, "circle", "left of", "square"), left, 0.9, 1},
		{"complex relation violated", rel(prompts.Complex, "circle", "left of", "square"), right, 0.4, 1},
		{"non-spatial far from violated", rel(prompts.NonSpatial, "circle", "far from", "square"), []Box{cell("circle", 0.9, 0, 0), cell("square", 0.9, 0, 1)}, 0.4 + 0.5*0.25/0.45, 1},
		{"extra object costs", rel(prompts.Spatial, "circle", "left of", "square"), extra, 0.9 * DefaultExtraFactor, 0.9},
		{"two extras cost twice", prompts.Prompt{TaskType: prompts.Color, Nouns: []string{"circle"}},
			[]Box{cell("circle", 0.9, 0, 0), cell("square", 0.9, 1, 1), cell("cross", 0.9, 2, 2)}, DefaultExtraFactor * DefaultExtraFactor, 1},
		{"same cell twice is one object", prompts.Prompt{TaskType: prompts.Color, Nouns: []string{"circle"}},
			[]Box{cell("circle", 0.9, 0, 0), cell("square", 0.5, 0, 0)}, 1, 1},
		{"numeracy counts are what is asked", prompts.Prompt{TaskType: prompts.Numeracy, Nouns: []string{"circle", "square"},
			NumeracyInfo: []prompts.NumeracyInfo{{ObjName: "circle", Num: 2}}},
			[]Box{cell("circle", 0.9, 0, 0), cell("circle", 0.9, 1, 1), cell("square", 0.9, 2, 2)}, 1, 1},
		{"numeracy over-count costs", prompts.Prompt{TaskType: prompts.Numeracy, Nouns: []string{"circle"},
			NumeracyInfo: []prompts.NumeracyInfo{{ObjName: "circle", Num: 1}}},
			[]Box{cell("circle", 0.9, 0, 0), cell("circle", 0.9, 1, 1)}, 0.2 * DefaultExtraFactor, 0.2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := r.Reward(tc.p, Raw{Boxes: tc.boxes})
			if err != nil {
				t.Fatal(err)
			}
			if !near(got, tc.want) {
				t.Fatalf("reward %v, want %v", got, tc.want)
			}
			ref, err := ReferenceDetectorRule().Reward(tc.p, Raw{Boxes: tc.boxes})
			if err != nil {
				t.Fatal(err)
			}
			if !near(ref, tc.refWas) {
				t.Fatalf("reference reward %v, want %v", ref, tc.refWas)
			}
		})
	}
}

func TestDetectorRuleErrors(t *testing.T) {
	r := DefaultDetectorRule()
	for name, p := range map[string]prompts.Prompt{
		"spatial without info":  {TaskType: prompts.Spatial, Nouns: []string{"circle"}},
		"numeracy without info": {TaskType: prompts.Numeracy, Nouns: []string{"circle"}},
		"unknown locality": {TaskType: prompts.Spatial, Nouns: []string{"circle", "square"},
			SpatialInfo: &prompts.SpatialInfo{Obj1: "circle", Obj2: "square", Locality: "inside"}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := r.Reward(p, Raw{Boxes: []Box{cell("circle", 0.9, 0, 0), cell("square", 0.9, 0, 1)}}); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestVQARule(t *testing.T) {
	r := VQARule{}
	tests := []struct {
		name      string
		p         prompts.Prompt
		questions []string
		answers   []Answer
		want      float64
		shortcut  bool
	}{
		{"spatial is 0", prompts.Prompt{TaskType: prompts.Spatial, Nouns: []string{"circle"}}, nil, nil, 0, true},
		{"numeracy is 0", prompts.Prompt{TaskType: prompts.Numeracy, Nouns: []string{"circle"}}, nil, nil, 0, true},
		{"nothing to ask is 1", prompts.Prompt{TaskType: prompts.NonSpatial}, nil, nil, 1, true},
		{"attr nouns", prompts.Prompt{TaskType: prompts.Color, Nouns: []string{"circle", "square"}, AttrNouns: []string{"red circle", "blue square"}},
			[]string{"red circle?", "blue square?"}, []Answer{{Yes: 0.9, No: 0.1}, {Yes: 0.2, No: 0.2}}, 0.7, false},
		{"falls back to nouns", prompts.Prompt{TaskType: prompts.Object, Nouns: []string{"circle"}},
			[]string{"circle?"}, []Answer{{Yes: 0.3, No: 0.1}}, 0.75, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, ok := r.Shortcut(tc.p)
			if ok != tc.shortcut {
				t.Fatalf("shortcut %v, want %v", ok, tc.shortcut)
			}
			if ok {
				if v != tc.want {
					t.Fatalf("shortcut reward %v, want %v", v, tc.want)
				}
				return
			}
			qs := r.Questions(tc.p)
			if len(qs) != len(tc.questions) {
				t.Fatalf("questions %q, want %q", qs, tc.questions)
			}
			for i := range qs {
				if qs[i] != tc.questions[i] {
					t.Fatalf("questions %q, want %q", qs, tc.questions)
				}
			}
			got, err := r.Reward(tc.p, Raw{Answers: tc.answers})
			if err != nil {
				t.Fatal(err)
			}
			if !near(got, tc.want) {
				t.Fatalf("reward %v, want %v", got, tc.want)
			}
		})
	}
}

func TestVQARuleHard(t *testing.T) {
	p := prompts.Prompt{TaskType: prompts.Color, Nouns: []string{"circle", "square", "cross"}, AttrNouns: []string{"red circle", "blue square", "green cross"}}
	answers := []Answer{{Yes: 0.9, No: 0.1}, {Yes: 0.45, No: 0.55}, {Yes: 0.6, No: 0.4}}
	hard, err := VQARule{Hard: true}.Reward(p, Raw{Answers: answers})
	if err != nil {
		t.Fatal(err)
	}
	soft, err := VQARule{}.Reward(p, Raw{Answers: answers})
	if err != nil {
		t.Fatal(err)
	}
	if !near(hard, 2.0/3) || !near(soft, (0.9+0.45+0.6)/3) {
		t.Fatalf("hard %v soft %v, want 2/3 and 0.65", hard, soft)
	}
	// Two equally right images whose probabilities wobble get the same hard reward.
	other := []Answer{{Yes: 0.7, No: 0.3}, {Yes: 0.2, No: 0.8}, {Yes: 0.99, No: 0.01}}
	if h2, _ := (VQARule{Hard: true}).Reward(p, Raw{Answers: other}); h2 != hard {
		t.Fatalf("hard rewards %v and %v differ for the same decisions", hard, h2)
	}
	if v, ok := (VQARule{Hard: true}).Shortcut(prompts.Prompt{TaskType: prompts.Spatial}); !ok || v != 0 {
		t.Fatalf("hard rule changed the spatial shortcut: %v %v", v, ok)
	}
}

func TestORMRule(t *testing.T) {
	p := prompts.Prompt{Prompt: "a red circle", TaskType: prompts.Color}
	r := ORMRule{}
	if qs := r.Questions(p); len(qs) != 1 || qs[0] != ORMQuestion {
		t.Fatalf("questions %q", qs)
	}
	for _, tc := range []struct {
		a    Answer
		want float64
	}{{Answer{Yes: 0.6, No: 0.2}, 0.75}, {Answer{Yes: 0, No: 1}, 0}, {Answer{Yes: 1, No: 0}, 1}} {
		got, err := r.Reward(p, Raw{Answers: []Answer{tc.a}})
		if err != nil || !near(got, tc.want) {
			t.Fatalf("%+v: reward %v err %v, want %v", tc.a, got, err, tc.want)
		}
	}
	if _, err := r.Reward(p, Raw{Answers: []Answer{{Yes: 1}, {Yes: 1}}}); err == nil {
		t.Fatal("two answers accepted")
	}
}

func TestHPSRule(t *testing.T) {
	p := prompts.Prompt{Prompt: "a red circle"}
	s := func(v float64) *float64 { return &v }
	for _, tc := range []struct {
		rule HPSRule
		raw  float64
		want float64
	}{
		{DefaultHPSRule(), 0, 0.5},
		{DefaultHPSRule(), math.Log(3), 0.75},
		{HPSRule{Offset: 0.27, Scale: 0.03}, 0.27, 0.5},
		{HPSRule{Offset: 0.27, Scale: 0.03}, 0.27 + 0.03*math.Log(3), 0.75},
	} {
		got, err := tc.rule.Reward(p, Raw{Score: s(tc.raw)})
		if err != nil || !near(got, tc.want) {
			t.Fatalf("%+v(%v) = %v, %v; want %v", tc.rule, tc.raw, got, err, tc.want)
		}
	}
	if _, err := (HPSRule{}).Reward(p, Raw{Score: s(1)}); err == nil {
		t.Fatal("zero scale accepted")
	}
	if _, err := DefaultHPSRule().Reward(p, Raw{}); err == nil {
		t.Fatal("missing score accepted")
	}
}

func TestNormNoun(t *testing.T) {
	for in, want := range map[string]string{"Circles": "circle", "crosses": "cross", "cross": "cross", "square": "square", " diamonds ": "diamond", "bus": "bus", "glass": "glass", "boxes": "box"} {
		if got := NormNoun(in); got != want {
			t.Errorf("NormNoun(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestValidateRaw(t *testing.T) {
	nan := math.NaN()
	one := 1.0
	inf := math.Inf(1)
	q1 := Query{Questions: []string{"red circle?"}}
	tests := []struct {
		name string
		out  Output
		q    Query
		raw  Raw
		ok   bool
	}{
		{"boxes ok", OutputBoxes, Query{}, Raw{Boxes: []Box{cell("circle", 0.5, 0, 0)}}, true},
		{"no boxes ok", OutputBoxes, Query{}, Raw{}, true},
		{"box NaN score", OutputBoxes, Query{}, Raw{Boxes: []Box{cell("circle", nan, 0, 0)}}, false},
		{"box score > 1", OutputBoxes, Query{}, Raw{Boxes: []Box{cell("circle", 1.5, 0, 0)}}, false},
		{"box outside image", OutputBoxes, Query{}, Raw{Boxes: []Box{{Label: "c", Score: 0.5, Box: [4]float64{0, 0, 1.2, 1}}}}, false},
		{"box inverted", OutputBoxes, Query{}, Raw{Boxes: []Box{{Label: "c", Score: 0.5, Box: [4]float64{0.5, 0, 0.2, 1}}}}, false},
		{"box no label", OutputBoxes, Query{}, Raw{Boxes: []Box{cell("", 0.5, 0, 0)}}, false},
		{"boxes with score", OutputBoxes, Query{}, Raw{Score: &one}, false},
		{"answers ok", OutputAnswers, q1, Raw{Answers: []Answer{{Yes: 0.4, No: 0.5}}}, true},
		{"answers count", OutputAnswers, q1, Raw{Answers: []Answer{{Yes: 0.4, No: 0.5}, {Yes: 1}}}, false},
		{"answers NaN", OutputAnswers, q1, Raw{Answers: []Answer{{Yes: nan, No: 0.5}}}, false},
		{"answers negative", OutputAnswers, q1, Raw{Answers: []Answer{{Yes: -0.1, No: 0.5}}}, false},
		{"answers zero mass", OutputAnswers, q1, Raw{Answers: []Answer{{}}}, false},
		{"score ok", OutputScore, Query{}, Raw{Score: &one}, true},
		{"score missing", OutputScore, Query{}, Raw{}, false},
		{"score Inf", OutputScore, Query{}, Raw{Score: &inf}, false},
		{"unknown kind", Output("mask"), Query{}, Raw{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateRaw(tc.out, tc.q, tc.raw)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
