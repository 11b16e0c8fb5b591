package runfiles_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/runfiles"
	"github.com/bicot-rl/bicot/pkg/store"
	"github.com/bicot-rl/bicot/pkg/store/local"
)

func newStore(t *testing.T) store.Store {
	t.Helper()
	st, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func put(t *testing.T, st store.Store, key string, b []byte) {
	t.Helper()
	if err := st.Put(context.Background(), key, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
}

var fakePNG = []byte("\x89PNG\r\n\x1a\nrest")

func index(run string, step int64) runfiles.StepSamples {
	return runfiles.StepSamples{Run: run, Step: step, Groups: []runfiles.SampleGroup{{PromptIndex: 3, Prompt: "a red ball",
		Samples: []runfiles.SampleRecord{{SampleIndex: 0, Image: runfiles.ImageName(3, 0)}, {SampleIndex: 1, Image: runfiles.ImageName(3, 1)}}}}}
}

func TestSamplesRoundTrip(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	imgs := map[string][]byte{"p3-s0.png": fakePNG, "p3-s1.png": fakePNG}
	for _, step := range []int64{10, 0, 2} {
		if err := runfiles.PutSamples(ctx, st, index("r", step), imgs); err != nil {
			t.Fatal(err)
		}
	}
	// A step whose index is not written yet (the learner writes it last) is not listed.
	put(t, st, "r/samples/step-000000000005/p3-s0.png", fakePNG)
	steps, err := runfiles.SampleSteps(ctx, st, "r")
	if err != nil || !slices.Equal(steps, []int64{0, 2, 10}) {
		t.Fatalf("steps %v (%v), want [0 2 10]", steps, err)
	}
	if _, err := st.Stat(ctx, "r/samples/step-000000000010/index.json"); err != nil {
		t.Errorf("index key: %v", err)
	}
	got, err := runfiles.ReadSamples(ctx, st, "r", 10)
	if err != nil || got.Step != 10 || len(got.Groups) != 1 || got.Groups[0].Prompt != "a red ball" {
		t.Fatalf("read back %+v (%v)", got, err)
	}
	b, err := runfiles.ReadImage(ctx, st, "r", 10, "p3-s1.png")
	if err != nil || !bytes.Equal(b, fakePNG) {
		t.Errorf("image: %q %v", b, err)
	}
	for _, bad := range []string{"../../metrics.jsonl", "index.json", "p3-s1.png/..", "p3-s1.PNG", ""} {
		if _, err := runfiles.ReadImage(ctx, st, "r", 10, bad); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("image name %q: %v, want not found", bad, err)
		}
	}
}

func TestPutSamplesRefusesMismatches(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	for name, imgs := range map[string]map[string][]byte{
		"missing image": {"p3-s0.png": fakePNG},
		"extra image":   {"p3-s0.png": fakePNG, "p3-s1.png": fakePNG, "p4-s0.png": fakePNG},
	} {
		if err := runfiles.PutSamples(ctx, st, index("r", 1), imgs); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	bad := index("r", 1)
	bad.Groups[0].Samples[0].Image = "../x.png"
	if err := runfiles.PutSamples(ctx, st, bad, map[string][]byte{"../x.png": fakePNG, "p3-s1.png": fakePNG}); err == nil {
		t.Error("an image name outside the folder was accepted")
	}
	if objs, _ := st.List(ctx, "r/"); len(objs) != 0 {
		t.Errorf("refused writes left %d objects", len(objs))
	}
	// An index naming a path is refused when read too (a store written by someone else).
	b, _ := json.Marshal(bad)
	put(t, st, runfiles.IndexKey("r", 1), b)
	if _, err := runfiles.ReadSamples(ctx, st, "r", 1); err == nil {
		t.Error("a hostile index was read")
	}
}

func TestReadMetricsSkipsBrokenLines(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	if _, err := runfiles.ReadMetrics(ctx, st, "r"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("no metrics: %v, want not found", err)
	}
	put(t, st, "r/metrics.jsonl", []byte("{\"step\":0}\n\n{\"step\":1}\n{\"step\":2,\"cut sh\n"))
	recs, err := runfiles.ReadMetrics(ctx, st, "r")
	if err != nil || len(recs) != 2 || string(recs[1]) != `{"step":1}` {
		t.Errorf("records %q (%v), want steps 0 and 1", recs, err)
	}
	put(t, st, "r/eval.json", []byte(`{"final": {"mean": 0.5}}`))
	if e, err := runfiles.ReadEval(ctx, st, "r"); err != nil || !strings.Contains(string(e), "0.5") {
		t.Errorf("eval %s %v", e, err)
	}
	put(t, st, "r/samples/step-000000000001/p0-s0.png", bytes.Repeat([]byte("x"), runfiles.MaxImageBytes+1))
	if _, err := runfiles.ReadImage(ctx, st, "r", 1, "p0-s0.png"); !errors.Is(err, runfiles.ErrTooLarge) {
		t.Errorf("oversized image: %v, want ErrTooLarge", err)
	}
}
