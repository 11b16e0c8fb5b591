package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPlacementsTable(t *testing.T) {
	dir := t.TempDir()
	promptsPath := filepath.Join(dir, "p.jsonl")
	// One spatial prompt and one without a relation (its samples are not counted).
	ps := `{"prompt":"a red circle left of a cross","task_type":"spatial","spec":{"objects":[{"shape":"circle","color":"red","count":1},{"shape":"cross","count":1}],"relations":[{"a":0,"b":1,"rel":"left of"}]}}
{"prompt":"a red circle","task_type":"color","spec":{"objects":[{"shape":"circle","color":"red","count":1}]}}
`
	if err := os.WriteFile(promptsPath, []byte(ps), 0o644); err != nil {
		t.Fatal(err)
	}
	samples := strings.Join([]string{
		// a1 is left of c1: the asked relation holds.
		`{"prompt":"a red circle left of a cross","plan":"small red solid circle a1, large blue solid cross c1"}`,
		// c3 is below c1: "a below b".
		`{"prompt":"a red circle left of a cross","plan":"small red solid circle c3, large blue solid cross c1"}`,
		// Objects in the other order: skipped.
		`{"prompt":"a red circle left of a cross","plan":"large blue solid cross c1, small red solid circle a1"}`,
		`{"prompt":"a red circle left of a cross","plan":"not a plan"}`,
		`{"prompt":"a red circle","plan":"small red solid circle a1"}`,
	}, "\n")
	var out bytes.Buffer
	if err := run(promptsPath, strings.NewReader(samples), &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		"| left of | 2 | 0.50 | 0.00 | 0.00 | 0.50 | 0.00 | 0.50 | 0.19 |",
		"| two uniform cells | - | 0.19 | 0.19 | 0.19 | 0.19 | 0.23 | - | - |",
		"2 plans skipped",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if err := run(promptsPath, strings.NewReader(`{"prompt":"a blue square","plan":""}`), &out); err == nil || !strings.Contains(err.Error(), "a blue square") {
		t.Errorf("unknown prompt: err %v, want one naming the prompt", err)
	}
	if err := run(promptsPath, strings.NewReader(`{"prompt":`), &out); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("broken line: err %v, want one naming line 1", err)
	}
}
