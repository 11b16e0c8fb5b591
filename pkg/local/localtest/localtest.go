// Package localtest is what the pipeline tests share, in pkg/local and in e2e/: real models, small
// (the codebook, a tiny policy, briefly trained experts), a run config sized for tests, and the
// assertion that every step learned exactly its complete groups.
package localtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomlx/gomlx/backends"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/experts"
	"github.com/bicot-rl/bicot/pkg/learner"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// Env is one backend, the codebook, a tiny policy checkpoint and an ensemble of briefly trained
// experts.
type Env struct {
	Backend  backends.Backend
	Codebook *vq.Codebook
	Policy   []byte
	Ensemble *reward.Ensemble
}

// Shared builds the Env once and hands the same one to every caller: a test binary declares one
// (training the experts takes seconds) and no caller mutates it.
type Shared struct {
	once sync.Once
	env  Env
	err  error
}

// Get returns the shared Env, building it on first use.
func (s *Shared) Get(t testing.TB) Env {
	t.Helper()
	root := RepoRoot(t)
	s.once.Do(func() { s.env, s.err = build(root) })
	if s.err != nil {
		t.Fatal(s.err)
	}
	return s.env
}

func build(root string) (Env, error) {
	var e Env
	var err error
	if e.Backend, err = mlx.NewBackend(""); err != nil {
		return e, err
	}
	if e.Codebook, err = vq.Load(filepath.Join(root, "models/codebook.vq")); err != nil {
		return e, err
	}
	if e.Policy, err = model.TinyCheckpoint(e.Backend, e.Codebook, 7); err != nil {
		return e, err
	}
	dir, err := os.MkdirTemp("", "bicot-experts-")
	if err != nil {
		return e, err
	}
	defer os.RemoveAll(dir)
	if err := experts.TrainAll(context.Background(), e.Backend, dir, experts.TrainOptions{Seed: 1, Steps: 3, Log: zerolog.Nop()}); err != nil {
		return e, err
	}
	if e.Ensemble, _, err = experts.LocalEnsemble(e.Backend, dir); err != nil {
		return e, err
	}
	return e, nil
}

// RepoRoot is the module root above the test's directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}

// Config is a run of steps steps sized for tests (P 3 x G 4, short plans, fast heartbeats), named
// after the test, over the repository's training prompts and codebook, without evaluation.
func Config(t testing.TB, steps int) config.Config {
	root := RepoRoot(t)
	c := config.Default()
	c.RunID = "t" + strings.ReplaceAll(strings.ToLower(t.Name()), "/", "-")
	if len(c.RunID) > 40 {
		c.RunID = c.RunID[:40]
	}
	c.Prompts = filepath.Join(root, "data/prompts/train.jsonl")
	c.Codebook = filepath.Join(root, "models/codebook.vq")
	c.PromptsPerStep, c.GroupSize, c.PromptsPerTask, c.Steps = 3, 4, 2, steps
	c.Sampling.MaxPlanTokens = 6
	c.CheckpointEvery = 2
	c.Wire.Heartbeat = config.Duration(200 * time.Millisecond)
	c.Wire.AckWait = config.Duration(30 * time.Second)
	c.Eval.LimitPerType = 0
	return c
}

// CheckLearned asserts that every step learned exactly P complete groups of G distinct samples.
func CheckLearned(t *testing.T, c config.Config, a learner.Accounting) {
	t.Helper()
	if len(a.Learned) != c.Steps {
		t.Fatalf("learned %d steps, want %d", len(a.Learned), c.Steps)
	}
	for step := range int64(c.Steps) {
		gs := a.Learned[step]
		if len(gs) != c.PromptsPerStep {
			t.Errorf("step %d learned %d groups, want %d", step, len(gs), c.PromptsPerStep)
		}
		seen := map[int]bool{}
		for _, g := range gs {
			if seen[g.PromptIndex] {
				t.Errorf("step %d learned prompt %d twice", step, g.PromptIndex)
			}
			seen[g.PromptIndex] = true
			if g.Samples != c.GroupSize {
				t.Errorf("step %d prompt %d: %d samples, want %d", step, g.PromptIndex, g.Samples, c.GroupSize)
			}
			for i, idx := range g.SampleIndices {
				if idx != i {
					t.Errorf("step %d prompt %d: sample indices %v, want 0..%d once each", step, g.PromptIndex, g.SampleIndices, c.GroupSize-1)
					break
				}
			}
			if n := a.Received[bus.GroupKey{Step: step, PromptIndex: g.PromptIndex}]; n != c.GroupSize {
				t.Errorf("step %d prompt %d: accepted %d samples, want %d (each once)", step, g.PromptIndex, n, c.GroupSize)
			}
		}
	}
}
