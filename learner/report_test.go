package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/net/html"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/local"
	"github.com/bicot-rl/bicot/pkg/local/localtest"
)

var sharedEnv localtest.Shared

// attr returns n's attribute key ("" when absent).
func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// find returns the elements under n for which ok holds, in document order.
func find(n *html.Node, ok func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	for c := range n.Descendants() {
		if c.Type == html.ElementNode && ok(c) {
			out = append(out, c)
		}
	}
	return out
}

func byID(t *testing.T, doc *html.Node, id string) *html.Node {
	t.Helper()
	ns := find(doc, func(n *html.Node) bool { return attr(n, "id") == id })
	if len(ns) != 1 {
		t.Fatalf("report: %d elements with id %q, want 1", len(ns), id)
	}
	return ns[0]
}

func tag(name string) func(*html.Node) bool { return func(n *html.Node) bool { return n.Data == name } }

// TestReportOfALaptopRun writes the report of a three-step laptop run with its oracle evaluation
// (samples kept at steps 0 and 2) and reads it back as HTML: the summary, the four charts with a
// point per step on each line, the oracle's bars and table for every task type, and the before
// and after grid of P*G samples each, every image a data: URI holding a 32x32 PNG; nothing refers
// outside the file.
func TestReportOfALaptopRun(t *testing.T) {
	e := sharedEnv.Get(t)
	c := localtest.Config(t, 3)
	c.SamplesEvery = 2
	c.Eval = config.Eval{Prompts: filepath.Join(localtest.RepoRoot(t), "data/prompts/eval.jsonl"), LimitPerType: 1, G: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := local.Run(ctx, local.Options{Config: c, RolloutWorkers: 1, RewardWorkers: 1, Out: t.TempDir(), Backend: e.Backend,
		Ensemble: e.Ensemble, InitPolicy: e.Policy, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "report.html")
	if err := execute(newRoot(), "report", res.Dir, "--out", out, "--log-level", "error"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if s := byID(t, doc, "summary"); !strings.Contains(textOf(s), c.RunID) || !strings.Contains(textOf(s), "oracle mean") {
		t.Errorf("summary: %q", textOf(s))
	}
	for _, id := range []string{"reward", "kl", "loss", "timing"} {
		lines := find(byID(t, doc, id), func(n *html.Node) bool { return n.Data == "path" && attr(n, "class") == "line" })
		if len(lines) == 0 {
			t.Errorf("chart %s: no lines", id)
		}
		for _, l := range lines {
			if pts := strings.Count(attr(l, "d"), "L") + 1; pts != c.Steps {
				t.Errorf("chart %s: a line of %d points, want one per step (%d)", id, pts, c.Steps)
			}
		}
		if id == "reward" && len(lines) < 5 {
			t.Errorf("reward chart: %d lines, want the total and one per expert (4)", len(lines))
		}
	}
	oracle := byID(t, doc, "oracle")
	rows := find(oracle, tag("tr"))
	bars := find(oracle, tag("rect"))
	if len(rows) != 9+2 || len(bars) != 2*9 {
		t.Errorf("oracle: %d table rows and %d bars, want 9 task types (+ header and mean) and 2 bars each", len(rows), len(bars))
	}
	samples := byID(t, doc, "samples")
	if h := textOf(find(samples, tag("h2"))[0]); !strings.Contains(h, "step 0 and step 2") {
		t.Errorf("samples heading %q, want steps 0 and 2", h)
	}
	imgs := find(doc, tag("img"))
	if want := 2 * c.PromptsPerStep * c.GroupSize; len(imgs) != want {
		t.Errorf("%d images, want the P*G of both kept steps (%d)", len(imgs), want)
	}
	for _, img := range imgs {
		data, ok := strings.CutPrefix(attr(img, "src"), "data:image/png;base64,")
		if !ok {
			t.Fatalf("image src %.60q: want a PNG data: URI", attr(img, "src"))
		}
		raw, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			t.Fatal(err)
		}
		if im, err := png.Decode(bytes.NewReader(raw)); err != nil || im.Bounds().Dx() != 32 || im.Bounds().Dy() != 32 {
			t.Fatalf("embedded image: %v (%v), want a 32x32 PNG", im, err)
		}
	}
	// Self-contained: no script, stylesheet link or URL other than data: URIs.
	if n := len(find(doc, func(n *html.Node) bool { return n.Data == "script" || n.Data == "link" })); n > 0 {
		t.Errorf("%d script or link elements, want none", n)
	}
	for _, n := range find(doc, func(n *html.Node) bool { return attr(n, "href") != "" || attr(n, "src") != "" }) {
		if u := attr(n, "href") + attr(n, "src"); !strings.HasPrefix(u, "data:") {
			t.Errorf("<%s> refers to %q", n.Data, u)
		}
	}

	// The same report on stdout.
	root := newRoot()
	var stdout bytes.Buffer
	root.SetArgs([]string{"report", res.Dir, "--out", "-", "--log-level", "error"})
	root.SetOut(&stdout)
	if err := root.Execute(); err != nil || !bytes.Contains(stdout.Bytes(), []byte(`id="oracle"`)) {
		t.Errorf("report --out -: %v, %d bytes", err, stdout.Len())
	}
	if err := execute(newRoot(), "report", filepath.Join(filepath.Dir(res.Dir), "no-such-run"), "--out", "-"); err == nil {
		t.Error("the report of a missing run was written")
	}
}

func textOf(n *html.Node) string {
	var b strings.Builder
	for c := range n.Descendants() {
		if c.Type == html.TextNode {
			b.WriteString(c.Data)
		}
	}
	return b.String()
}
