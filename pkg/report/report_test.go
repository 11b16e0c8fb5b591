package report_test

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/report"
	"github.com/bicot-rl/bicot/pkg/runfiles"
	"github.com/bicot-rl/bicot/pkg/store"
	"github.com/bicot-rl/bicot/pkg/store/local"
)

func group(prompt, task string) runfiles.SampleGroup {
	return runfiles.SampleGroup{Prompt: prompt, TaskType: task}
}

func TestPairs(t *testing.T) {
	first := &runfiles.StepSamples{Groups: []runfiles.SampleGroup{group("a red ball", "color"), group("two cubes", "numeracy"),
		group("a cone above a ball", "spatial"), group("a striped cube", "texture")}}
	last := &runfiles.StepSamples{Groups: []runfiles.SampleGroup{group("three balls", "numeracy"), group("a red ball", "color"),
		group("a green cube", "color"), group("a ball far from a cube", "non")}}
	got := report.Pairs(first, last)
	want := []struct{ after, before, match string }{
		{"three balls", "two cubes", "same task type"},
		{"a red ball", "a red ball", "same prompt"},
		{"a green cube", "a cone above a ball", ""}, // the only colour group went to its own prompt
		{"a ball far from a cube", "a striped cube", ""},
	}
	for i, w := range want {
		p := got[i]
		if p.After.Prompt != w.after || p.Before == nil || p.Before.Prompt != w.before || p.Match != w.match {
			t.Errorf("pair %d: %+v / %+v (%q), want %q / %q (%q)", i, p.After, p.Before, p.Match, w.after, w.before, w.match)
		}
	}
	if only := report.Pairs(first, nil); len(only) != 4 || only[0].After != nil {
		t.Errorf("one kept step: %+v", only)
	}
}

func put(t *testing.T, st store.Store, key string, b []byte) {
	t.Helper()
	if err := st.Put(context.Background(), key, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
}

// Text from the run's files is escaped: a prompt or expert name cannot inject markup into the
// page. A run without eval.json has no oracle section; one without metrics has no report.
func TestReportEscapesAndOmits(t *testing.T) {
	ctx := context.Background()
	st, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := report.Build(ctx, st, "r"); err == nil {
		t.Error("a report of a run without metrics was built")
	}
	put(t, st, "r/metrics.jsonl", []byte(`{"step":0,"stats":{"reward_mean":0.5},"per_expert":{"<script>alert(1)</script>":0.5}}`+"\n"))
	var pngBuf bytes.Buffer
	if err := png.Encode(&pngBuf, image.NewRGBA(image.Rect(0, 0, 32, 32))); err != nil {
		t.Fatal(err)
	}
	idx := runfiles.StepSamples{Run: "r", Groups: []runfiles.SampleGroup{{Prompt: `a <img src=x onerror=alert(1)> ball`,
		Samples: []runfiles.SampleRecord{{Image: "p0-s0.png", Plan: `"><script>alert(2)</script>`}}}}}
	if err := runfiles.PutSamples(ctx, st, idx, map[string][]byte{"p0-s0.png": pngBuf.Bytes()}); err != nil {
		t.Fatal(err)
	}
	r, err := report.Build(ctx, st, "r")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := r.WriteHTML(&out); err != nil {
		t.Fatal(err)
	}
	page := out.String()
	for _, bad := range []string{"<script>", "<img src=x", `"><script>`} {
		if strings.Contains(page, bad) {
			t.Errorf("the page holds %q unescaped", bad)
		}
	}
	if strings.Contains(page, `id="oracle"`) {
		t.Error("an oracle section without eval.json")
	}
	if !strings.Contains(page, `src="data:image/png;base64,`) || !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("the page lacks the sample image or the escaped expert name")
	}
}
