package dashboard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/dashboard"
	"github.com/bicot-rl/bicot/pkg/runfiles"
	"github.com/bicot-rl/bicot/pkg/store"
	"github.com/bicot-rl/bicot/pkg/store/local"
	"github.com/bicot-rl/bicot/pkg/store/s3/s3test"
)

func put(t *testing.T, st store.Store, key, body string) {
	t.Helper()
	if err := st.Put(context.Background(), key, strings.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, srv *httptest.Server, path string) (int, string, string) {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

// A run's files served offline: every endpoint the page reads, from the files alone, in a local
// directory and on a real S3 server (versitygw).
func TestOfflineEndpoints(t *testing.T) {
	t.Run("local", func(t *testing.T) {
		st, err := local.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		checkOffline(t, st)
	})
	t.Run("s3", func(t *testing.T) {
		srv := s3test.Start(t)
		checkOffline(t, srv.NewStore(t, "team/runs", zerolog.Nop()))
	})
}

func checkOffline(t *testing.T, st store.Store) {
	srv := httptest.NewServer(dashboard.Offline(dashboard.Options{Store: st, Run: "r1", Log: zerolog.Nop()}))
	defer srv.Close()

	// Before the first step: empty documents, not errors.
	for path, want := range map[string]string{"/v1/metrics": "[]", "/v1/eval": "null", "/v1/samples": `{"steps":[]}`} {
		if code, _, body := get(t, srv, path); code != 200 || strings.TrimSpace(body) != want {
			t.Errorf("GET %s on an empty run: %d %q, want 200 %s", path, code, body, want)
		}
	}

	put(t, st, "r1/metrics.jsonl", "{\"step\":0,\"policy_version\":1}\n{\"step\":1,\"policy_version\":2}\n")
	put(t, st, "r1/config.yaml", "run_id: r1\nsteps: 2\nseed: 1\n")
	put(t, st, "r1/eval.json", `{"initial":{"mean":0.4},"final":{"mean":0.5}}`)
	png := "\x89PNG\r\n\x1a\nfake"
	idx := runfiles.StepSamples{Run: "r1", Step: 1, Groups: []runfiles.SampleGroup{{PromptIndex: 4, Prompt: "a <b>red</b> ball",
		Samples: []runfiles.SampleRecord{{Image: "p4-s0.png", Reward: 0.5}}}}}
	if err := runfiles.PutSamples(context.Background(), st, idx, map[string][]byte{"p4-s0.png": []byte(png)}); err != nil {
		t.Fatal(err)
	}

	code, _, body := get(t, srv, "/v1/status")
	var status dashboard.OfflineStatus
	if err := json.Unmarshal([]byte(body), &status); code != 200 || err != nil {
		t.Fatalf("/v1/status: %d %s (%v)", code, body, err)
	}
	if status.Run != "r1" || !status.Offline || status.Step != 2 || status.Steps != 2 || !status.Done || status.PolicyVersion != 2 || status.Workers == nil {
		t.Errorf("/v1/status: %+v", status)
	}
	var recs []map[string]any
	if code, _, body := get(t, srv, "/v1/metrics"); code != 200 || json.Unmarshal([]byte(body), &recs) != nil || len(recs) != 2 {
		t.Errorf("/v1/metrics: %d %s", code, body)
	}
	if code, _, body := get(t, srv, "/v1/eval"); code != 200 || !strings.Contains(body, `"final":{"mean":0.5}`) {
		t.Errorf("/v1/eval: %d %s", code, body)
	}
	if code, _, body := get(t, srv, "/v1/samples"); code != 200 || strings.TrimSpace(body) != `{"steps":[1]}` {
		t.Errorf("/v1/samples: %d %s", code, body)
	}
	var got runfiles.StepSamples
	if code, _, body := get(t, srv, "/v1/samples/1"); code != 200 || json.Unmarshal([]byte(body), &got) != nil || got.Groups[0].Prompt != "a <b>red</b> ball" {
		t.Errorf("/v1/samples/1: %d %s", code, body)
	}
	if code, ctype, body := get(t, srv, "/v1/samples/1/p4-s0.png"); code != 200 || ctype != "image/png" || body != png {
		t.Errorf("image: %d %s %q", code, ctype, body)
	}
	for path, want := range map[string]int{"/v1/samples/2": 404, "/v1/samples/x": 400, "/v1/samples/-1": 400,
		"/v1/samples/1/p4-s1.png": 404, "/v1/samples/1/index.json": 404, "/v1/samples/1/..%2f..%2fmetrics.jsonl": 404} {
		if code, _, body := get(t, srv, path); code != want {
			t.Errorf("GET %s: %d %q, want %d", path, code, body, want)
		}
	}

	// The page and its assets come from the binary.
	code, ctype, page := get(t, srv, "/")
	if code != 200 || !strings.HasPrefix(ctype, "text/html") || !strings.Contains(page, `src="static/app.js"`) {
		t.Errorf("/: %d %s", code, ctype)
	}
	for _, asset := range []string{"/static/app.js", "/static/style.css"} {
		if code, _, body := get(t, srv, asset); code != 200 || len(body) < 500 {
			t.Errorf("GET %s: %d, %d bytes", asset, code, len(body))
		}
	}
	if code, _, _ := get(t, srv, "/static/missing.js"); code != 404 {
		t.Errorf("a missing asset: %d, want 404", code)
	}
	if code, _, _ := get(t, srv, "/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
}

// Without a store the page still loads and the data endpoints say why they have nothing.
func TestNoStore(t *testing.T) {
	mux := http.NewServeMux()
	dashboard.Mount(mux, dashboard.Options{Run: "r1", Log: zerolog.Nop()})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	if code, _, _ := get(t, srv, "/"); code != 200 {
		t.Errorf("/: %d", code)
	}
	if code, _, body := get(t, srv, "/v1/metrics"); code != http.StatusServiceUnavailable || !bytes.Contains([]byte(body), []byte("no store")) {
		t.Errorf("/v1/metrics without a store: %d %q", code, body)
	}
}
