// Package dashboard is the run's web page: plain HTML, CSS and JavaScript embedded in the binary
// (no CDN, no build step), served at / with its assets under /static/, and the JSON endpoints it
// reads besides the coordinator's /v1/status:
//
//	GET /v1/metrics                  the metrics records as one JSON array ([] before the first step)
//	GET /v1/eval                     eval.json (laptop mode's oracle evaluation), null when absent
//	GET /v1/samples                  {"steps": [...]}: the steps whose samples were kept
//	GET /v1/samples/{step}           that step's samples index (pkg/runfiles.StepSamples)
//	GET /v1/samples/{step}/{image}   one sample's PNG
//
// Everything comes from the run's store through pkg/runfiles. The coordinator mounts it next to
// its status API (live during a run); `coordinator dashboard` serves it from a finished run's
// files with Offline, whose /v1/status is derived from those files. Missing files are answered
// with empty documents rather than 404s, so that a browser shows a run that has not learned a step
// yet without an error.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"strconv"
	"time"

	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"

	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/runfiles"
	"github.com/bicot-rl/bicot/pkg/store"
)

//go:embed static
var static embed.FS

// readTimeout bounds one request's reads from the store (an S3 store that hangs must not hold a
// browser's request forever).
const readTimeout = 15 * time.Second

// Options say which run the dashboard shows.
type Options struct {
	// Store holds the run (nil: the data endpoints answer 503, the page still loads and shows
	// the status).
	Store store.Store
	Run   string
	Log   zerolog.Logger
}

type server struct {
	o   Options
	log zerolog.Logger
}

// Mount adds the page, its assets and the data endpoints to mux; /v1/status is the caller's.
func Mount(mux *http.ServeMux, o Options) {
	s := &server{o: o, log: logging.Component(o.Log, "dashboard").With().Str("run", o.Run).Logger()}
	assets, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is part of the binary
	}
	files := http.FileServerFS(assets)
	mux.Handle("GET /static/", http.StripPrefix("/static/", noCache(files)))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, assets, "index.html")
	})
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("GET /v1/metrics", s.metrics)
	mux.HandleFunc("GET /v1/eval", s.eval)
	mux.HandleFunc("GET /v1/samples", s.sampleSteps)
	mux.HandleFunc("GET /v1/samples/{step}", s.samples)
	mux.HandleFunc("GET /v1/samples/{step}/{image}", s.image)
}

// noCache makes browsers revalidate the assets, so a new binary's page is never mixed with an
// old script.
func noCache(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

// OfflineStatus is /v1/status of a run served from its files: what they tell, and offline set
// so the page stops polling.
type OfflineStatus struct {
	Run     string `json:"run"`
	Offline bool   `json:"offline"`
	// Step is the number of steps learned (the last metrics line's step + 1).
	Step int64 `json:"step"`
	// Steps is the run's length as its config.yaml records it (laptop mode); 0 when unknown.
	Steps         int       `json:"steps"`
	Done          bool      `json:"done"`
	PolicyVersion int64     `json:"policy_version"`
	Workers       []any     `json:"workers"`
	Time          time.Time `json:"time"`
}

// Offline serves the dashboard of a run from its files alone (no NATS, no raft): the page, the
// data endpoints, /v1/status derived from the files and /healthz.
func Offline(o Options) http.Handler {
	mux := http.NewServeMux()
	Mount(mux, o)
	s := &server{o: o, log: logging.Component(o.Log, "dashboard").With().Str("run", o.Run).Logger()}
	mux.HandleFunc("GET /v1/status", s.offlineStatus)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// ReadOfflineStatus derives a finished (or stopped) run's status from its files.
func ReadOfflineStatus(ctx context.Context, st store.Store, run string) (OfflineStatus, error) {
	s := OfflineStatus{Run: run, Offline: true, Workers: []any{}, Time: time.Now().UTC()}
	recs, err := runfiles.ReadMetrics(ctx, st, run)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return s, err
	}
	if n := len(recs); n > 0 {
		var last struct {
			Step          int64 `json:"step"`
			PolicyVersion int64 `json:"policy_version"`
		}
		if err := json.Unmarshal(recs[n-1], &last); err == nil {
			s.Step, s.PolicyVersion = last.Step+1, last.PolicyVersion
		}
	}
	if b, err := runfiles.ReadConfig(ctx, st, run); err == nil {
		var c struct {
			Steps int `yaml:"steps"`
		}
		if yaml.Unmarshal(b, &c) == nil {
			s.Steps = c.Steps
		}
	}
	s.Done = s.Steps > 0 && s.Step >= int64(s.Steps)
	return s, nil
}

func (s *server) offlineStatus(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, ok := s.begin(w, r)
	if !ok {
		return
	}
	defer cancel()
	st, err := ReadOfflineStatus(ctx, s.o.Store, s.o.Run)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, st)
}

// begin checks that there is a store and bounds the request's reads.
func (s *server) begin(w http.ResponseWriter, r *http.Request) (context.Context, context.CancelFunc, bool) {
	if s.o.Store == nil {
		http.Error(w, "this server has no store for the run's files", http.StatusServiceUnavailable)
		return nil, nil, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	return ctx, cancel, true
}

// fail answers a read error: 404 for what is not there, 500 (logged) for the rest.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, store.ErrNotFound) {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	s.log.Warn().Err(err).Str("path", r.URL.Path).Msg("dashboard read failed")
	http.Error(w, "reading the run's files failed", http.StatusInternalServerError)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

func (s *server) metrics(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, ok := s.begin(w, r)
	if !ok {
		return
	}
	defer cancel()
	recs, err := runfiles.ReadMetrics(ctx, s.o.Store, s.o.Run)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, err)
		return
	}
	if recs == nil {
		recs = []json.RawMessage{}
	}
	writeJSON(w, recs)
}

func (s *server) eval(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, ok := s.begin(w, r)
	if !ok {
		return
	}
	defer cancel()
	ev, err := runfiles.ReadEval(ctx, s.o.Store, s.o.Run)
	if errors.Is(err, store.ErrNotFound) {
		writeJSON(w, nil)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, ev)
}

func (s *server) sampleSteps(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, ok := s.begin(w, r)
	if !ok {
		return
	}
	defer cancel()
	steps, err := runfiles.SampleSteps(ctx, s.o.Store, s.o.Run)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if steps == nil {
		steps = []int64{}
	}
	writeJSON(w, map[string][]int64{"steps": steps})
}

func stepOf(r *http.Request) (int64, bool) {
	n, err := strconv.ParseInt(r.PathValue("step"), 10, 64)
	return n, err == nil && n >= 0
}

func (s *server) samples(w http.ResponseWriter, r *http.Request) {
	step, ok := stepOf(r)
	if !ok {
		http.Error(w, "step: want a number >= 0", http.StatusBadRequest)
		return
	}
	ctx, cancel, ok := s.begin(w, r)
	if !ok {
		return
	}
	defer cancel()
	idx, err := runfiles.ReadSamples(ctx, s.o.Store, s.o.Run, step)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, idx)
}

func (s *server) image(w http.ResponseWriter, r *http.Request) {
	step, ok := stepOf(r)
	name := r.PathValue("image")
	if !ok || !runfiles.ValidImageName(name) {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	ctx, cancel, ok := s.begin(w, r)
	if !ok {
		return
	}
	defer cancel()
	b, err := runfiles.ReadImage(ctx, s.o.Store, s.o.Run, step, name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "image/png")
	// A kept step's samples never change (a re-learned step draws the same ones): browsers may
	// keep them while the page is open.
	w.Header().Set("Cache-Control", "private, max-age=3600")
	_, _ = w.Write(b)
}
