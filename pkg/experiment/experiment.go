// Package experiment runs BiCoT-GRPO in one process, without the bus: draw prompts, sample G
// (plan, image) pairs each, decode, reward, update, and evaluate the policy on held-out prompts
// every few minutes of training. It uses exactly the pieces the distributed run uses
// (model.Sample, wire.FromSample, the reward ensemble, trainer.Trainer), so a setting measured
// here means the same in a run; what it leaves out is the plumbing (queues, raft, checkpoints).
//
// It is the harness behind the learning curves, the reward ladder and the ablations
// (`learner experiment`, docs/learner.md): the training budget is wall-clock time spent training,
// evaluations excluded, so runs of different settings get the same compute. RunFromConfig sets
// the harness up from a run config and Settings and keeps a record of the run (JSON lines);
// WriteResults tabulates a directory of records against the base policy's evaluation
// (`learner results`).
package experiment

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/evaluate"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/trainer"
	"github.com/bicot-rl/bicot/pkg/vq"
	"github.com/bicot-rl/bicot/pkg/wire"
)

// Options configure a run.
type Options struct {
	// Trainer trains the policy; its options must match Sampling (CFG weight, temperature,
	// image log-probs, cell mask).
	Trainer  *trainer.Trainer
	Codebook *vq.Codebook
	Reward   *reward.Ensemble
	// Train are the training prompts; P of them are learned per step, G samples each.
	Train []prompts.Prompt
	P, G  int
	Seed  uint64
	// Sampling are the rollout settings (the run config's sampling section, bus.SamplingFrom).
	Sampling bus.SamplingParams
	// Informative enables DAPO-style dynamic sampling: groups whose rewards span less than
	// MinSpread are set aside and more prompts are drawn (at most MaxDraws prompts per step in
	// all) until the step has P groups that carry signal. 0 trains the first P groups drawn.
	Informative bool
	MinSpread   float64
	MaxDraws    int
	// Steps and Budget bound the run (the first reached ends it; 0 = no bound, but one of them
	// must be set). Budget counts training time only.
	Steps  int
	Budget time.Duration
	// Eval are the held-out prompts; the policy is evaluated before training, every EvalEvery of
	// training time (0: only before and after), and at the end.
	Eval     []prompts.Prompt
	EvalOpts evaluate.Options
	// EvalEvery of training time between evaluations.
	EvalEvery time.Duration
	// SkipInitialEval leaves out the evaluation before training (a ladder evaluates the base
	// policy once, not once per rung).
	SkipInitialEval bool
	// OnStep and OnEval, when set, see each step's stats and each evaluation as they happen.
	OnStep func(Step) error
	OnEval func(Point) error
}

// Step is one training step's record.
type Step struct {
	Step int `json:"step"`
	// TrainSeconds is the training time so far (evaluations excluded), after this step.
	TrainSeconds float64 `json:"train_seconds"`
	// Drawn is how many prompts were sampled for the step (P unless dynamic sampling drew more).
	Drawn int               `json:"drawn"`
	Stats trainer.StepStats `json:"stats"`
}

// Point is one evaluation on the learning curve.
type Point struct {
	Step         int             `json:"step"`
	TrainSeconds float64         `json:"train_seconds"`
	Eval         evaluate.Result `json:"eval"`
}

// Result is the whole run.
type Result struct {
	Steps   []Step  `json:"steps"`
	Curve   []Point `json:"curve"`
	Seconds float64 `json:"seconds"`
}

func (o Options) validate() error {
	var errs []error
	if o.Trainer == nil || o.Codebook == nil || o.Reward == nil {
		errs = append(errs, errors.New("trainer, codebook and reward are required"))
	}
	if len(o.Train) == 0 {
		errs = append(errs, errors.New("no training prompts"))
	}
	if o.P < 1 || o.G < 2 {
		errs = append(errs, fmt.Errorf("P %d and G %d: want P >= 1 and G >= 2", o.P, o.G))
	}
	if o.Steps <= 0 && o.Budget <= 0 {
		errs = append(errs, errors.New("neither steps nor a time budget bounds the run"))
	}
	if o.Informative && o.MaxDraws < o.P {
		errs = append(errs, fmt.Errorf("max draws %d < P %d", o.MaxDraws, o.P))
	}
	if len(o.Eval) > 0 && o.EvalOpts.G < 1 {
		errs = append(errs, fmt.Errorf("eval g %d: want >= 1", o.EvalOpts.G))
	}
	return errors.Join(errs...)
}

// Run trains until Steps or Budget is reached (or ctx ends, which returns what was done with
// the context's error).
func Run(ctx context.Context, o Options) (Result, error) {
	if err := o.validate(); err != nil {
		return Result{}, fmt.Errorf("experiment: %w", err)
	}
	start := time.Now()
	var res Result
	policy := o.Trainer.Policy()
	eval := func(step int, trained time.Duration) error {
		if len(o.Eval) == 0 {
			return nil
		}
		r, err := evaluate.Run(policy, o.Codebook, o.Eval, o.EvalOpts)
		if err != nil {
			return fmt.Errorf("experiment: eval at step %d: %w", step, err)
		}
		p := Point{Step: step, TrainSeconds: trained.Seconds(), Eval: r}
		res.Curve = append(res.Curve, p)
		if o.OnEval != nil {
			return o.OnEval(p)
		}
		return nil
	}
	if !o.SkipInitialEval {
		if err := eval(0, 0); err != nil {
			return res, err
		}
	}
	d := newDrawer(o.Train, o.Seed)
	vocab := tokenizer.New()
	var trained time.Duration
	nextEval := o.EvalEvery
	step := 0
	for (o.Steps <= 0 || step < o.Steps) && (o.Budget <= 0 || trained < o.Budget) {
		if err := ctx.Err(); err != nil {
			res.Seconds = time.Since(start).Seconds()
			return res, err
		}
		t0 := time.Now()
		groups, drawn, err := o.collect(ctx, d, vocab, step)
		if err != nil {
			return res, err
		}
		st, err := o.Trainer.Step(groups)
		if err != nil && !errors.Is(err, trainer.ErrAllFiltered) {
			return res, fmt.Errorf("experiment: step %d: %w", step, err)
		}
		trained += time.Since(t0)
		step++
		s := Step{Step: step, TrainSeconds: trained.Seconds(), Drawn: drawn, Stats: st}
		res.Steps = append(res.Steps, s)
		if o.OnStep != nil {
			if err := o.OnStep(s); err != nil {
				return res, err
			}
		}
		if o.EvalEvery > 0 && trained >= nextEval {
			if err := eval(step, trained); err != nil {
				return res, err
			}
			for nextEval <= trained {
				nextEval += o.EvalEvery
			}
		}
	}
	if n := len(res.Curve); n == 0 || res.Curve[n-1].Step != step {
		if err := eval(step, trained); err != nil {
			return res, err
		}
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// collect samples and scores prompts for one step: P groups, or with dynamic sampling up to P
// informative ones from at most MaxDraws prompts (topped up with uninformative groups when too
// few carry signal, so the step still trains P groups and the policy version advances).
func (o Options) collect(ctx context.Context, d *drawer, vocab *tokenizer.Vocab, step int) ([]trainer.Group, int, error) {
	var good, flat []trainer.Group
	drawn := 0
	used := map[int]bool{}
	for len(good) < o.P {
		n := o.P - len(good)
		if o.Informative {
			n = min(n, o.MaxDraws-drawn)
		}
		if n <= 0 {
			break
		}
		idx := d.next(n, used)
		if len(idx) == 0 {
			break
		}
		gs, err := o.sample(ctx, vocab, idx, step)
		if err != nil {
			return nil, drawn, err
		}
		drawn += len(idx)
		for _, g := range gs {
			if !o.Informative || spread(g.Rewards()) >= o.MinSpread {
				good = append(good, g)
			} else {
				flat = append(flat, g)
			}
		}
		if !o.Informative {
			break
		}
	}
	for len(good) < o.P && len(flat) > 0 {
		good, flat = append(good, flat[0]), flat[1:]
	}
	return good, drawn, nil
}

func spread(rs []float64) float64 {
	lo, hi := rs[0], rs[0]
	for _, r := range rs {
		lo, hi = min(lo, r), max(hi, r)
	}
	return hi - lo
}

// sample draws G samples for each prompt index, decodes and rewards them.
func (o Options) sample(ctx context.Context, vocab *tokenizer.Vocab, idx []int, step int) ([]trainer.Group, error) {
	policy := o.Trainer.Policy()
	enc := make([][]int32, len(idx))
	ids := make([]uint64, len(idx))
	for i, pi := range idx {
		var err error
		if enc[i], err = wire.EncodePrompt(vocab, o.Train[pi].Prompt); err != nil {
			return nil, fmt.Errorf("experiment: prompt %d: %w", pi, err)
		}
		ids[i] = uint64(pi)
	}
	req := wire.SampleRequest(o.Sampling)
	req.Prompts, req.PromptIDs, req.G, req.Seed, req.Step = enc, ids, o.G, o.Seed, uint64(step)
	ss, err := policy.Sample(req)
	if err != nil {
		return nil, fmt.Errorf("experiment: step %d: %w", step, err)
	}
	version := o.Trainer.Version()
	scored := make([]bus.ScoredSample, len(ss))
	items := make([]reward.Item, len(ss))
	for i, s := range ss {
		pi := idx[s.Prompt]
		w := bus.Sample{V: bus.SchemaVersion, Run: "experiment", Step: int64(step), PromptIndex: pi, SampleIndex: s.Index,
			G: o.G, PolicyVersion: version, Prompt: o.Train[pi]}
		if err := wire.FromSample(policy.Config, s, &w); err != nil {
			return nil, fmt.Errorf("experiment: %w", err)
		}
		img, err := w.Image(o.Codebook)
		if err != nil {
			return nil, fmt.Errorf("experiment: %w", err)
		}
		scored[i].Sample = w
		items[i] = reward.Item{Prompt: o.Train[pi], Image: img}
	}
	scores, err := o.Reward.Score(ctx, items)
	if err != nil {
		return nil, fmt.Errorf("experiment: step %d: reward: %w", step, err)
	}
	for i := range scored {
		scored[i].Reward, scored[i].PerExpert = scores[i].Total, scores[i].PerExpert
	}
	return trainer.GroupsFromScored(scored)
}

// drawer hands out training prompt indices in a seeded shuffled order, reshuffled each epoch.
type drawer struct {
	rng   *rand.Rand
	order []int
	pos   int
}

func newDrawer(ps []prompts.Prompt, seed uint64) *drawer {
	d := &drawer{rng: rand.New(rand.NewPCG(seed, 0x5eed)), order: make([]int, len(ps))}
	for i := range d.order {
		d.order[i] = i
	}
	d.rng.Shuffle(len(d.order), func(i, j int) { d.order[i], d.order[j] = d.order[j], d.order[i] })
	return d
}

// next returns up to n indices not in used, and adds them to it.
func (d *drawer) next(n int, used map[int]bool) []int {
	n = min(n, len(d.order)-len(used))
	out := make([]int, 0, n)
	for len(out) < n {
		if d.pos == len(d.order) {
			d.rng.Shuffle(len(d.order), func(i, j int) { d.order[i], d.order[j] = d.order[j], d.order[i] })
			d.pos = 0
		}
		i := d.order[d.pos]
		d.pos++
		if !used[i] {
			used[i] = true
			out = append(out, i)
		}
	}
	return out
}
