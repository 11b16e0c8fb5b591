package reward

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bicot-rl/bicot/pkg/scene"
)

func newRemote(t *testing.T, url string, out Output, mod func(*RemoteConfig)) *RemoteBackend {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	cfg := RemoteConfig{URL: url, Output: out, Timeout: 2 * time.Second, Backoff: time.Millisecond, Client: &http.Client{Transport: tr}}
	if mod != nil {
		mod(&cfg)
	}
	r, err := NewRemoteBackend(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func queries(n int) []Query {
	qs := make([]Query, n)
	for i := range qs {
		img := image.NewRGBA(image.Rect(0, 0, 32, 32))
		img.Pix[0], img.Pix[3] = uint8(i), 255 // tell the images apart on the server
		qs[i] = Query{Image: img, Questions: []string{"red circle?"}}
	}
	return qs
}

// pixelScore answers with the first pixel's red value / 100, so the reply order can be checked.
func pixelScore() *funcBackend {
	return &funcBackend{out: OutputScore, f: func(_ context.Context, qs []Query) ([]Raw, error) {
		out := make([]Raw, len(qs))
		for i, q := range qs {
			r, _, _, _ := q.Image.At(0, 0).RGBA()
			v := float64(r>>8) / 100
			out[i] = Raw{Score: &v}
		}
		return out, nil
	}}
}

func TestRemoteRoundTripBatches(t *testing.T) {
	b := pixelScore()
	srv := httptest.NewServer(NewHandler("hps", b, HandlerOptions{MaxBatch: 4}))
	defer srv.Close()
	r := newRemote(t, srv.URL, OutputScore, func(c *RemoteConfig) { c.MaxBatch = 2 })
	info, err := r.Info(context.Background())
	if err != nil || info.Name != "hps" || info.Output != OutputScore || info.MaxBatch != 4 || info.Protocol != Protocol {
		t.Fatalf("info %+v, %v", info, err)
	}
	raws, err := r.Infer(context.Background(), queries(5))
	if err != nil {
		t.Fatal(err)
	}
	if len(raws) != 5 {
		t.Fatalf("%d results", len(raws))
	}
	for i, raw := range raws {
		if raw.Score == nil || !near(*raw.Score, float64(i)/100) {
			t.Fatalf("result %d = %+v", i, raw)
		}
	}
	if n := b.calls.Load(); n != 3 {
		t.Fatalf("%d server calls for 5 items in batches of 2", n)
	}
}

// faulty serves scripted replies: step i of the script answers the i-th request (the last repeats).
type faulty struct {
	steps []func(w http.ResponseWriter, r *http.Request)
	n     atomic.Int32
}

func (f *faulty) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i := int(f.n.Add(1)) - 1
	f.steps[min(i, len(f.steps)-1)](w, r)
}

func status(code int, body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(code)
		_, _ = w.Write([]byte(body))
	}
}

func sleep(d time.Duration) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		// Read the body first: only then does the server notice a client that hangs up.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(d):
		}
	}
}

// good forwards to a real handler around a score backend.
func good() func(http.ResponseWriter, *http.Request) {
	h := NewHandler("hps", pixelScore(), HandlerOptions{})
	return h.ServeHTTP
}

func TestRemoteFaults(t *testing.T) {
	tests := []struct {
		name     string
		steps    []func(http.ResponseWriter, *http.Request)
		out      Output
		attempts int32
		want     string // "" means success
	}{
		{"500 then ok is retried", []func(http.ResponseWriter, *http.Request){status(500, `{"error":{"code":"internal","message":"oom"}}`), good()}, OutputScore, 2, ""},
		{"503 then 502 then ok", []func(http.ResponseWriter, *http.Request){status(503, "busy"), status(502, "bad gateway"), good()}, OutputScore, 3, ""},
		{"always 500 gives up", []func(http.ResponseWriter, *http.Request){status(500, `{"error":{"code":"internal","message":"oom"}}`)}, OutputScore, 4, "HTTP 500: internal: oom"},
		{"timeout then ok is retried", []func(http.ResponseWriter, *http.Request){sleep(5 * time.Second), good()}, OutputScore, 2, ""},
		{"always slow gives up", []func(http.ResponseWriter, *http.Request){sleep(5 * time.Second)}, OutputScore, 4, "deadline exceeded"},
		{"400 not retried", []func(http.ResponseWriter, *http.Request){status(400, `{"error":{"code":"bad_request","message":"no"}}`)}, OutputScore, 1, "HTTP 400"},
		{"garbage", []func(http.ResponseWriter, *http.Request){status(200, "<html>hello</html>")}, OutputScore, 1, "invalid reply"},
		{"NaN literal", []func(http.ResponseWriter, *http.Request){status(200, `{"protocol":"bicot-expert/1","results":[{"score":NaN},{"score":NaN}]}`)}, OutputScore, 1, "invalid reply"},
		{"wrong count", []func(http.ResponseWriter, *http.Request){status(200, `{"protocol":"bicot-expert/1","results":[{"score":0.5}]}`)}, OutputScore, 1, "1 results for 2 items"},
		{"missing field", []func(http.ResponseWriter, *http.Request){status(200, `{"protocol":"bicot-expert/1","results":[{"score":0.5},{}]}`)}, OutputScore, 1, `sample 1: reply lacks "score"`},
		{"probability out of range", []func(http.ResponseWriter, *http.Request){status(200, `{"protocol":"bicot-expert/1","results":[{"answers":[{"yes":0.5,"no":0.5}]},{"answers":[{"yes":1.5,"no":0}]}]}`)}, OutputAnswers, 1, "sample 1: invalid reply: answer 0: yes 1.5 outside [0, 1]"},
		{"too few answers", []func(http.ResponseWriter, *http.Request){status(200, `{"protocol":"bicot-expert/1","results":[{"answers":[]},{"answers":[]}]}`)}, OutputAnswers, 1, "0 answers for 1 questions"},
		{"wrong protocol", []func(http.ResponseWriter, *http.Request){status(200, `{"protocol":"bicot-expert/9","results":[]}`)}, OutputScore, 1, "bicot-expert/9"},
		{"endless reply", []func(http.ResponseWriter, *http.Request){status(200, `{"protocol":"bicot-expert/1","results":[`+strings.Repeat(`{"score":0.5},`, MaxReplyBytes/14+1))}, OutputScore, 1, "reply larger than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &faulty{steps: tc.steps}
			srv := httptest.NewServer(f)
			defer srv.Close()
			// 100 ms an attempt keeps the slow-server cases short. The endless reply's 16 MiB
			// must be read to be found too large, which on a busy machine can take longer than
			// that: its size must fail it, not the clock.
			timeout := 100 * time.Millisecond
			if tc.name == "endless reply" {
				timeout = 30 * time.Second
			}
			r := newRemote(t, srv.URL, tc.out, func(c *RemoteConfig) { c.Timeout = timeout })
			raws, err := r.Infer(context.Background(), queries(2))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(raws) != 2 || raws[1].Score == nil || !near(*raws[1].Score, 0.01) {
					t.Fatalf("results %+v", raws)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if n := f.n.Load(); n != tc.attempts {
				t.Fatalf("%d attempts, want %d", n, tc.attempts)
			}
		})
	}
}

func TestRemoteFailureFailsEnsemble(t *testing.T) {
	srv := httptest.NewServer(&faulty{steps: []func(http.ResponseWriter, *http.Request){status(500, "down")}})
	defer srv.Close()
	r := newRemote(t, srv.URL, OutputScore, func(c *RemoteConfig) { c.Retries = 1 })
	e, err := NewEnsemble(Expert{Name: "hps", Backend: r, Rule: DefaultHPSRule(), Weight: 1})
	if err != nil {
		t.Fatal(err)
	}
	s, err := e.Score(context.Background(), testItems(2))
	if err == nil || s != nil || !strings.Contains(err.Error(), `expert "hps"`) || !strings.Contains(err.Error(), "HTTP 500") {
		t.Fatalf("scores %v, err %v", s, err)
	}
}

func TestRemoteCancelStopsRetries(t *testing.T) {
	f := &faulty{steps: []func(http.ResponseWriter, *http.Request){status(500, "down")}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	r := newRemote(t, srv.URL, OutputScore, func(c *RemoteConfig) { c.Retries = 100; c.Backoff = 50 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Millisecond)
	defer cancel()
	if _, err := r.Infer(ctx, queries(1)); err == nil {
		t.Fatal("no error")
	}
	if n := f.n.Load(); n > 4 {
		t.Fatalf("%d attempts after the context ended", n)
	}
}

func TestHandlerRejectsBadRequests(t *testing.T) {
	srv := httptest.NewServer(NewHandler("orm", yesBackend(0.5), HandlerOptions{MaxBatch: 1}))
	defer srv.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	png, err := scene.PNG(image.NewRGBA(image.Rect(0, 0, 8, 8)))
	if err != nil {
		t.Fatal(err)
	}
	item := InferItem{ImagePNG: png, Questions: []string{ORMQuestion}}
	body := func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	}
	tests := []struct {
		name, method, path, body string
		code                     int
		errCode                  string
	}{
		{"ok", "POST", PathInfer, body(InferRequest{Protocol: Protocol, Output: OutputAnswers, Items: []InferItem{item}}), 200, ""},
		{"bad json", "POST", PathInfer, "{", 400, CodeBadRequest},
		{"no items", "POST", PathInfer, body(InferRequest{Protocol: Protocol, Output: OutputAnswers}), 400, CodeBadRequest},
		{"old protocol", "POST", PathInfer, body(InferRequest{Protocol: "bicot-expert/0", Output: OutputAnswers, Items: []InferItem{item}}), 400, CodeUnsupportedProtocol},
		{"wrong output", "POST", PathInfer, body(InferRequest{Protocol: Protocol, Output: OutputBoxes, Items: []InferItem{item}}), 400, CodeWrongOutput},
		{"too many", "POST", PathInfer, body(InferRequest{Protocol: Protocol, Output: OutputAnswers, Items: []InferItem{item, item}}), 413, CodeTooLarge},
		{"bad png", "POST", PathInfer, body(InferRequest{Protocol: Protocol, Output: OutputAnswers, Items: []InferItem{{ImagePNG: []byte("nope"), Questions: []string{"x"}}}}), 400, CodeBadRequest},
		{"no questions", "POST", PathInfer, body(InferRequest{Protocol: Protocol, Output: OutputAnswers, Items: []InferItem{{ImagePNG: png}}}), 400, CodeBadRequest},
		{"GET infer", "GET", PathInfer, "", 405, CodeMethodNotAllowed},
		{"unknown path", "GET", "/v2/infer", "", 404, CodeNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, bytes.NewBufferString(tc.body))
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.code)
			}
			if tc.errCode != "" {
				var eb ErrorBody
				if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil || eb.Error.Code != tc.errCode || eb.Error.Message == "" {
					t.Fatalf("error body %+v, %v", eb, err)
				}
			}
		})
	}
}

func TestHandlerRefusesInvalidModelOutput(t *testing.T) {
	srv := httptest.NewServer(NewHandler("hps", scoreBackend(0.5, math.Inf(1)), HandlerOptions{}))
	defer srv.Close()
	r := newRemote(t, srv.URL, OutputScore, func(c *RemoteConfig) { c.Retries = -1 })
	_, err := r.Infer(context.Background(), queries(2))
	if err == nil || !strings.Contains(err.Error(), "HTTP 500") || !strings.Contains(err.Error(), "item 1") {
		t.Fatalf("err = %v", err)
	}
}
