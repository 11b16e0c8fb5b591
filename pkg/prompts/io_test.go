package prompts

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/scene"
)

// referencePath finds the reference prompt file beside the module root (../shared/data), or
// skips when this checkout has none.
func referencePath(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("module root not found")
		}
		dir = parent
	}
	p := filepath.Join(dir, "..", "shared", "data", "t2i-r1-train-prompts.jsonl")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("reference prompt file absent: %v", err)
	}
	return p
}

func TestReferenceFileLoads(t *testing.T) {
	path := referencePath(t)
	ps, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// 7,222 newlines, and a last line without one: 7,223 prompts.
	if len(ps) != 7223 {
		t.Fatalf("loaded %d prompts, want 7223", len(ps))
	}
	s, err := Check(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"spatial": 2195, "numeracy": 1172, "color": 879, "complex": 700, "non": 700, "texture": 695, "shape": 682, "object": 200}
	if !reflect.DeepEqual(s.TaskTypes, want) || s.Total != 7223 {
		t.Fatalf("summary %+v, want %v", s, want)
	}
	wantJSON := `{"total": 7223, "task_types": {"color": 879, "shape": 682, "texture": 695, "spatial": 2195, "non": 700, "complex": 700, "numeracy": 1172, "object": 200}}`
	if got := s.JSON(); got != wantJSON {
		t.Fatalf("JSON summary\n got %s\nwant %s", got, wantJSON)
	}
	var sum struct {
		Total     int            `json:"total"`
		TaskTypes map[string]int `json:"task_types"`
	}
	if err := json.Unmarshal([]byte(s.JSON()), &sum); err != nil || sum.Total != 7223 || !reflect.DeepEqual(sum.TaskTypes, want) {
		t.Fatalf("JSON summary does not parse back: %v %+v", err, sum)
	}

	// Writing and reading back loses nothing: every line means the same JSON as the original.
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Write(&buf, ps); err != nil {
		t.Fatal(err)
	}
	orig := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	got := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(orig) != len(got) {
		t.Fatalf("%d lines written, %d read", len(got), len(orig))
	}
	for i := range orig {
		var a, b any
		if err := json.Unmarshal([]byte(orig[i]), &a); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(got[i]), &b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("line %d changed:\n%s\n%s", i+1, orig[i], got[i])
		}
	}
}

func TestExtraFieldsRoundTrip(t *testing.T) {
	in := `{"prompt": "a red circle", "task_type": "color", "zeta": {"k": [1, 2]}, "nouns": ["circle"], "alpha": "x", "spec": {"objects": [{"shape": "circle", "color": "red", "count": 1}]}}` + "\n"
	ps, err := Read(strings.NewReader(in), "in.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	p := ps[0]
	if string(p.Extra["zeta"]) != `{"k": [1, 2]}` || string(p.Extra["alpha"]) != `"x"` {
		t.Fatalf("extra %v", p.Extra)
	}
	if p.Spec == nil || p.Spec.Objects[0].Colour != scene.Red {
		t.Fatalf("spec %+v", p.Spec)
	}
	var buf bytes.Buffer
	if err := Write(&buf, ps); err != nil {
		t.Fatal(err)
	}
	want := `{"prompt":"a red circle","task_type":"color","nouns":["circle"],"spec":{"objects":[{"shape":"circle","color":"red","count":1}]},"alpha":"x","zeta":{"k":[1,2]}}` + "\n"
	if buf.String() != want {
		t.Fatalf("written\n%s\nwant\n%s", buf.String(), want)
	}
	again, err := Read(&buf, "again")
	if err != nil {
		t.Fatal(err)
	}
	var b1, b2 bytes.Buffer
	Write(&b1, ps)
	Write(&b2, again)
	if b1.String() != b2.String() {
		t.Fatal("second round trip differs")
	}
}

func TestMalformed(t *testing.T) {
	good := `{"prompt": "a circle", "task_type": "object", "nouns": ["circle"]}`
	cases := []struct {
		name, line, want string
	}{
		{"bad json", `{"prompt": "a circle", "task_type": `, "bad JSON"},
		{"not an object", `[1, 2]`, "bad JSON"},
		{"null", `null`, "not a JSON object"},
		{"unknown task type", `{"prompt": "a circle", "task_type": "colour"}`, `unknown task_type "colour"`},
		{"missing task type", `{"prompt": "a circle"}`, "task_type is missing"},
		{"missing prompt", `{"task_type": "object", "nouns": ["circle"]}`, "prompt is missing"},
		{"blank prompt", `{"prompt": "  ", "task_type": "object"}`, "prompt is missing or empty"},
		{"prompt wrong type", `{"prompt": 3, "task_type": "object"}`, `field "prompt"`},
		{"nouns wrong type", `{"prompt": "a", "task_type": "object", "nouns": "circle"}`, `field "nouns"`},
		{"spatial incomplete", `{"prompt": "a", "task_type": "spatial", "spatial_info": {"obj1": "circle", "obj2": "square"}}`, "spatial_info.locality"},
		{"numeracy zero", `{"prompt": "no circles", "task_type": "numeracy", "numeracy_info": [{"obj_name": "circle", "num": 0}]}`, "numeracy_info[0].num is 0"},
		{"numeracy fraction", `{"prompt": "a", "task_type": "numeracy", "numeracy_info": [{"obj_name": "circle", "num": 1.5}]}`, `field "numeracy_info"`},
		{"numeracy no name", `{"prompt": "a", "task_type": "numeracy", "numeracy_info": [{"num": 2}]}`, "numeracy_info[0].obj_name"},
		{"bad spec shape", `{"prompt": "a", "task_type": "shape", "spec": {"objects": [{"shape": "hexagon", "count": 1}]}}`, `unknown shape "hexagon"`},
		{"bad spec count", `{"prompt": "a", "task_type": "shape", "spec": {"objects": [{"shape": "circle", "count": 5}]}}`, "at most 4"},
		{"empty spec", `{"prompt": "a", "task_type": "shape", "spec": {"objects": []}}`, "spec: no objects"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := good + "\n\n" + good + "\n" + c.line + "\n" + good + "\n"
			ps, err := Read(strings.NewReader(in), "f.jsonl")
			if err == nil {
				t.Fatal("accepted")
			}
			if ps != nil {
				t.Fatalf("half-loaded %d prompts", len(ps))
			}
			if !strings.HasPrefix(err.Error(), "f.jsonl:4: ") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want prefix f.jsonl:4: and %q", err, c.want)
			}
		})
	}
}

func TestBlankLinesAndEndings(t *testing.T) {
	in := "\xef\xbb\xbf\n" + `{"prompt": "a circle", "task_type": "object"}` + "\r\n   \n" + `{"prompt": "a square", "task_type": "object"}`
	ps, err := Read(strings.NewReader(in), "x")
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[1].Prompt != "a square" {
		t.Fatalf("%+v", ps)
	}
	ps, err = Read(strings.NewReader(""), "empty")
	if err != nil || len(ps) != 0 {
		t.Fatalf("empty file: %v %v", ps, err)
	}
}

func TestWriteRejectsInvalid(t *testing.T) {
	var buf bytes.Buffer
	err := Write(&buf, []Prompt{{Prompt: "a", TaskType: "object"}, {Prompt: "", TaskType: "object"}})
	if err == nil || !strings.Contains(err.Error(), "prompt 1") {
		t.Fatalf("err %v", err)
	}
	err = Write(&buf, []Prompt{{Prompt: "a", TaskType: "object", Extra: map[string]json.RawMessage{"nouns": json.RawMessage(`[]`)}}})
	if err == nil || !strings.Contains(err.Error(), "shadows") {
		t.Fatalf("err %v", err)
	}
}

func TestCheckFileErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.jsonl")
	ps := []Prompt{
		{Prompt: "a red circle", TaskType: Color, Nouns: []string{"circle"}, AttrNouns: []string{"red circle"}},
		{Prompt: "two squares", TaskType: Numeracy, Nouns: []string{"square"}, NumeracyInfo: []NumeracyInfo{{"square", 2}}},
	}
	if err := WriteFile(path, ps); err != nil {
		t.Fatal(err)
	}
	s, err := Check(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Total != 2 || s.TaskTypes[Color] != 1 || s.TaskTypes[Numeracy] != 1 {
		t.Fatalf("%+v", s)
	}
	if s.JSON() != `{"total": 2, "task_types": {"color": 1, "numeracy": 1}}` {
		t.Fatal(s.JSON())
	}
	back, err := ReadFile(path)
	if err != nil || !reflect.DeepEqual(back, ps) {
		t.Fatalf("read back %+v %v", back, err)
	}
	if _, err := Check(filepath.Join(dir, "missing.jsonl")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestInReportOrder(t *testing.T) {
	got := InReportOrder(map[string]int{"zeta": 1, Knowledge: 2, Color: 3, "alpha": 4, Spatial: 5})
	want := []string{Color, Spatial, Knowledge, "alpha", "zeta"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
}
