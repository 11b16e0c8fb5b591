package bench

import (
	"errors"
	"os"
	"path/filepath"
)

// RepoRoot finds the repository (the directory holding go.mod) from the working directory up, so
// the shipped models and prompts are found from any package's test.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "models", "base.safetensors")); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("bench: no repository root (go.mod beside models/) above the working directory")
		}
		dir = parent
	}
}
