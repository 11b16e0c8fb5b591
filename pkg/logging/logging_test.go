package logging

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Console logs written to a buffer or a file carry no colour codes (they are read as text, by
// people and by grep); the component field is on the line.
func TestConsoleWithoutTerminalIsPlain(t *testing.T) {
	var b bytes.Buffer
	log, err := New(Options{Out: &b})
	if err != nil {
		t.Fatal(err)
	}
	l := Component(log, "learner")
	l.Info().Int("step", 3).Msg("step learned")
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flog, err := New(Options{Out: f})
	if err != nil {
		t.Fatal(err)
	}
	flog.Warn().Msg("to a file")
	fb, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{b.String(), string(fb)} {
		if strings.Contains(out, "\x1b[") {
			t.Errorf("colour codes in %q", out)
		}
	}
	if !strings.Contains(b.String(), "component=learner") || !strings.Contains(b.String(), "step=3") {
		t.Errorf("line %q", b.String())
	}
	if _, err := New(Options{Format: "xml"}); err == nil {
		t.Error("format xml accepted")
	}
}
