package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/experts"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/runfiles"
	"github.com/bicot-rl/bicot/pkg/store/local"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// processRun is what the tests that run the binaries as separate processes share: the
// repository root, the four binaries built from it, and a tiny policy and expert set to run with.
type processRun struct {
	root      string
	bins      map[string]string
	policy    string
	expertDir string
}

// newProcessRun builds the four binaries into tmp/bin and writes a tiny policy and experts
// trained for three steps into tmp.
func newProcessRun(ctx context.Context, t *testing.T, tmp string) processRun {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	r := processRun{root: root, bins: map[string]string{}}
	for _, b := range []string{"coordinator", "rollout-worker", "reward-worker", "learner"} {
		out := filepath.Join(tmp, "bin", b)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./"+b)
		cmd.Dir = root
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b, err, msg)
		}
		r.bins[b] = out
	}
	backend, err := mlx.NewBackend("")
	if err != nil {
		t.Fatal(err)
	}
	cb, err := vq.Load(filepath.Join(root, "models/codebook.vq"))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := model.TinyCheckpoint(backend, cb, 5)
	if err != nil {
		t.Fatal(err)
	}
	r.policy = filepath.Join(tmp, "policy.safetensors")
	if err := os.WriteFile(r.policy, pol, 0o644); err != nil {
		t.Fatal(err)
	}
	r.expertDir = filepath.Join(tmp, "experts")
	if err := experts.TrainAll(ctx, backend, r.expertDir, experts.TrainOptions{Seed: 1, Steps: 3, Log: zerolog.Nop()}); err != nil {
		t.Fatal(err)
	}
	return r
}

// metricsRecords reads a run's metrics records (one per learned step) from the store dir holds.
func metricsRecords(t *testing.T, dir, run string) []json.RawMessage {
	t.Helper()
	st, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := runfiles.ReadMetrics(context.Background(), st, run)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// readURLFile waits for `coordinator nats-server --url-file path` to write its client URL.
func readURLFile(ctx context.Context, t *testing.T, path string) string {
	t.Helper()
	for {
		if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			return strings.TrimSpace(string(b))
		}
		if ctx.Err() != nil {
			t.Fatal("nats-server did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
