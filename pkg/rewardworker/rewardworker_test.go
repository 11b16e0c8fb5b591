package rewardworker

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/bus/bustest"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/vq"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// nanScore is a preference backend gone wrong: it answers NaN.
type nanScore struct{}

func (nanScore) Output() reward.Output { return reward.OutputScore }
func (nanScore) Infer(_ context.Context, qs []reward.Query) ([]reward.Raw, error) {
	out := make([]reward.Raw, len(qs))
	for i := range out {
		v := math.NaN()
		out[i].Score = &v
	}
	return out, nil
}

// TestInvalidRewardIsNeverZero: a sample whose reward comes out NaN is retried and dead-lettered;
// no scored sample (with a made-up 0) reaches the learner.
func TestInvalidRewardIsNeverZero(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := bustest.JetStream(t)
	topo, err := bus.EnsureStreams(ctx, js, "nan")
	if err != nil {
		t.Fatal(err)
	}
	cb, err := vq.Load(filepath.Join("..", "..", "models", "codebook.vq"))
	if err != nil {
		t.Fatal(err)
	}
	ens, err := reward.NewEnsemble(reward.Expert{Name: "hps", Backend: nanScore{}, Rule: reward.DefaultHPSRule(), Weight: 1})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.RunID, cfg.Wire.MaxDeliver = "nan", 2
	cfg.Wire.RetryDelay, cfg.Wire.PollWait = config.Duration(10*time.Millisecond), config.Duration(200*time.Millisecond)
	w, err := New(ctx, Deps{ID: "r1", JS: js, Ensemble: ens, Codebook: cb, Log: zerolog.Nop()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := bus.Sample{Run: "nan", Step: 0, PromptIndex: 1, SampleIndex: 0, G: 2, PlanTokens: []int32{}, PlanLogp: []float32{},
		ImageTokens: make([]int32, cb.TokensPerImage()), ImageLogp: make([]float32, cb.TokensPerImage()),
		Prompt: prompts.Prompt{Prompt: "a red circle", TaskType: prompts.Color, Nouns: []string{"circle"}, AttrNouns: []string{"red circle"}}}
	if _, err := bus.PublishSample(ctx, js, s); err != nil {
		t.Fatal(err)
	}
	// And one whose image token is outside the codebook: poison at once.
	bad := s
	bad.SampleIndex = 1
	bad.ImageTokens = append([]int32(nil), s.ImageTokens...)
	bad.ImageTokens[3] = int32(cb.K())
	if _, err := bus.PublishSample(ctx, js, bad); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(rctx) }()
	dead, err := js.Stream(ctx, topo.DeadStream)
	if err != nil {
		t.Fatal(err)
	}
	for {
		info, err := dead.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d dead letters, want 2", info.State.Msgs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	rcancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	scored, err := js.Stream(ctx, topo.Scored.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := scored.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 || w.Scored() != 0 {
		t.Fatalf("%d scored samples published (%d by the worker), want none", info.State.Msgs, w.Scored())
	}
}

// A remote expert that is down for a few seconds (503s from its front, as during a restart) costs
// those seconds: the worker keeps the sample in progress and scores it when the expert is back,
// with no redelivery spent and no dead letter (it used to dead-letter it after max_deliver quick
// tries and wait for a re-dispatch).
func TestRemoteExpertOutageIsRiddenOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := bustest.JetStream(t)
	topo, err := bus.EnsureStreams(ctx, js, "outage")
	if err != nil {
		t.Fatal(err)
	}
	cb, err := vq.Load(filepath.Join("..", "..", "models", "codebook.vq"))
	if err != nil {
		t.Fatal(err)
	}
	// The real expert protocol server, over a backend that answers a constant score.
	srv := reward.NewHandler("hps", constScore{}, reward.HandlerOptions{})
	back := time.Now().Add(3 * time.Second)
	front := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if time.Now().Before(back) {
			http.Error(rw, "restarting", http.StatusServiceUnavailable)
			return
		}
		srv.ServeHTTP(rw, r)
	}))
	defer front.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	remote, err := reward.NewRemoteBackend(reward.RemoteConfig{URL: front.URL, Output: reward.OutputScore, Retries: 1,
		Backoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Client: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	ens, err := reward.NewEnsemble(reward.Expert{Name: "hps", Backend: remote, Rule: reward.DefaultHPSRule(), Weight: 1})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.RunID, cfg.Wire.MaxDeliver = "outage", 2
	cfg.Wire.RetryDelay, cfg.Wire.PollWait = config.Duration(10*time.Millisecond), config.Duration(200*time.Millisecond)
	w, err := New(ctx, Deps{ID: "r1", JS: js, Ensemble: ens, Codebook: cb, Log: zerolog.Nop()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := bus.Sample{Run: "outage", Step: 0, PromptIndex: 1, SampleIndex: 0, G: 2, PlanTokens: []int32{}, PlanLogp: []float32{},
		ImageTokens: make([]int32, cb.TokensPerImage()), ImageLogp: make([]float32, cb.TokensPerImage()),
		Prompt: prompts.Prompt{Prompt: "a red circle", TaskType: prompts.Color, Nouns: []string{"circle"}, AttrNouns: []string{"red circle"}}}
	if _, err := bus.PublishSample(ctx, js, s); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(rctx) }()
	for w.Scored() < 1 {
		if ctx.Err() != nil {
			t.Fatal("the sample was not scored after the expert came back")
		}
		time.Sleep(20 * time.Millisecond)
	}
	rcancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	dead, err := js.Stream(ctx, topo.DeadStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := dead.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Fatalf("dead letters %+v %v, want none", info.State, err)
	}
}

// constScore is a preference backend that likes everything the same.
type constScore struct{}

func (constScore) Output() reward.Output { return reward.OutputScore }
func (constScore) Infer(_ context.Context, qs []reward.Query) ([]reward.Raw, error) {
	out := make([]reward.Raw, len(qs))
	for i := range out {
		v := 0.5
		out[i].Score = &v
	}
	return out, nil
}

// With wire.reward_batch_wait the samples a worker's fetchers hold reach a remote expert in a
// few batched requests instead of one request each, and every sample is still scored and acked.
func TestRewardWorkerBatchesRemoteCalls(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := bustest.JetStream(t)
	topo, err := bus.EnsureStreams(ctx, js, "batch")
	if err != nil {
		t.Fatal(err)
	}
	cb, err := vq.Load(filepath.Join("..", "..", "models", "codebook.vq"))
	if err != nil {
		t.Fatal(err)
	}
	var requests atomic.Int64
	srv := reward.NewHandler("hps", constScore{}, reward.HandlerOptions{MaxBatch: 64})
	front := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/infer" {
			requests.Add(1)
		}
		srv.ServeHTTP(rw, r)
	}))
	defer front.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	remote, err := reward.NewRemoteBackend(reward.RemoteConfig{URL: front.URL, Output: reward.OutputScore, Client: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	ens, err := reward.NewEnsemble(reward.Expert{Name: "hps", Backend: remote, Rule: reward.DefaultHPSRule(), Weight: 1})
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	for i := range n {
		s := bus.Sample{Run: "batch", Step: 0, PromptIndex: 1, SampleIndex: i, G: n, PlanTokens: []int32{}, PlanLogp: []float32{},
			ImageTokens: make([]int32, cb.TokensPerImage()), ImageLogp: make([]float32, cb.TokensPerImage()),
			Prompt: prompts.Prompt{Prompt: "a red circle", TaskType: prompts.Color, Nouns: []string{"circle"}, AttrNouns: []string{"red circle"}}}
		if _, err := bus.PublishSample(ctx, js, s); err != nil {
			t.Fatal(err)
		}
	}
	cfg := config.Default()
	cfg.RunID = "batch"
	cfg.Wire.RewardFetchers, cfg.Wire.RewardBatchWait = n, config.Duration(300*time.Millisecond)
	cfg.Wire.PollWait = config.Duration(200 * time.Millisecond)
	w, err := New(ctx, Deps{ID: "r1", JS: js, Ensemble: ens, Codebook: cb, Log: zerolog.Nop()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(rctx) }()
	for w.Scored() < n {
		if ctx.Err() != nil {
			t.Fatalf("%d of %d samples scored", w.Scored(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	rcancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if r := requests.Load(); r >= n/2 {
		t.Errorf("%d expert requests for %d samples, want them batched (fewer than %d)", r, n, n/2)
	}
	scored, err := js.Stream(ctx, topo.Scored.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := scored.Info(ctx); err != nil || info.State.Msgs != n {
		t.Fatalf("scored stream %+v %v, want %d messages", info.State, err, n)
	}
}
