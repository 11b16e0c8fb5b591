package ckpt_test

import (
	"context"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/ckpt"
	"github.com/bicot-rl/bicot/pkg/store/local"
)

// TestLoadProgress: a checkpoint's clock is read back; one without (an older checkpoint) starts
// at zero; a malformed or impossible one is refused naming the part.
func TestLoadProgress(t *testing.T) {
	ctx := context.Background()
	st, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	save := func(step int64, progress string) ckpt.Manifest {
		t.Helper()
		parts := map[string][]byte{ckpt.PartWeights: []byte("w")}
		if progress != "" {
			parts[ckpt.PartProgress] = []byte(progress)
		}
		m, err := ckpt.Save(ctx, st, "r", step, parts, ckpt.Meta{PolicyVersion: step + 1})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if p, err := ckpt.LoadProgress(ctx, st, save(0, "")); err != nil || p != (ckpt.Progress{}) {
		t.Errorf("no progress part: %+v, %v", p, err)
	}
	want := ckpt.Progress{ElapsedSeconds: 12.5, LastStepSeconds: 2, Final: true}
	if p, err := ckpt.LoadProgress(ctx, st, save(1, `{"elapsed_seconds":12.5,"last_step_seconds":2,"final":true}`)); err != nil || p != want {
		t.Errorf("progress %+v, %v; want %+v", p, err, want)
	}
	for i, bad := range []string{`{"elapsed_seconds":`, `{"elapsed_seconds":-1}`, `{"elapsed_seconds":1,"last_step_seconds":2}`} {
		_, err := ckpt.LoadProgress(ctx, st, save(int64(2+i), bad))
		if err == nil || !strings.Contains(err.Error(), "progress") {
			t.Errorf("%s: %v, want an error naming the progress part", bad, err)
		}
	}
}
