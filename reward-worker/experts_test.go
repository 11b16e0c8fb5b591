package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/bicot-rl/bicot/pkg/experts"
	"github.com/bicot-rl/bicot/pkg/porttest"
	"github.com/bicot-rl/bicot/pkg/reward"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// modelsDir is the committed weights, relative to this package.
const modelsDir = "../models/experts"

func needModels(t *testing.T) {
	t.Helper()
	for _, n := range experts.Names {
		if _, err := os.Stat(experts.WeightsPath(modelsDir, n)); err != nil {
			t.Skipf("no trained experts: %v", err)
		}
	}
}

func TestServeExpertCommand(t *testing.T) {
	needModels(t)
	addr := porttest.Addr(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd, sub := newRoot(), "serve-expert"
	cmd.SetArgs([]string{sub, "--expert", "hps", "--addr", addr, "--models", modelsDir, "--log-level", "error"})
	cmd.SetContext(ctx)
	done := make(chan error, 1)
	go func() { done <- cmd.Execute() }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve-expert: %v", err)
		}
	}()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	r, err := reward.NewRemoteBackend(reward.RemoteConfig{URL: "http://" + addr, Output: reward.OutputScore, Retries: 20, Backoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Client: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := r.Info(ctx)
	if err != nil || info.Name != "hps" || info.Output != reward.OutputScore {
		t.Fatalf("info %+v, %v", info, err)
	}
}

func TestServeExpertRejectsUnknownExpert(t *testing.T) {
	cmd, sub := newRoot(), "serve-expert"
	cmd.SetArgs([]string{sub, "--expert", "clip"})
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), `"clip"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestExpertsEvalCommand(t *testing.T) {
	needModels(t)
	out := filepath.Join(t.TempDir(), "eval.json")
	cmd, sub := newRoot(), "experts-eval"
	var stdout bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetArgs([]string{sub, "--models", modelsDir, "--n", "32", "--json", out, "--log-level", "error"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep experts.EvalReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.N != 32 || rep.Experts.Detector.F1 <= 0 || rep.Experts.ORM.AUC <= 0 {
		t.Fatalf("report %+v", rep)
	}
}

// `alignment` ranks the shipped base's samples with the shipped experts: a table row per task
// type with the groups used, the JSON with every expert and the ensemble total.
func TestAlignmentCommand(t *testing.T) {
	needModels(t)
	out := filepath.Join(t.TempDir(), "alignment.json")
	cmd, sub := newRoot(), "alignment"
	var stdout bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetArgs([]string{sub, "--models", modelsDir, "--policy", "../models/base.safetensors", "--codebook", "../models/codebook.vq",
		"--prompts", "../data/prompts/eval.jsonl", "--limit", "2", "--g", "4", "--json", out, "--log-level", "error"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "within-group Spearman") || !strings.Contains(stdout.String(), "\nall ") {
		t.Fatalf("table:\n%s", stdout.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var a struct {
		Overall map[string]float64 `json:"overall"`
		Samples int                `json:"samples"`
	}
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatal(err)
	}
	if a.Samples != 4*2*9 || len(a.Overall) != 1+len(experts.Names) {
		t.Fatalf("alignment %+v", a)
	}
	for name, v := range a.Overall {
		if !(v >= -1 && v <= 1) {
			t.Fatalf("%s: %v", name, v)
		}
	}
}
