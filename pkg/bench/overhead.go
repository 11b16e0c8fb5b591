package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gomlx/gomlx/backends"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/coordinator"
	"github.com/bicot-rl/bicot/pkg/experts"
	"github.com/bicot-rl/bicot/pkg/learner"
	"github.com/bicot-rl/bicot/pkg/local"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/pretrain"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/trainer"
	"github.com/bicot-rl/bicot/pkg/vq"
	"github.com/bicot-rl/bicot/pkg/wire"
)

// OverheadOptions shape the overhead measurement: the laptop run's settings (configs/laptop.yaml)
// on-policy, with one rollout and one reward worker.
type OverheadOptions struct {
	Root, Out     string
	Warmup, Steps int
	// PromptsPerStep overrides the laptop run's P (0: keep it).
	PromptsPerStep int
	// BothOrders runs each side twice, in the order system, direct, direct, system (else
	// once each, system first).
	BothOrders bool
}

// OverheadResult compares the same steps run through the system and called directly.
type OverheadResult struct {
	Steps int
	// Runs is how many runs were made, both sides together (2, or 4 with BothOrders).
	Runs int
	// Orchestrated and Direct are the mean wall time of a measured step.
	Orchestrated, Direct time.Duration
	// OrchestratedUpdate and DirectUpdate are the mean time of a measured step's update (the
	// trainer's Step: reference scoring and the optimizer step); the rest of a step is rollout,
	// scoring and moving the policy.
	OrchestratedUpdate, DirectUpdate time.Duration
	// Percent is the orchestration's share of the orchestrated step: (Orchestrated-Direct)/Orchestrated.
	Percent float64
	// SameRewards: every step of the direct loop had the run's mean reward to the last bit, so
	// both computed the same samples, rewards and updates.
	SameRewards bool
}

// Config is the laptop run's configuration for o.
func (o OverheadOptions) Config() (config.Config, error) {
	cfg, err := config.Load(filepath.Join(o.Root, "configs/laptop.yaml"))
	if err != nil {
		return cfg, err
	}
	for _, p := range []*string{&cfg.Prompts, &cfg.PretrainPrompts, &cfg.PolicyInit, &cfg.Codebook, &cfg.Experts, &cfg.Eval.Prompts} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(o.Root, *p)
		}
	}
	cfg.RunID = fmt.Sprintf("bench-overhead-%d", time.Now().UnixNano())
	if o.PromptsPerStep > 0 {
		cfg.PromptsPerStep = o.PromptsPerStep
	}
	cfg.Steps = o.Warmup + o.Steps + 1 // the last step also keeps its samples: not measured
	// The direct loop samples a step after the previous update, so the run it is compared with
	// must too: with staleness the system would sample from an older policy and compute other
	// samples (and overlap rollout with the update, which is a speed-up, not overhead).
	cfg.Staleness = 0
	cfg.MetricsAddr = ""
	return cfg, cfg.Validate()
}

// RunOverhead runs the laptop run's first steps twice with the same compute: once through the
// system (laptop mode: NATS, raft, the store, checkpoints, one rollout and one reward worker) and
// once as a plain loop that samples, scores (two at a time, as the reward worker's two fetchers
// do, while the next task samples) and updates in one goroutine's order, without bus, raft or
// store. Both start from the shipped policy with the run's seed, so they compute the same
// samples and updates; the difference in step time is the orchestration's cost.
func RunOverhead(ctx context.Context, o OverheadOptions) (OverheadResult, error) {
	if o.Warmup < 1 || o.Steps < 1 {
		return OverheadResult{}, fmt.Errorf("overhead: %d warm-up and %d measured steps, want >= 1 each", o.Warmup, o.Steps)
	}
	cfg, err := o.Config()
	if err != nil {
		return OverheadResult{}, fmt.Errorf("overhead: %w", err)
	}
	backend, err := mlx.NewBackend(cfg.Backend)
	if err != nil {
		return OverheadResult{}, err
	}
	defer backend.Finalize()
	cb, err := vq.Load(cfg.Codebook)
	if err != nil {
		return OverheadResult{}, fmt.Errorf("overhead: %w", err)
	}
	ens, err := experts.BuildEnsemble(ctx, backend, experts.Source{Dir: cfg.Experts, Seed: cfg.Seed}, nil, zerolog.Nop())
	if err != nil {
		return OverheadResult{}, fmt.Errorf("overhead: %w", err)
	}
	init, err := model.InitCheckpoint(backend, cfg.PolicyInit, cb, cfg.Seed, false, zerolog.Nop())
	if err != nil {
		return OverheadResult{}, fmt.Errorf("overhead: %w", err)
	}

	// A run records when each step ended, its mean reward and its update's seconds.
	type run struct {
		ends    []time.Time
		means   []float64
		updates []float64 // the trainer's step seconds
	}
	system := func() (run, error) {
		var (
			mu sync.Mutex
			r  run
		)
		c, err := local.Start(ctx, local.Options{Config: cfg, RolloutWorkers: 1, RewardWorkers: 1, Out: o.Out, Backend: backend,
			Ensemble: ens, InitPolicy: init, SkipEval: true, Log: zerolog.Nop(),
			OnStep: func(s learner.StepRecord) {
				mu.Lock()
				r.ends, r.means = append(r.ends, time.Now()), append(r.means, s.Stats.RewardMean)
				r.updates = append(r.updates, s.Stats.Seconds)
				mu.Unlock()
			}})
		if err != nil {
			return r, err
		}
		werr := c.Wait(ctx)
		c.Stop()
		_ = os.RemoveAll(c.Dir())
		if werr != nil {
			return r, fmt.Errorf("laptop run: %w", werr)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(r.ends) != cfg.Steps {
			return r, fmt.Errorf("laptop run recorded %d steps, want %d", len(r.ends), cfg.Steps)
		}
		return r, nil
	}
	loop := func() (run, error) {
		ends, means, updates, err := direct(ctx, cfg, backend, cb, ens, init, o.Warmup+o.Steps)
		if err != nil {
			return run{}, fmt.Errorf("direct loop: %w", err)
		}
		return run{ends, means, updates}, nil
	}
	// The second of two runs in one process is measurably slower than the first, so with
	// BothOrders the runs go system, direct, direct, system, and each side's time is the mean of
	// its two runs: the order's cost falls on both sides alike.
	order := []bool{true, false} // true: through the system
	if o.BothOrders {
		order = []bool{true, false, false, true}
	}
	var systems, directs []run
	for _, sys := range order {
		if sys {
			r, err := system()
			if err != nil {
				return OverheadResult{}, fmt.Errorf("overhead: %w", err)
			}
			systems = append(systems, r)
			continue
		}
		r, err := loop()
		if err != nil {
			return OverheadResult{}, fmt.Errorf("overhead: %w", err)
		}
		directs = append(directs, r)
	}
	last := o.Warmup + o.Steps - 1
	perStep := func(rs []run) time.Duration {
		var sum time.Duration
		for _, r := range rs {
			sum += r.ends[last].Sub(r.ends[o.Warmup-1])
		}
		return sum / time.Duration(o.Steps*len(rs))
	}
	perUpdate := func(rs []run) time.Duration {
		var sum float64
		for _, r := range rs {
			for _, u := range r.updates[o.Warmup : last+1] {
				sum += u
			}
		}
		return time.Duration(sum / float64(o.Steps*len(rs)) * float64(time.Second))
	}
	r := OverheadResult{Steps: o.Steps, Runs: len(order), SameRewards: true, Orchestrated: perStep(systems), Direct: perStep(directs),
		OrchestratedUpdate: perUpdate(systems), DirectUpdate: perUpdate(directs)}
	for _, d := range directs {
		for _, s := range systems {
			for i := range d.means {
				r.SameRewards = r.SameRewards && d.means[i] == s.means[i]
			}
		}
	}
	r.Percent = 100 * (r.Orchestrated - r.Direct).Seconds() / r.Orchestrated.Seconds()
	return r, nil
}

// direct runs steps of cfg as one process would without the system: the rollout worker's
// sampling, the reward worker's decoding and scoring, the learner's update, called in a loop. It
// returns when each step ended, its mean reward and how long its update took (seconds).
func direct(ctx context.Context, cfg config.Config, backend backends.Backend, cb *vq.Codebook, ens *reward.Ensemble, init []byte, steps int) (ends []time.Time, means, updates []float64, err error) {
	policy, err := model.Load(backend, init)
	if err != nil {
		return nil, nil, nil, err
	}
	topts, err := trainer.OptionsFor(cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	tr, err := trainer.NewTrainer(policy, topts)
	if err != nil {
		return nil, nil, nil, err
	}
	if topts.SFTCoef > 0 {
		src, err := pretrain.Anchor(cfg, policy.Config, cb)
		if err != nil {
			return nil, nil, nil, err
		}
		if err := tr.SetSupervised(src); err != nil {
			return nil, nil, nil, err
		}
	}
	ps, err := prompts.ReadPool(cfg.Prompts, cfg.PromptRepeats)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(ps) < steps*cfg.PromptsPerStep {
		return nil, nil, nil, fmt.Errorf("%d prompts, %d steps of %d need one epoch of them", len(ps), steps, cfg.PromptsPerStep)
	}
	order := coordinator.PromptOrder(cfg.Seed, 0, len(ps))
	vocab := tokenizer.New()
	// Sampling runs on a copy of the policy that takes the trainer's weights after each update,
	// as a rollout worker's does: sampling with the trainer's own model, whose variables the
	// update has just replaced, is slower.
	sampler, err := model.Load(backend, init)
	if err != nil {
		return nil, nil, nil, err
	}
	for step := range steps {
		if step > 0 {
			w, err := tr.Weights()
			if err != nil {
				return nil, nil, nil, err
			}
			if err := sampler.LoadWeights(w); err != nil {
				return nil, nil, nil, err
			}
		}
		scored, err := directRollout(ctx, cfg, tr, sampler, cb, ens, vocab, ps, order, step)
		if err != nil {
			return nil, nil, nil, err
		}
		groups, err := trainer.GroupsFromScored(scored)
		if err != nil {
			return nil, nil, nil, err
		}
		st, err := tr.Step(groups)
		if errors.Is(err, trainer.ErrAllFiltered) {
			return nil, nil, nil, fmt.Errorf("step %d: every group tied (the laptop run would draw fresh prompts)", step)
		}
		if err != nil {
			return nil, nil, nil, err
		}
		ends, means, updates = append(ends, time.Now()), append(means, st.RewardMean), append(updates, st.Seconds)
	}
	return ends, means, updates, nil
}

// directRollout samples step's tasks one after another with policy while two
// goroutines score what is sampled, and returns the scored samples.
func directRollout(ctx context.Context, cfg config.Config, tr *trainer.Trainer, policy *model.Model, cb *vq.Codebook, ens *reward.Ensemble,
	vocab *tokenizer.Vocab, ps []prompts.Prompt, order []int, step int) ([]bus.ScoredSample, error) {
	var (
		mu     sync.Mutex
		scored []bus.ScoredSample
		errs   []error
		wg     sync.WaitGroup
	)
	jobs := make(chan bus.Sample, cfg.PromptsPerStep*cfg.GroupSize)
	for range cfg.Wire.RewardFetchers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range jobs {
				img, err := s.Image(cb)
				var sc []reward.Scores
				if err == nil {
					sc, err = ens.Score(ctx, []reward.Item{{Prompt: s.Prompt, Image: img}})
				}
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					scored = append(scored, bus.ScoredSample{Sample: s, Reward: sc[0].Total, PerExpert: sc[0].PerExpert})
				}
				mu.Unlock()
			}
		}()
	}
	err := func() error {
		defer close(jobs)
		sp := cfg.Sampling
		for first := 0; first < cfg.PromptsPerStep; first += cfg.PromptsPerTask {
			var (
				refs    []bus.PromptRef
				encoded [][]int32
				ids     []uint64
			)
			for i := first; i < min(first+cfg.PromptsPerTask, cfg.PromptsPerStep); i++ {
				idx := step*cfg.PromptsPerStep + i
				p := ps[order[idx]]
				enc, err := wire.EncodePrompt(vocab, p.Prompt)
				if err != nil {
					return err
				}
				refs, encoded, ids = append(refs, bus.PromptRef{Index: idx, Prompt: p}), append(encoded, enc), append(ids, uint64(idx))
			}
			req := wire.SampleRequest(bus.SamplingFrom(sp))
			req.Prompts, req.PromptIDs, req.G, req.Seed, req.Step = encoded, ids, cfg.GroupSize, cfg.Seed, uint64(step)
			ss, err := policy.Sample(req)
			if err != nil {
				return err
			}
			for _, s := range ss {
				ref := refs[s.Prompt]
				out := bus.Sample{V: bus.SchemaVersion, Run: cfg.RunID, Step: int64(step), PromptIndex: ref.Index, SampleIndex: s.Index,
					G: cfg.GroupSize, PolicyVersion: tr.Version(), Prompt: ref.Prompt}
				if err := wire.FromSample(policy.Config, s, &out); err != nil {
					return err
				}
				jobs <- out
			}
		}
		return nil
	}()
	wg.Wait()
	if err := errors.Join(append(errs, err)...); err != nil {
		return nil, fmt.Errorf("step %d: %w", step, err)
	}
	return scored, nil
}
