package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runPrompts(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := promptsCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestPromptsGenerateAndCheck(t *testing.T) {
	dir := t.TempDir()
	if _, err := runPrompts(t, "generate", "--seed", "3", "--out", dir, "--train-per-type", "20", "--eval-per-type", "5"); err != nil {
		t.Fatal(err)
	}
	out, err := runPrompts(t, "check", "--json", filepath.Join(dir, "eval.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"total": 45, "task_types": {"color": 5, "shape": 5, "texture": 5, "spatial": 5, "non": 5, "complex": 5, "numeracy": 5, "object": 5, "knowledge": 5}}` + "\n"
	if out != want {
		t.Fatalf("got %q want %q", out, want)
	}
	out, err = runPrompts(t, "check", filepath.Join(dir, "train.jsonl"))
	if err != nil || !strings.Contains(out, "knowledge 20\n") || !strings.Contains(out, "total     180\n") {
		t.Fatalf("%v\n%s", err, out)
	}
}

func TestPromptsCheckBadLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.jsonl")
	body := `{"prompt": "a circle", "task_type": "object"}` + "\n" + `{"prompt": "a circle", "task_type": "shapes"}` + "\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := runPrompts(t, "check", path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":2: ") || !strings.Contains(err.Error(), `unknown task_type "shapes"`) {
		t.Fatalf("err %v", err)
	}
	if _, err := runPrompts(t, "check"); err == nil {
		t.Fatal("missing FILE accepted")
	}
}
