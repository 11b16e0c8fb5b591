package reward

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/bicot-rl/bicot/pkg/scene"
)

// RemoteConfig configures a RemoteBackend.
type RemoteConfig struct {
	// URL is the server's base address, e.g. "http://10.0.0.5:8301".
	URL string
	// Output is the raw output kind the server must produce.
	Output Output
	// MaxBatch splits larger batches into several requests (default 32).
	MaxBatch int
	// Timeout bounds one HTTP call, including reading the reply (default 30 s).
	Timeout time.Duration
	// Retries is how many times a call failing with 5xx, 429, a timeout or a connection error is
	// retried (default 3; negative: none). 4xx replies and invalid replies are not retried.
	Retries int
	// Backoff is the wait before the first retry, doubled after each (default 200 ms, capped at
	// MaxBackoff, default 5 s).
	Backoff    time.Duration
	MaxBackoff time.Duration
	// Client is the HTTP client (default: a new http.Client without its own timeout).
	Client *http.Client
}

// RemoteBackend is a Backend answered by an expert server over HTTP/JSON.
type RemoteBackend struct {
	cfg RemoteConfig
}

// NewRemoteBackend checks the configuration and fills defaults.
func NewRemoteBackend(cfg RemoteConfig) (*RemoteBackend, error) {
	if cfg.URL == "" {
		return nil, errors.New("remote expert: empty URL")
	}
	if !strings.HasPrefix(cfg.URL, "http://") && !strings.HasPrefix(cfg.URL, "https://") {
		return nil, fmt.Errorf("remote expert: URL %q must start with http:// or https://", cfg.URL)
	}
	cfg.URL = strings.TrimRight(cfg.URL, "/")
	if !cfg.Output.Valid() {
		return nil, fmt.Errorf("remote expert %s: unknown output kind %q", cfg.URL, cfg.Output)
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = 32
	}
	if cfg.MaxBatch < 0 {
		return nil, fmt.Errorf("remote expert %s: max batch %d < 0", cfg.URL, cfg.MaxBatch)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Retries == 0 {
		cfg.Retries = 3
	}
	if cfg.Retries < 0 {
		cfg.Retries = 0
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	return &RemoteBackend{cfg: cfg}, nil
}

// Output implements Backend.
func (r *RemoteBackend) Output() Output { return r.cfg.Output }

// Info asks the server what it serves.
func (r *RemoteBackend) Info(ctx context.Context) (Info, error) {
	var info Info
	body, err := r.call(ctx, http.MethodGet, PathInfo, nil)
	if err != nil {
		return info, err
	}
	if err := json.Unmarshal(body, &info); err != nil {
		return info, fmt.Errorf("remote expert %s: decode info: %w", r.cfg.URL, err)
	}
	if info.Protocol != Protocol {
		return info, fmt.Errorf("remote expert %s: speaks %q, want %q", r.cfg.URL, info.Protocol, Protocol)
	}
	return info, nil
}

// Infer implements Backend: the queries go out in batches of at most MaxBatch, each call retried
// as configured, and every reply is validated before it is returned.
func (r *RemoteBackend) Infer(ctx context.Context, qs []Query) ([]Raw, error) {
	out := make([]Raw, 0, len(qs))
	for start := 0; start < len(qs); start += r.cfg.MaxBatch {
		end := min(start+r.cfg.MaxBatch, len(qs))
		raws, err := r.inferBatch(ctx, qs[start:end], start)
		if err != nil {
			return nil, err
		}
		out = append(out, raws...)
	}
	return out, nil
}

func (r *RemoteBackend) inferBatch(ctx context.Context, qs []Query, offset int) ([]Raw, error) {
	req := InferRequest{Protocol: Protocol, Output: r.cfg.Output, Items: make([]InferItem, len(qs))}
	for i, q := range qs {
		b, err := scene.PNG(q.Image)
		if err != nil {
			return nil, fmt.Errorf("remote expert %s: sample %d: %w", r.cfg.URL, offset+i, err)
		}
		req.Items[i] = InferItem{ImagePNG: b, Prompt: q.Prompt, Questions: q.Questions}
	}
	payload, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("remote expert %s: encode request: %w", r.cfg.URL, err)
	}
	body, err := r.call(ctx, http.MethodPost, PathInfer, payload)
	if err != nil {
		return nil, err
	}
	var resp InferResponse
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&resp); err != nil {
		return nil, fmt.Errorf("remote expert %s: invalid reply: %w", r.cfg.URL, err)
	}
	if resp.Protocol != Protocol {
		return nil, fmt.Errorf("remote expert %s: reply speaks %q, want %q", r.cfg.URL, resp.Protocol, Protocol)
	}
	if len(resp.Results) != len(qs) {
		return nil, fmt.Errorf("remote expert %s: %d results for %d items", r.cfg.URL, len(resp.Results), len(qs))
	}
	raws := make([]Raw, len(qs))
	for i, w := range resp.Results {
		missing := ""
		switch {
		case r.cfg.Output == OutputBoxes && w.Boxes == nil:
			missing = "boxes"
		case r.cfg.Output == OutputAnswers && w.Answers == nil:
			missing = "answers"
		case r.cfg.Output == OutputScore && w.Score == nil:
			missing = "score"
		}
		if missing != "" {
			return nil, fmt.Errorf("remote expert %s: sample %d: reply lacks %q", r.cfg.URL, offset+i, missing)
		}
		raws[i] = w.raw()
		if err := ValidateRaw(r.cfg.Output, qs[i], raws[i]); err != nil {
			return nil, fmt.Errorf("remote expert %s: sample %d: invalid reply: %w", r.cfg.URL, offset+i, err)
		}
	}
	return raws, nil
}

// ErrUnavailable marks a remote expert that answered with 5xx or 429, timed out or could not be
// reached: an outage that may pass, unlike a reply that is wrong.
var ErrUnavailable = errors.New("remote expert unavailable")

// MaxReplyBytes bounds what is read of an expert server's reply: a batch's outputs are a few
// numbers and short strings per image, far below it, and a server that sends more is refused
// instead of filling the reward worker's memory.
const MaxReplyBytes = 16 << 20

// call performs one request with retries and returns the body of a 2xx reply.
func (r *RemoteBackend) call(ctx context.Context, method, path string, payload []byte) ([]byte, error) {
	wait := r.cfg.Backoff
	var last error
	for attempt := 0; ; attempt++ {
		body, retry, err := r.once(ctx, method, path, payload)
		if err == nil {
			return body, nil
		}
		last = fmt.Errorf("remote expert %s%s: attempt %d: %w", r.cfg.URL, path, attempt+1, err)
		if retry {
			last = fmt.Errorf("%w: %w", ErrUnavailable, last)
		}
		if !retry || attempt >= r.cfg.Retries || ctx.Err() != nil {
			return nil, last
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (gave up waiting to retry: %v)", last, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, r.cfg.MaxBackoff)
	}
}

func (r *RemoteBackend) once(ctx context.Context, method, path string, payload []byte) (body []byte, retry bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(cctx, method, r.cfg.URL+path, rd)
	if err != nil {
		return nil, false, err
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := r.cfg.Client.Do(req)
	if err != nil {
		// Timeouts and connection failures are worth another try while the caller's context lives.
		return nil, ctx.Err() == nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, MaxReplyBytes+1))
	if err != nil {
		return nil, ctx.Err() == nil, fmt.Errorf("read reply: %w", err)
	}
	if len(body) > MaxReplyBytes {
		return nil, false, fmt.Errorf("reply larger than %d bytes", MaxReplyBytes)
	}
	if resp.StatusCode/100 == 2 {
		return body, false, nil
	}
	msg := strings.TrimSpace(string(body))
	var eb ErrorBody
	if json.Unmarshal(body, &eb) == nil && eb.Error.Code != "" {
		msg = eb.Error.Code + ": " + eb.Error.Message
	}
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	retry = resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests
	return nil, retry, fmt.Errorf("HTTP %d: %s", resp.StatusCode, msg)
}
