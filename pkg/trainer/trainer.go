package trainer

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/bicot-rl/bicot/pkg/config"

	"github.com/bicot-rl/bicot/pkg/wire"

	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive // graph code reads as math
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"

	"github.com/bicot-rl/bicot/pkg/grpo"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
)

// ErrAllFiltered is returned by Step when zero-std filtering left no group to train on. The
// weights, optimizer state and version are unchanged; the returned stats describe the batch.
var ErrAllFiltered = errors.New("learner: every group's rewards tie; nothing to train on")

// Trainer owns the policy being trained (its weights and optimizer state), the frozen reference
// policy of the KL term, and the policy version. It is not safe for concurrent use; while it
// lives, nobody else may change the policy's weights (sampling with it between steps is fine).
type Trainer struct {
	opts    Options
	policy  *model.Model
	ref     *model.Model
	vocab   *tokenizer.Vocab
	opt     *grpo.Optimizer
	version int64
	steps   int64 // updates applied by this trainer (and the trainers it was restored from)

	train *context.Exec
	// sft is the train step with the supervised anchor's inputs (SFTCoef > 0), src its data.
	sft *context.Exec
	src SupervisedSource
}

// SupervisedSource hands out teacher-forced batches (prompt, plan, image sequences with their
// loss masks, model.Batch) for the supervised anchor; batch s is the one for the trainer's
// update s, so a resumed run sees the same data.
type SupervisedSource interface {
	Batch(step int) (model.Batch, error)
}

// SetSupervised gives the trainer the data of the supervised anchor (Options.SFTCoef > 0). Every
// batch must have the same number of rows (the train graph has fixed shapes).
func (t *Trainer) SetSupervised(src SupervisedSource) error {
	if t.opts.SFTCoef <= 0 {
		return errors.New("set supervised: sft_coef is 0")
	}
	if src == nil {
		return errors.New("set supervised: nil source")
	}
	var err error
	t.sft, err = context.NewExec(t.policy.Backend, t.policy.Ctx, t.trainGraph)
	if err != nil {
		return fmt.Errorf("set supervised: build train step: %w", err)
	}
	t.src = src
	return nil
}

// NewTrainer prepares BiCoT-GRPO training of policy. The reference policy is a clone of policy
// as it is now. The policy's text vocabulary must be the tokenizer's.
func NewTrainer(policy *model.Model, opts Options) (*Trainer, error) {
	if policy == nil {
		return nil, errors.New("new trainer: nil policy")
	}
	ref, err := policy.Clone()
	if err != nil {
		return nil, fmt.Errorf("new trainer: %w", err)
	}
	return NewTrainerWithReference(policy, ref, opts)
}

// NewTrainerWithReference is NewTrainer with an explicit frozen reference (e.g. the base policy
// when training resumes from later weights). The trainer never updates it.
func NewTrainerWithReference(policy, reference *model.Model, opts Options) (*Trainer, error) {
	if policy == nil || reference == nil {
		return nil, errors.New("new trainer: nil policy or reference")
	}
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("new trainer: %w", err)
	}
	opts = opts.withDefaults()
	if !reference.Config.Equal(policy.Config) {
		return nil, fmt.Errorf("new trainer: reference config %+v differs from the policy's %+v", reference.Config, policy.Config)
	}
	if reference.Ctx == policy.Ctx {
		return nil, errors.New("new trainer: reference shares the policy's context; pass a Clone")
	}
	vocab := tokenizer.New()
	if vocab.Size() != policy.Config.TextVocab {
		return nil, fmt.Errorf("new trainer: tokenizer has %d ids, the policy's text vocabulary %d", vocab.Size(), policy.Config.TextVocab)
	}
	opt, err := grpo.NewOptimizer(opts.Optimizer)
	if err != nil {
		return nil, fmt.Errorf("new trainer: %w", err)
	}
	t := &Trainer{opts: opts, policy: policy, ref: reference, vocab: vocab, opt: opt, version: opts.InitialVersion}
	t.train, err = context.NewExec(policy.Backend, policy.Ctx, t.trainGraph)
	if err != nil {
		return nil, fmt.Errorf("new trainer: build train step: %w", err)
	}
	return t, nil
}

// Options returns the trainer's options (defaults filled in).
func (t *Trainer) Options() Options { return t.opts }

// Version is the policy version of the current weights: Options.InitialVersion plus the number
// of updates applied.
func (t *Trainer) Version() int64 { return t.version }

// Policy is the policy being trained (for sampling and evaluation between steps).
func (t *Trainer) Policy() *model.Model { return t.policy }

// Reference is the frozen reference policy.
func (t *Trainer) Reference() *model.Model { return t.ref }

// scoreOptions is the distribution the rollouts recorded logp_old under: the guided one they
// sampled from, or the conditional logits alone (ImageLogp conditional). Guidance weight 1 is no
// guidance (u + 1*(c-u) = c; the wire format's convention), scored without the unconditional
// branch.
func (t *Trainer) scoreOptions() model.ScoreOptions {
	w := t.opts.CFGWeight
	if w == 1 || t.opts.ImageLogp == config.ImageLogpConditional {
		w = 0
	}
	return model.ScoreOptions{CFGWeight: w, Temperature: t.opts.Temperature}
}

// trainGraph is one update. Inputs: tokens [B,T], text old/ref/mask [B,L], image old/ref/mask
// [B,I], advantages [B], and with the supervised anchor (the sft exec) three more: tokens [S,T],
// text mask [S,L], image mask [S,I], whose mean NLL times SFTCoef joins the loss the optimiser
// sees. Outputs: loss (the GRPO loss alone), kl, plan kl, image kl, ratio mean, clip fraction,
// tokens, ratio min, ratio max, grad norm, learning rate (all before the update), and with the
// anchor the supervised NLL.
func (t *Trainer) trainGraph(ctx *context.Context, in []*Node) []*Node {
	tokens, tOld, tRef, tMask, iOld, iRef, iMask, adv := in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7]
	g := tokens.Graph()
	tl, il := t.policy.LogProbsGraph(ctx, tokens, t.scoreOptions())
	out := grpo.Loss(grpo.LossInputs{
		PlanLogp: tl, PlanOld: tOld, PlanRef: tRef, PlanMask: tMask,
		ImageLogp: il, ImageOld: iOld, ImageRef: iRef, ImageMask: iMask,
		Advantages: adv,
	}, t.opts.Loss)
	total := out.Loss
	var nll *Node
	if len(in) > 8 {
		nll, _, _ = t.policy.SupervisedLossGraph(ctx, in[8], in[9], in[10])
		total = Add(total, MulScalar(nll, t.opts.SFTCoef))
	}
	// Extremes of the ratio over trained tokens (masked positions cannot win either reduction).
	ratios := func(lp, old, mask *Node) (lo, hi *Node) {
		on := GreaterThan(mask, ZerosLike(mask))
		r := Exp(Where(on, Sub(StopGradient(lp), old), ZerosLike(lp)))
		big := Scalar(g, r.DType(), 1e30)
		lo = ReduceAllMin(Where(on, r, BroadcastToDims(big, r.Shape().Dimensions...)))
		hi = ReduceAllMax(Where(on, r, BroadcastToDims(Neg(big), r.Shape().Dimensions...)))
		return
	}
	tlo, thi := ratios(tl, tOld, tMask)
	ilo, ihi := ratios(il, iOld, iMask)
	diag := t.opt.Step(ctx, g, total)
	res := []*Node{out.Loss, out.MeanKL, out.PlanKL, out.ImageKL, out.MeanRatio, out.ClipFraction, out.Tokens,
		Min(tlo, ilo), Max(thi, ihi), diag.GradNorm, diag.LR}
	if nll != nil {
		res = append(res, nll)
	}
	return res
}

// StepStats describe one update (a metrics.jsonl line). Loss, KL and ratios are measured before
// the update, on the trained tokens.
type StepStats struct {
	// PolicyVersion is the version of the weights after the step.
	PolicyVersion int64   `json:"policy_version"`
	Loss          float64 `json:"loss"`
	// RewardMean and RewardStd are over every sample of the batch (before filtering).
	RewardMean float64 `json:"reward_mean"`
	RewardStd  float64 `json:"reward_std"`
	// PerExpert is each expert's mean reward over the samples that carry it.
	PerExpert map[string]float64 `json:"per_expert,omitempty"`
	// AdvAbsMean is the mean |advantage| over the trained samples.
	AdvAbsMean float64 `json:"adv_abs_mean"`
	// KL is the mean k3 estimate against the reference; PlanKL and ImageKL per level.
	KL      float64 `json:"kl"`
	PlanKL  float64 `json:"plan_kl"`
	ImageKL float64 `json:"image_kl"`
	// Ratio exp(logp - logp_old) over trained tokens: 1 while strictly on-policy.
	RatioMean    float64 `json:"ratio_mean"`
	RatioMin     float64 `json:"ratio_min"`
	RatioMax     float64 `json:"ratio_max"`
	ClipFraction float64 `json:"clip_fraction"`
	// LaterClipFraction is the mean clip fraction of the updates after the first (update_epochs).
	LaterClipFraction float64 `json:"later_clip_fraction,omitempty"`
	// SFTLoss is the supervised anchor's mean NLL (sft_coef > 0), before the update.
	SFTLoss float64 `json:"sft_loss,omitempty"`
	// ZeroStdRatio is the fraction of groups whose rewards all tie.
	ZeroStdRatio   float64 `json:"zero_std_ratio"`
	Groups         int     `json:"groups"`
	GroupsUsed     int     `json:"groups_used"`
	GroupsFiltered int     `json:"groups_filtered"`
	Samples        int     `json:"samples"`
	// PlanTokens and ImageTokens are the tokens trained at each level (after the level switch).
	PlanTokens  int `json:"plan_tokens"`
	ImageTokens int `json:"image_tokens"`
	// MaxStaleness is the largest version gap of a trained sample.
	MaxStaleness int64   `json:"max_staleness"`
	GradNorm     float64 `json:"grad_norm"`
	LearningRate float64 `json:"lr"`
	// Seconds: the whole step, the reference scoring and the update.
	Seconds       float64 `json:"seconds"`
	RefSeconds    float64 `json:"ref_seconds"`
	UpdateSeconds float64 `json:"update_seconds"`
}

// Partition splits groups into those the trainer accepts now and those holding a sample outside
// the staleness bound.
func (t *Trainer) Partition(groups []Group) (fresh, stale []Group) {
	for _, g := range groups {
		ok := true
		for _, s := range g.Samples {
			if !isFresh(s.PolicyVersion, t.version, t.opts.MaxStaleness) {
				ok = false
				break
			}
		}
		if ok {
			fresh = append(fresh, g)
		} else {
			stale = append(stale, g)
		}
	}
	return fresh, stale
}

func isFresh(v, cur, k int64) bool { return fresh(v, cur, k) }

// Step applies one BiCoT-GRPO update on the groups and advances the version by one. It refuses,
// training nothing: an invalid or partial group, a prompt or plan that does not fit the layout,
// more samples than Options.BatchSize, samples outside the staleness bound (*StaleError), and a
// batch left empty by zero-std filtering (ErrAllFiltered).
func (t *Trainer) Step(groups []Group) (StepStats, error) {
	start := time.Now()
	cfg := t.policy.Config
	if len(groups) == 0 {
		return StepStats{}, errors.New("learner step: no groups")
	}
	seen := map[[2]int64]bool{}
	var stale []StaleSample
	var maxGap int64
	for _, g := range groups {
		if err := g.Validate(); err != nil {
			return StepStats{}, fmt.Errorf("learner step: %w", err)
		}
		k := [2]int64{g.Key.Step, int64(g.Key.PromptIndex)}
		if seen[k] {
			return StepStats{}, fmt.Errorf("learner step: group step %d prompt %d given twice", g.Key.Step, g.Key.PromptIndex)
		}
		seen[k] = true
		for _, s := range g.Samples {
			if !isFresh(s.PolicyVersion, t.version, t.opts.MaxStaleness) {
				stale = append(stale, StaleSample{Key: s.Key(), PolicyVersion: s.PolicyVersion})
				continue
			}
			maxGap = max(maxGap, t.version-s.PolicyVersion)
		}
	}
	if len(stale) > 0 {
		return StepStats{}, &StaleError{Version: t.version, MaxStaleness: t.opts.MaxStaleness, Samples: stale}
	}

	rewards := make([][]float64, len(groups))
	for i, g := range groups {
		rewards[i] = g.Rewards()
	}
	adv, err := grpo.ComputeAdvantages(rewards, t.opts.advantageOptions())
	if err != nil {
		return StepStats{}, fmt.Errorf("learner step: %w", err)
	}
	st := StepStats{
		RewardMean: adv.Stats.RewardMean, RewardStd: adv.Stats.RewardStd, PerExpert: perExpert(groups),
		ZeroStdRatio: adv.Stats.ZeroStdRatio, Groups: len(groups), GroupsUsed: len(adv.Kept),
		GroupsFiltered: adv.Stats.Dropped, MaxStaleness: maxGap, PolicyVersion: t.version,
	}
	if len(adv.Kept) == 0 {
		st.Seconds = time.Since(start).Seconds()
		return st, ErrAllFiltered
	}

	// Rows in the policy's layout, then zero-mask padding up to the fixed batch size.
	var rows []row
	var advFlat []float32
	var absSum float64
	for ki, gi := range adv.Kept {
		g := groups[gi]
		prompt, err := wire.EncodePrompt(t.vocab, g.Samples[0].Prompt.Prompt)
		if err != nil {
			return StepStats{}, fmt.Errorf("learner step: group step %d prompt %d: %w", g.Key.Step, g.Key.PromptIndex, err)
		}
		for si := range g.Samples {
			r, err := sequenceFromWire(cfg, prompt, &g.Samples[si].Sample)
			if err != nil {
				return StepStats{}, fmt.Errorf("learner step: %w", err)
			}
			rows = append(rows, r)
			a := adv.PerGroup[ki][si]
			advFlat = append(advFlat, float32(a))
			absSum += math.Abs(a)
		}
	}
	if len(rows) > t.opts.BatchSize {
		return StepStats{}, fmt.Errorf("learner step: %d samples exceed batch_size %d (raise it or send fewer groups per step)", len(rows), t.opts.BatchSize)
	}
	st.Samples = len(rows)
	st.AdvAbsMean = absSum / float64(len(rows))
	for len(rows) < t.opts.BatchSize {
		rows = append(rows, padRow(cfg))
		advFlat = append(advFlat, 0)
	}
	// The level switch zeroes the other level's mask here as well as in the loss, so the token
	// counts and ratio extremes describe what was trained.
	for i := range rows {
		if t.opts.Loss.Level == grpo.LevelImage {
			clear(rows[i].textMask)
		}
		if t.opts.Loss.Level == grpo.LevelPlan {
			clear(rows[i].imageMask)
		}
		for _, m := range rows[i].textMask {
			st.PlanTokens += int(m)
		}
		for _, m := range rows[i].imageMask {
			st.ImageTokens += int(m)
		}
	}

	B, L, I := len(rows), cfg.TextLen, cfg.ImageTokens
	seqs := make([][]int32, B)
	for i, r := range rows {
		seqs[i] = r.tokens
	}
	refStart := time.Now()
	refText, refImage, err := t.ref.Score(seqs, t.scoreOptions())
	if err != nil {
		return StepStats{}, fmt.Errorf("learner step: reference log-probs: %w", err)
	}
	st.RefSeconds = time.Since(refStart).Seconds()
	tok, err := t.policy.TokensTensor(seqs)
	if err != nil {
		return StepStats{}, fmt.Errorf("learner step: %w", err)
	}
	flat := func(pick func(r row) []float32, width int) *tensors.Tensor {
		out := make([]float32, 0, B*width)
		for _, r := range rows {
			out = append(out, pick(r)...)
		}
		return tensors.FromFlatDataAndDimensions(out, B, width)
	}
	refFlat := func(xs [][]float32, width int) *tensors.Tensor {
		out := make([]float32, 0, B*width)
		for _, x := range xs {
			out = append(out, x...)
		}
		return tensors.FromFlatDataAndDimensions(out, B, width)
	}
	updStart := time.Now()
	args := []any{tok,
		flat(func(r row) []float32 { return r.textOld }, L), refFlat(refText, L), flat(func(r row) []float32 { return r.textMask }, L),
		flat(func(r row) []float32 { return r.imageOld }, I), refFlat(refImage, I), flat(func(r row) []float32 { return r.imageMask }, I),
		tensors.FromFlatDataAndDimensions(advFlat, B)}
	exec := t.train
	if t.opts.SFTCoef > 0 {
		if t.src == nil {
			return StepStats{}, errors.New("learner step: sft_coef > 0 but no supervised source (Trainer.SetSupervised)")
		}
		b, err := t.src.Batch(int(t.steps))
		if err != nil {
			return StepStats{}, fmt.Errorf("learner step: supervised batch: %w", err)
		}
		stok, err := t.policy.TokensTensor(b.Tokens)
		if err != nil {
			return StepStats{}, fmt.Errorf("learner step: supervised batch: %w", err)
		}
		masks := func(rows [][]float32, width int) (*tensors.Tensor, error) {
			out := make([]float32, 0, len(rows)*width)
			for _, r := range rows {
				if len(r) != width {
					return nil, fmt.Errorf("supervised mask of %d, want %d", len(r), width)
				}
				out = append(out, r...)
			}
			return tensors.FromFlatDataAndDimensions(out, len(rows), width), nil
		}
		tm, err := masks(b.TextMask, L)
		if err != nil {
			return StepStats{}, fmt.Errorf("learner step: %w", err)
		}
		im, err := masks(b.ImageMask, I)
		if err != nil {
			return StepStats{}, fmt.Errorf("learner step: %w", err)
		}
		args = append(args, stok, tm, im)
		exec = t.sft
	}
	// The stats describe the first update (on-policy: ratio 1); later epochs only add clip
	// fractions, which show how far they went.
	var out []*tensors.Tensor
	for e := 0; e < t.opts.UpdateEpochs; e++ {
		o, err := exec.Exec(args...)
		if err != nil {
			return StepStats{}, fmt.Errorf("learner step: update %d: %w", e+1, err)
		}
		if e == 0 {
			out = o
		} else {
			st.LaterClipFraction += float64(tensors.ToScalar[float32](o[5])) / float64(t.opts.UpdateEpochs-1)
		}
	}
	st.UpdateSeconds = time.Since(updStart).Seconds()
	v := make([]float64, len(out))
	for i, o := range out {
		v[i] = float64(tensors.ToScalar[float32](o))
	}
	st.Loss, st.KL, st.PlanKL, st.ImageKL, st.RatioMean, st.ClipFraction = v[0], v[1], v[2], v[3], v[4], v[5]
	st.RatioMin, st.RatioMax, st.GradNorm, st.LearningRate = v[7], v[8], v[9], v[10]
	if len(v) > 11 {
		st.SFTLoss = v[11]
	}
	if v[6] == 0 {
		st.RatioMin, st.RatioMax = 1, 1
	}
	t.version++
	t.steps++
	st.PolicyVersion = t.version
	st.Seconds = time.Since(start).Seconds()
	// The update has been applied; a non-finite loss means the weights may now be broken, which
	// the caller must know (restore the last checkpoint).
	for i, name := range []string{"loss", "kl", "plan_kl", "image_kl", "ratio_mean", "clip_fraction", "tokens", "ratio_min", "ratio_max", "grad_norm", "lr"} {
		if math.IsNaN(v[i]) || math.IsInf(v[i], 0) {
			return st, fmt.Errorf("learner step: %s is %v after update to version %d (restore the last checkpoint)", name, v[i], t.version)
		}
	}
	return st, nil
}

// perExpert averages each expert's reward over the samples that report it.
func perExpert(groups []Group) map[string]float64 {
	sum, n := map[string]float64{}, map[string]int{}
	for _, g := range groups {
		for _, s := range g.Samples {
			for name, r := range s.PerExpert {
				sum[name] += r
				n[name]++
			}
		}
	}
	if len(sum) == 0 {
		return nil
	}
	out := make(map[string]float64, len(sum))
	for k, s := range sum {
		out[k] = s / float64(n[k])
	}
	return out
}
