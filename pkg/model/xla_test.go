//go:build xla

package model

import (
	"math"
	"os"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/mlx"
)

// The XLA backend (GPU nodes, built with -tags xla) runs the same policy: sampling on XLA gives
// log-probs that the pure-Go backend's scoring of the same sequences reproduces. The backend is
// $BICOT_XLA_TEST_BACKEND (default xla:cpu); without a PJRT plugin the test checks that the
// error says so and skips. gomlx downloads missing plugins unless GOMLX_NO_AUTO_INSTALL is set
// when the process starts, so the test only runs with it set or with an explicit backend.
func TestXLAMatchesGoBackend(t *testing.T) {
	_, noInstall := os.LookupEnv("GOMLX_NO_AUTO_INSTALL")
	cfg := os.Getenv("BICOT_XLA_TEST_BACKEND")
	if !noInstall && cfg == "" {
		t.Skip("set GOMLX_NO_AUTO_INSTALL=1 (and PJRT_PLUGIN_LIBRARY_PATH) or BICOT_XLA_TEST_BACKEND to run")
	}
	if cfg == "" {
		cfg = "xla:cpu"
	}
	xb, err := mlx.NewBackend(cfg)
	if err != nil {
		if !strings.Contains(err.Error(), "plugin") {
			t.Fatalf("backend %s failed without naming the missing plugin: %v", cfg, err)
		}
		t.Skipf("no PJRT plugin for %s here: %v", cfg, err)
	}
	goModel := tinyModel(t, 11)
	xm, err := New(xb, tinyConfig(), 11)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []float64{0, 3} {
		samples, err := xm.Sample(SampleRequest{Prompts: tinyPrompts, G: 2, Seed: 5, CFGWeight: w})
		if err != nil {
			t.Fatal(err)
		}
		seqs := make([][]int32, len(samples))
		for i, s := range samples {
			seqs[i] = s.Tokens
		}
		text, image, err := goModel.Score(seqs, ScoreOptions{CFGWeight: w})
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range samples {
			for p := range s.ImageLogp {
				if d := math.Abs(float64(s.ImageLogp[p] - image[i][p])); d > 1e-3 {
					t.Fatalf("cfg %g sample %d image %d: xla %g, go %g", w, i, p, s.ImageLogp[p], image[i][p])
				}
			}
			for p := range s.TextLogp {
				if s.TextMask[p] == 1 && math.Abs(float64(s.TextLogp[p]-text[i][p])) > 1e-3 {
					t.Fatalf("cfg %g sample %d text %d: xla %g, go %g", w, i, p, s.TextLogp[p], text[i][p])
				}
			}
		}
	}
}
