package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/dashboard"
	"github.com/bicot-rl/bicot/pkg/dashboard/browsertest"
	"github.com/bicot-rl/bicot/pkg/local"
	"github.com/bicot-rl/bicot/pkg/local/localtest"
	"github.com/bicot-rl/bicot/pkg/startup"
)

var sharedEnv localtest.Shared

// serveDashboard runs `coordinator dashboard target` until the test ends and returns the base
// URL it prints.
func serveDashboard(t *testing.T, target string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	root := newRoot()
	root.SetArgs([]string{"dashboard", target, "--http", "127.0.0.1:0", "--log-level", "error"})
	root.SetOut(pw)
	done := make(chan error, 1)
	go func() {
		err := root.ExecuteContext(ctx)
		pw.CloseWithError(io.EOF)
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("coordinator dashboard: %v", err)
		}
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("coordinator dashboard printed %q: %v", line, err)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	_, url, ok := strings.Cut(strings.TrimSpace(line), ": ")
	if !ok || !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("coordinator dashboard printed %q, want its URL on loopback", line)
	}
	return strings.TrimSuffix(url, "?token=$"+startup.EnvAPIToken)
}

// TestDashboardOfFinishedRun runs a two-step laptop run with its oracle evaluation, then serves
// its directory with `coordinator dashboard` behind an API token: the API refuses requests
// without it, and a headless Chromium given the token once in the URL shows the whole run (the
// token then leaves the address bar and travels as a cookie).
func TestDashboardOfFinishedRun(t *testing.T) {
	e := sharedEnv.Get(t)
	c := localtest.Config(t, 2)
	c.SamplesEvery = 1
	c.Eval = config.Eval{Prompts: filepath.Join(localtest.RepoRoot(t), "data/prompts/eval.jsonl"), LimitPerType: 1, G: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out := t.TempDir()
	res, err := local.Run(ctx, local.Options{Config: c, RolloutWorkers: 1, RewardWorkers: 1, Out: out, Backend: e.Backend,
		Ensemble: e.Ensemble, InitPolicy: e.Policy, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}

	root := newRoot()
	root.SetArgs([]string{"dashboard", filepath.Join(out, "no-such-run"), "--http", "127.0.0.1:0"})
	root.SetOut(io.Discard)
	if err := root.ExecuteContext(ctx); err == nil || !strings.Contains(err.Error(), "no run no-such-run") {
		t.Errorf("dashboard of a missing run: %v, want an error naming it", err)
	}

	const token = "t0ken-for-the-test"
	t.Setenv(startup.EnvAPIToken, token)
	base := serveDashboard(t, res.Dir)
	get := func(path, auth string) (int, []byte) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+strings.TrimPrefix(path, "/"), nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	for _, p := range []string{"/", "/v1/status", "/v1/metrics", "/v1/samples/0/p0-s0.png"} {
		if code, _ := get(p, ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without the token: %d, want 401", p, code)
		}
	}
	if code, _ := get("/healthz", ""); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
	code, body := get("/v1/status", token)
	var st dashboard.OfflineStatus
	if err := json.Unmarshal(body, &st); code != 200 || err != nil || st.Run != c.RunID || st.Step != 2 || st.Steps != 2 || !st.Done || !st.Offline {
		t.Errorf("/v1/status: %d %s (%v)", code, body, err)
	}

	b := browsertest.New(t)
	b.CheckDashboard(t, base+"?token="+token, browsertest.Want{Run: c.RunID, Steps: c.Steps, SampleSteps: []int64{0, 1},
		Images: c.PromptsPerStep * c.GroupSize, Eval: true})
	if loc := browsertest.Eval[string](t, b, `location.href`); strings.Contains(loc, token) {
		t.Errorf("the token stayed in the address bar: %s", loc)
	}
	if s := browsertest.Eval[string](t, b, `document.getElementById('run-state').textContent`); s != "from files" {
		t.Errorf("run state %q, want from files", s)
	}
}

// TestDashboardScreenshot writes the screenshot of docs/dashboard.png: the dashboard of the run
// directory $BICOT_SCREENSHOT_RUN (a real laptop run), as `coordinator dashboard` serves it.
// Skipped unless that is set.
func TestDashboardScreenshot(t *testing.T) {
	dir := os.Getenv("BICOT_SCREENSHOT_RUN")
	if dir == "" {
		t.Skip("set BICOT_SCREENSHOT_RUN to a run directory to write docs/dashboard.png")
	}
	t.Setenv(startup.EnvAPIToken, "")
	base := serveDashboard(t, dir)
	b := browsertest.New(t)
	b.Open(t, base)
	b.WaitFor(t, `(() => { const im = [...document.querySelectorAll('#samples img')];
		return im.length > 0 && im.every(i => i.complete && i.naturalWidth > 0) &&
			document.querySelectorAll('#chart-reward path.line').length > 1; })()`, `document.body.innerText.slice(0, 500)`, time.Minute)
	time.Sleep(500 * time.Millisecond) // the last layout
	if p := b.Problems(); len(p) > 0 {
		t.Errorf("browser problems: %q", p)
	}
	out := filepath.Join("..", "docs", "dashboard.png")
	if err := os.WriteFile(out, b.Screenshot(t), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", out)
}
