// Package browsertest drives a real headless Chromium over the dashboard in tests (chromedp): it
// opens the page, waits until the charts are drawn and the sample images are decoded, and
// collects what a person would see go wrong in the browser's developer tools: console errors,
// uncaught exceptions, failed requests and HTTP error answers.
//
// Chromium is found as $BICOT_CHROMIUM or as chromium, chromium-browser, google-chrome,
// google-chrome-stable or headless-shell on PATH; scripts/test.sh installs Debian's chromium
// package where apt is available. A test skips, saying so, only when none is found.
package browsertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// EnvChromium names the Chromium executable to use instead of looking on PATH.
const EnvChromium = "BICOT_CHROMIUM"

// Find returns the Chromium executable, or "" when there is none.
func Find() string {
	if p := os.Getenv(EnvChromium); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// Browser is one headless Chromium with one tab.
type Browser struct {
	ctx context.Context

	mu       sync.Mutex
	problems []string
}

// New starts a headless Chromium for the test (stopped at its end), or skips the test when no
// Chromium is installed.
func New(t testing.TB) *Browser {
	t.Helper()
	exe := Find()
	if exe == "" {
		t.Skipf("no Chromium found (set $%s or install one: apt-get install -y chromium; scripts/test.sh does): the dashboard's browser test did not run", EnvChromium)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe),
		// Tests run as root in containers, where Chromium's sandbox cannot start.
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1400, 1000))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	b := &Browser{ctx: ctx}
	// The first Run starts the browser; it lives as long as ctx.
	if err := chromedp.Do(ctx); err != nil {
		cancelCtx()
		cancelAlloc()
		t.Fatalf("starting Chromium %s: %v", exe, err)
	}
	if err := chromedp.Listen(ctx, b.record); err != nil {
		t.Fatalf("listening to Chromium: %v", err)
	}
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	return b
}

// record keeps what goes wrong in the page. It runs on chromedp's reading goroutine: no calls
// into the browser here.
func (b *Browser) record(ev any) {
	var p string
	switch e := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert {
			var args []string
			for _, a := range e.Args {
				if a.Description != "" {
					args = append(args, a.Description)
				} else {
					args = append(args, string(a.Value))
				}
			}
			p = fmt.Sprintf("console.%s: %s", e.Type, strings.Join(args, " "))
		}
	case *runtime.EventExceptionThrown:
		p = "uncaught " + (&chromedp.ExceptionError{ExceptionDetails: e.ExceptionDetails}).Error()
	case *log.EventEntryAdded:
		if e.Entry.Level == log.EntryLevelError {
			p = fmt.Sprintf("browser log (%s): %s %s", e.Entry.Source, e.Entry.Text, e.Entry.URL)
		}
	case *network.EventLoadingFailed:
		p = fmt.Sprintf("request failed (%s): %s", e.Type, e.ErrorText)
	case *network.EventResponseReceived:
		if e.Response != nil && e.Response.Status >= 400 {
			p = fmt.Sprintf("HTTP %d for %s", e.Response.Status, e.Response.URL)
		}
	}
	if p != "" {
		b.mu.Lock()
		b.problems = append(b.problems, p)
		b.mu.Unlock()
	}
}

// Problems returns what went wrong in the page so far.
func (b *Browser) Problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.problems...)
}

// Open navigates the tab to url and waits for the page to load.
func (b *Browser) Open(t testing.TB, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
}

// WaitFor polls the JavaScript expression until it is truthy; at the timeout it fails the test
// with why (the value of explain, an expression describing the page's state).
func (b *Browser) WaitFor(t testing.TB, expr, explain string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(timeout),
		chromedp.WithPollingInterval(100*time.Millisecond)))
	if err != nil {
		state := Eval[any](t, b, explain)
		t.Fatalf("waiting for %s: %v\npage state: %v\nproblems: %q", expr, err, state, b.Problems())
	}
}

// Eval evaluates a JavaScript expression in the page and decodes its value.
func Eval[T any](t testing.TB, b *Browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// Screenshot returns a PNG of the whole page, beyond the window's height.
func (b *Browser) Screenshot(t testing.TB) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	return png
}

// Want is what a rendered dashboard must show.
type Want struct {
	Run string
	// Steps is how many steps the charts must hold (one point per step on each line).
	Steps int
	// SampleSteps are the kept steps the sample browser must offer; Images the number of
	// images of the step it shows (the last kept one).
	SampleSteps []int64
	Images      int
	// Eval: the oracle evaluation table must be there.
	Eval bool
}

// CheckDashboard opens the dashboard at url and checks that it renders what w says: the run's
// name, four charts with a line per series and a point per step, the sample browser's steps and
// every image of the shown step decoded (complete, naturalWidth > 0), the evaluation when
// present, and nothing going wrong in the browser on the way.
func (b *Browser) CheckDashboard(t testing.TB, url string, w Want) {
	t.Helper()
	b.Open(t, url)
	b.Check(t, w)
}

// Check is CheckDashboard on the page the tab shows (opened earlier: a live page must catch up
// by itself).
func (b *Browser) Check(t testing.TB, w Want) {
	t.Helper()
	const state = `JSON.stringify({run: document.getElementById('run-id').textContent,
		error: document.getElementById('error').textContent,
		lines: [...document.querySelectorAll('.chart')].map(c => c.id + ':' + c.querySelectorAll('path.line').length),
		steps: [...document.querySelectorAll('#sample-step option')].map(o => o.value),
		images: [...document.querySelectorAll('#samples img')].map(i => i.complete + '/' + i.naturalWidth)})`
	b.WaitFor(t, fmt.Sprintf(`document.getElementById('run-id').textContent === %q`, w.Run), state, 30*time.Second)
	// Every chart has its lines, each with a point per step ("M" then one "L" per further step).
	b.WaitFor(t, fmt.Sprintf(`[...document.querySelectorAll('.chart')].every(c => {
		const ls = [...c.querySelectorAll('path.line')];
		return ls.length > 0 && ls.every(l => l.getAttribute('d').split('L').length === %d);
	}) && document.querySelectorAll('.chart').length === 4`, w.Steps), state, 30*time.Second)
	if n := Eval[int](t, b, `document.querySelectorAll('#chart-reward path.line').length`); n < 2 {
		t.Errorf("reward chart: %d lines, want the total and one per expert", n)
	}
	if n := Eval[int](t, b, `document.querySelectorAll('#chart-time path.line').length`); n != 3 {
		t.Errorf("step time chart: %d lines, want wait, train and step", n)
	}
	var steps []string
	for _, s := range w.SampleSteps {
		steps = append(steps, fmt.Sprint(s))
	}
	b.WaitFor(t, fmt.Sprintf(`[...document.querySelectorAll('#sample-step option')].map(o => o.value).join(',') === %q`,
		strings.Join(steps, ",")), state, 30*time.Second)
	b.WaitFor(t, fmt.Sprintf(`(() => { const im = [...document.querySelectorAll('#samples img')];
		return im.length === %d && im.every(i => i.complete && i.naturalWidth > 0); })()`, w.Images), state, 30*time.Second)
	if n := Eval[int](t, b, `[...document.querySelectorAll('#samples .plan')].length`); n != w.Images {
		t.Errorf("%d plans shown, want one per sample (%d)", n, w.Images)
	}
	if w.Eval {
		b.WaitFor(t, `!document.getElementById('eval').hidden && document.querySelectorAll('#eval-table tr').length > 2`, state, 30*time.Second)
	}
	if msg := Eval[string](t, b, `document.getElementById('error').textContent`); msg != "" {
		t.Errorf("the page shows an error: %s", msg)
	}
	if p := b.Problems(); len(p) > 0 {
		t.Errorf("the browser saw %d problem(s):\n  %s", len(p), strings.Join(p, "\n  "))
	}
}
