package rewardworker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/bus/bustest"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/experts"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/plan"
	"github.com/bicot-rl/bicot/pkg/promptgen"
	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/scene"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// batchBenchSamples is four laptop steps' worth (8 prompts x G 8 each): enough for every fetcher
// to stay busy and for batches to fill.
const batchBenchSamples = 256

// repoPath resolves a run-config path, which is relative to the repository root.
func repoPath(p string) string { return filepath.Join("..", "..", p) }

// countingScorer counts ensemble calls and the samples in them, which shows whether a setting
// really batched.
type countingScorer struct {
	Scorer
	calls, items atomic.Int64
}

func (c *countingScorer) Score(ctx context.Context, items []reward.Item) ([]reward.Scores, error) {
	c.calls.Add(1)
	c.items.Add(int64(len(items)))
	return c.Scorer.Score(ctx, items)
}

// benchSamples are n samples as a rollout worker publishes them (wire.FromSample, no PNG), for
// the run's steps of P prompts x G: training prompts, each sample its own scene drawn for its
// prompt, rendered and encoded with the run's codebook into its image tokens, the scene's plan in
// the policy's vocabulary ending in end-of-text (cut at max_plan_tokens like a sampled plan), and
// plausible log-probs.
func benchSamples(b *testing.B, cfg config.Config, cb *vq.Codebook, n int) []bus.Sample {
	b.Helper()
	g, perStep := cfg.GroupSize, cfg.PromptsPerStep*cfg.GroupSize
	ps, err := promptgen.GenerateSplit(promptgen.Train, promptgen.DefaultSeed, (n/g)/8+1)
	if err != nil {
		b.Fatalf("prompts: %v", err)
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 5))
	rng.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
	vocab := tokenizer.New()
	logp := func(k int) []float32 {
		out := make([]float32, k)
		for i := range out {
			out[i] = float32(-3 * rng.Float64())
		}
		return out
	}
	out := make([]bus.Sample, n)
	for i := range out {
		p := ps[i/g]
		sc, err := promptgen.TrainingScene(p, cb.Config(), rng)
		if err != nil {
			b.Fatalf("scene for %q: %v", p.Prompt, err)
		}
		img, err := scene.Render(cb.Config(), sc)
		if err != nil {
			b.Fatalf("render %q: %v", p.Prompt, err)
		}
		codes, err := cb.Encode(img)
		if err != nil {
			b.Fatalf("encode %q: %v", p.Prompt, err)
		}
		words, err := vocab.Encode(plan.Ordered(sc))
		if err != nil {
			b.Fatalf("plan of %q: %v", p.Prompt, err)
		}
		words = append(words, vocab.EOS())
		truncated := len(words) > cfg.Sampling.MaxPlanTokens
		if truncated {
			words = words[:cfg.Sampling.MaxPlanTokens]
		}
		s := bus.Sample{Step: int64(i / perStep), PromptIndex: i / g, SampleIndex: i % g, G: g, PolicyVersion: int64(i / perStep),
			PlanTokens: make([]int32, len(words)), PlanLen: len(words), PlanTruncated: truncated,
			ImageTokens: make([]int32, len(codes)), Prompt: p, Worker: "rollout-0"}
		for k, w := range words {
			s.PlanTokens[k] = int32(w)
		}
		for k, c := range codes {
			s.ImageTokens[k] = int32(c)
		}
		s.PlanLogp, s.ImageLogp = logp(len(s.PlanTokens)), logp(len(s.ImageTokens))
		out[i] = s
	}
	return out
}

// BenchmarkRewardBatching measures a reward worker's throughput over a full queue with the
// built-in experts, scoring each sample alone or batching what its fetchers hold.
func BenchmarkRewardBatching(b *testing.B) {
	b.StopTimer()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	base := config.Default()
	cb, err := vq.Load(repoPath(base.Codebook))
	if err != nil {
		b.Fatalf("codebook: %v", err)
	}
	backend, err := mlx.NewBackend("")
	if err != nil {
		b.Fatalf("backend: %v", err)
	}
	ens, err := experts.BuildEnsemble(ctx, backend, experts.Source{Dir: repoPath(base.Experts), Seed: base.Seed}, nil, zerolog.Nop())
	if err != nil {
		b.Fatalf("experts: %v", err)
	}
	samples := benchSamples(b, base, cb, batchBenchSamples)

	for _, c := range []struct {
		name     string
		wait     time.Duration
		fetchers int
	}{
		{"single", 0, 8},
		{"batched", 20 * time.Millisecond, 8},
		{"batched32", 20 * time.Millisecond, 32},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.StopTimer()
			cfg := base
			cfg.Wire.RewardBatchWait, cfg.Wire.RewardFetchers = config.Duration(c.wait), c.fetchers
			js := bustest.JetStream(b)
			var scored time.Duration
			var calls, items int64
			for i := range b.N {
				// A run per iteration: each starts from a full sample queue and an empty scored one.
				cfg.RunID = fmt.Sprintf("%s-%d", c.name, i)
				took, sc := scoreQueue(ctx, b, js, cfg, cb, ens, samples)
				scored += took
				calls, items = calls+sc.calls.Load(), items+sc.items.Load()
			}
			b.ReportMetric(float64(b.N*len(samples))/scored.Seconds(), "samples/s")
			b.ReportMetric(float64(items)/float64(calls), "samples/call")
		})
	}
}

// scoreQueue publishes samples to a fresh run, then times a reward worker from its start until
// the learner's consumer has every scored sample. The timer runs only for that span.
func scoreQueue(ctx context.Context, b *testing.B, js jetstream.JetStream, cfg config.Config, cb *vq.Codebook,
	ens Scorer, samples []bus.Sample) (time.Duration, *countingScorer) {
	b.Helper()
	topo, err := bus.EnsureStreams(ctx, js, cfg.RunID)
	if err != nil {
		b.Fatalf("streams of %s: %v", cfg.RunID, err)
	}
	defer func() {
		if err := bus.DeleteStreams(context.Background(), js, cfg.RunID); err != nil {
			b.Errorf("delete streams of %s: %v", cfg.RunID, err)
		}
	}()
	for _, s := range samples {
		s.Run = cfg.RunID
		if _, err := bus.PublishSample(ctx, js, s); err != nil {
			b.Fatalf("publish %s: %v", s.Key(), err)
		}
	}
	sc := &countingScorer{Scorer: ens}
	w, err := New(ctx, Deps{ID: "reward-0", JS: js, Ensemble: sc, Codebook: cb, Log: zerolog.Nop()}, cfg)
	if err != nil {
		b.Fatalf("reward worker of %s: %v", cfg.RunID, err)
	}

	// The learner's side: distinct keys, since a redelivered sample may be scored twice.
	var mu sync.Mutex
	seen := map[string]bool{}
	all := make(chan struct{})
	learn := func(_ context.Context, s *bus.ScoredSample, _ jetstream.Msg) error {
		mu.Lock()
		defer mu.Unlock()
		if !seen[s.Key()] {
			seen[s.Key()] = true
			if len(seen) == len(samples) {
				close(all)
			}
		}
		return nil
	}
	cctx, ccancel := context.WithCancel(ctx)
	consumed := make(chan error, 1)
	go func() {
		consumed <- bus.Consume(cctx, js, topo.Scored, bus.Typed(learn), bus.ConsumeFrom(cfg.Wire, 1))
	}()
	wctx, wcancel := context.WithCancel(ctx)
	ran := make(chan error, 1)
	defer func() {
		wcancel()
		if err := <-ran; err != nil && !errors.Is(err, context.Canceled) {
			b.Errorf("reward worker of %s: %v", cfg.RunID, err)
		}
		ccancel()
		if err := <-consumed; err != nil {
			b.Errorf("scored consumer of %s: %v", cfg.RunID, err)
		}
	}()

	b.StartTimer()
	start := time.Now()
	go func() { ran <- w.Run(wctx) }()
	select {
	case <-all:
	case <-ctx.Done():
		b.StopTimer()
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		b.Fatalf("%d of %d samples of %s scored: %v", n, len(samples), cfg.RunID, ctx.Err())
	}
	took := time.Since(start)
	b.StopTimer()
	return took, sc
}
