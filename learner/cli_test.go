package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// execute runs cmd with args and returns its error.
func execute(cmd *cobra.Command, args ...string) error {
	cmd.SetArgs(args)
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	return cmd.Execute()
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "settings.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// --config files set what they name and flags win over them, whichever comes first on the line.
// The settings are checked before any work starts, so the error tells which values arrived.
func TestFlagsOverrideConfigFiles(t *testing.T) {
	for _, tc := range []struct {
		name string
		sub  string
		file string
		args []string
		want string
	}{
		{"pretrain file", "pretrain", "steps: 3\nwarmup: -1\n", nil, "warmup -1 < 0"},
		{"pretrain flag wins", "pretrain", "steps: 0\nwarmup: -1\n", []string{"--steps", "3"}, "warmup -1 < 0"},
		{"pretrain flag first", "pretrain", "steps: 3\n", []string{"--steps", "0"}, "steps 0 < 1"},
		{"pretrain typo", "pretrain", "stepz: 3\n", nil, "settings.yaml"},
		{"codebook file", "codebook", "heldout: 0\n", nil, "heldout 0 < 1"},
		{"codebook flag wins", "codebook", "heldout: 0\nk: 0\n", []string{"--heldout", "2"}, "k 0 < 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, tc.file)
			args := append(append([]string{tc.sub}, tc.args...), "--config", path, "--log-level", "warn")
			if err := execute(newRoot(), args...); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v: error %v, want one with %q", args, err, tc.want)
			}
		})
	}
}

func TestCommandsCheckTheirArguments(t *testing.T) {
	if err := execute(newRoot(), "compare", "only-one.json"); err == nil {
		t.Error("compare with one file accepted")
	}
	if err := execute(newRoot(), "results"); err == nil {
		t.Error("results without a directory accepted")
	}
	if err := execute(newRoot(), "eval", "--g", "0", "--log-level", "warn"); err == nil || !strings.Contains(err.Error(), "g (0)") {
		t.Errorf("eval --g 0: %v", err)
	}
}
