package trainer

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/grpo"
	"github.com/bicot-rl/bicot/pkg/wire"
)

// ErrAllFiltered is returned by Step when zero-std filtering left no group to train on. The
// weights, optimizer state and version are unchanged; the returned stats describe the batch.
var ErrAllFiltered = errors.New("learner: every group's rewards tie; nothing to train on")

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

// Informative splits groups into those an update would learn from and those zero-std filtering
// (grpo.filter_zero_std) would drop: rewards that tie, or span less than min_spread. Without the
// filter every group is informative. A group with a NaN or infinite reward is an error.
func (t *Trainer) Informative(groups []Group) (informative, tied []Group, err error) {
	o := t.opts.AdvantageOptions()
	if !o.FilterZeroStd || len(groups) == 0 {
		return groups, nil, nil
	}
	rewards := make([][]float64, len(groups))
	for i, g := range groups {
		rewards[i] = g.Rewards()
	}
	adv, err := grpo.ComputeAdvantages(rewards, o)
	if err != nil {
		return nil, nil, fmt.Errorf("informative groups: %w", err)
	}
	kept := make([]bool, len(groups))
	for _, i := range adv.Kept {
		kept[i] = true
	}
	for i, g := range groups {
		if kept[i] {
			informative = append(informative, g)
		} else {
			tied = append(tied, g)
		}
	}
	return informative, tied, nil
}

// Step applies one BiCoT-GRPO update on the groups and advances the version by one. It refuses,
// training nothing: an invalid or partial group, a prompt or plan that does not fit the layout,
// more samples than Options.BatchSize, samples outside the staleness bound (*StaleError), and a
// batch left empty by zero-std filtering (ErrAllFiltered).
func (t *Trainer) Step(groups []Group) (StepStats, error) {
	start := time.Now()
	st, b, err := t.prepare(groups, start)
	if err != nil {
		return st, err
	}
	seqs := make([][]int32, len(b.rows))
	for i, r := range b.rows {
		seqs[i] = r.tokens
	}
	refStart := time.Now()
	refText, refImage, err := t.referenceLogps(seqs, b)
	if err != nil {
		return StepStats{}, fmt.Errorf("learner step: reference log-probs: %w", err)
	}
	st.RefSeconds = time.Since(refStart).Seconds()
	tok, err := t.policy.TokensTensor(seqs)
	if err != nil {
		return StepStats{}, fmt.Errorf("learner step: %w", err)
	}
	updStart := time.Now()
	in, err := t.inputs(tok, b, refText, refImage)
	if err != nil {
		return StepStats{}, err
	}
	out, err := t.update(in, &st)
	if err != nil {
		return StepStats{}, err
	}
	st.UpdateSeconds = time.Since(updStart).Seconds()
	return t.advance(st, out, start)
}

// referenceLogps scores the batch's sequences under the frozen reference. With loss.beta 0 the KL
// term adds nothing to the loss or its gradient, so the reference is not run - on the laptop it is
// a third of a step - and the sampling-time log-probs stand in for it; advance then reports the
// KL statistics as 0, since nothing measured them.
func (t *Trainer) referenceLogps(seqs [][]int32, b batch) (text, image [][]float32, err error) {
	if t.opts.Loss.Beta != 0 {
		return t.ref.Score(seqs, t.scoreOptions())
	}
	text, image = make([][]float32, len(b.rows)), make([][]float32, len(b.rows))
	for i, r := range b.rows {
		text[i], image[i] = r.textOld, r.imageOld
	}
	return text, image, nil
}

// StepSimulated is Step with the model's compute replaced by compute: the same checks,
// advantages, batch layout, statistics and version advance, but the weights do not change.
// Benchmarks of the orchestration use it to stand in for a model of the size they simulate.
func (t *Trainer) StepSimulated(groups []Group, compute func()) (StepStats, error) {
	start := time.Now()
	st, _, err := t.prepare(groups, start)
	if err != nil {
		return st, err
	}
	compute()
	return t.advance(st, trainOutputs[float64]{}, start)
}

// prepare checks groups, computes their advantages and lays out the batch: everything of a step
// before the model runs. ErrAllFiltered comes with the batch's statistics.
func (t *Trainer) prepare(groups []Group, start time.Time) (StepStats, batch, error) {
	maxGap, err := t.checkGroups(groups)
	if err != nil {
		return StepStats{}, batch{}, err
	}
	rewards := make([][]float64, len(groups))
	for i, g := range groups {
		rewards[i] = g.Rewards()
	}
	adv, err := grpo.ComputeAdvantages(rewards, t.opts.AdvantageOptions())
	if err != nil {
		return StepStats{}, batch{}, fmt.Errorf("learner step: %w", err)
	}
	st := StepStats{
		RewardMean: adv.Stats.RewardMean, RewardStd: adv.Stats.RewardStd, PerExpert: perExpert(groups),
		ZeroStdRatio: adv.Stats.ZeroStdRatio, Groups: len(groups), GroupsUsed: len(adv.Kept),
		GroupsFiltered: adv.Stats.Dropped, MaxStaleness: maxGap, PolicyVersion: t.version,
	}
	if len(adv.Kept) == 0 {
		st.Seconds = time.Since(start).Seconds()
		return st, batch{}, ErrAllFiltered
	}
	b, err := t.prepareBatch(groups, adv, &st)
	if err != nil {
		return StepStats{}, batch{}, err
	}
	return st, b, nil
}

// checkGroups refuses a batch with an invalid group, a group given twice, or a sample outside the
// staleness bound (all stale samples named in one *StaleError), and returns the largest version
// gap of the samples.
func (t *Trainer) checkGroups(groups []Group) (maxGap int64, err error) {
	if len(groups) == 0 {
		return 0, errors.New("learner step: no groups")
	}
	seen := map[[2]int64]bool{}
	var stale []StaleSample
	for _, g := range groups {
		if err := g.Validate(); err != nil {
			return 0, fmt.Errorf("learner step: %w", err)
		}
		k := [2]int64{g.Key.Step, int64(g.Key.PromptIndex)}
		if seen[k] {
			return 0, fmt.Errorf("learner step: group step %d prompt %d given twice", g.Key.Step, g.Key.PromptIndex)
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
		return 0, &StaleError{Version: t.version, MaxStaleness: t.opts.MaxStaleness, Samples: stale}
	}
	return maxGap, nil
}

// batch is a step's training rows at the fixed batch size: the kept groups' samples in the
// policy's layout, then zero-mask padding, with one advantage per row (0 for padding).
type batch struct {
	rows []row
	adv  []float32
}

// prepareBatch lays out the kept groups' samples and records in st what the batch trains: samples,
// mean |advantage| and the tokens of each level.
func (t *Trainer) prepareBatch(groups []Group, adv grpo.Advantages, st *StepStats) (batch, error) {
	cfg := t.policy.Config
	var b batch
	var absSum float64
	for ki, gi := range adv.Kept {
		g := groups[gi]
		prompt, err := wire.EncodePrompt(t.vocab, g.Samples[0].Prompt.Prompt)
		if err != nil {
			return batch{}, fmt.Errorf("learner step: group step %d prompt %d: %w", g.Key.Step, g.Key.PromptIndex, err)
		}
		for si := range g.Samples {
			r, err := sequenceFromWire(cfg, prompt, &g.Samples[si].Sample)
			if err != nil {
				return batch{}, fmt.Errorf("learner step: %w", err)
			}
			b.rows = append(b.rows, r)
			a := adv.PerGroup[ki][si]
			b.adv = append(b.adv, float32(a))
			absSum += math.Abs(a)
		}
	}
	if len(b.rows) > t.opts.BatchSize {
		return batch{}, fmt.Errorf("learner step: %d samples exceed batch_size %d (raise it or send fewer groups per step)", len(b.rows), t.opts.BatchSize)
	}
	st.Samples = len(b.rows)
	st.AdvAbsMean = absSum / float64(len(b.rows))
	for len(b.rows) < t.opts.BatchSize {
		b.rows = append(b.rows, padRow(cfg))
		b.adv = append(b.adv, 0)
	}
	// The level switch zeroes the other level's mask here as well as in the loss, so the token
	// counts and ratio extremes describe what was trained.
	for i := range b.rows {
		if t.opts.Loss.Level == config.LevelImage {
			clear(b.rows[i].textMask)
		}
		if t.opts.Loss.Level == config.LevelPlan {
			clear(b.rows[i].imageMask)
		}
		for _, m := range b.rows[i].textMask {
			st.PlanTokens += int(m)
		}
		for _, m := range b.rows[i].imageMask {
			st.ImageTokens += int(m)
		}
	}
	return b, nil
}

// inputs builds the update's inputs from the batch, its tokens and the reference's
// log-probs, adding the supervised anchor's batch for this update when SFTCoef > 0.
func (t *Trainer) inputs(tok *tensors.Tensor, b batch, refText, refImage [][]float32) (trainInputs[*tensors.Tensor], error) {
	L, I := t.policy.Config.TextLen, t.policy.Config.ImageTokens
	pick := func(field func(r row) []float32) [][]float32 {
		out := make([][]float32, len(b.rows))
		for i, r := range b.rows {
			out[i] = field(r)
		}
		return out
	}
	in := trainInputs[*tensors.Tensor]{
		Tokens:     tok,
		PlanOld:    matrix(pick(func(r row) []float32 { return r.textOld }), L),
		PlanRef:    matrix(refText, L),
		PlanMask:   matrix(pick(func(r row) []float32 { return r.textMask }), L),
		ImageOld:   matrix(pick(func(r row) []float32 { return r.imageOld }), I),
		ImageRef:   matrix(refImage, I),
		ImageMask:  matrix(pick(func(r row) []float32 { return r.imageMask }), I),
		Advantages: tensors.FromFlatDataAndDimensions(b.adv, len(b.rows)),
	}
	if t.opts.SFTCoef <= 0 {
		return in, nil
	}
	if t.src == nil {
		return in, errors.New("learner step: sft_coef > 0 but no supervised source (Trainer.SetSupervised)")
	}
	sb, err := t.src.Batch(int(t.steps))
	if err != nil {
		return in, fmt.Errorf("learner step: supervised batch: %w", err)
	}
	if in.SFTTokens, err = t.policy.TokensTensor(sb.Tokens); err != nil {
		return in, fmt.Errorf("learner step: supervised batch: %w", err)
	}
	if in.SFTTextMask, err = supervisedMask(sb.TextMask, L); err != nil {
		return in, fmt.Errorf("learner step: %w", err)
	}
	if in.SFTImageMask, err = supervisedMask(sb.ImageMask, I); err != nil {
		return in, fmt.Errorf("learner step: %w", err)
	}
	in.sft = true
	return in, nil
}

// matrix is rows of width values as a [len(rows), width] tensor.
func matrix(rows [][]float32, width int) *tensors.Tensor {
	out := make([]float32, 0, len(rows)*width)
	for _, r := range rows {
		out = append(out, r...)
	}
	return tensors.FromFlatDataAndDimensions(out, len(rows), width)
}

// supervisedMask is matrix for masks that come from a SupervisedSource, which may hand out rows
// of the wrong width.
func supervisedMask(rows [][]float32, width int) (*tensors.Tensor, error) {
	for _, r := range rows {
		if len(r) != width {
			return nil, fmt.Errorf("supervised mask of %d, want %d", len(r), width)
		}
	}
	return matrix(rows, width), nil
}

// update applies the Options.UpdateEpochs updates of a batch and returns the first one's
// outputs: it is on-policy (ratio 1), so it describes the step; later epochs only add their clip
// fractions to st, which show how far they went.
func (t *Trainer) update(in trainInputs[*tensors.Tensor], st *StepStats) (trainOutputs[float64], error) {
	exec := t.train
	if in.sft {
		exec = t.sft
	}
	fs := in.fields()
	args := make([]any, len(fs))
	for i, f := range fs {
		args[i] = *f
	}
	var first trainOutputs[float64]
	for e := 0; e < t.opts.UpdateEpochs; e++ {
		ts, err := exec.Exec(args...)
		if err != nil {
			return first, fmt.Errorf("learner step: update %d: %w", e+1, err)
		}
		o, err := readOutputs(ts, in.sft)
		if err != nil {
			return first, fmt.Errorf("learner step: update %d: %w", e+1, err)
		}
		if e == 0 {
			first = o
		} else {
			st.LaterClipFraction += o.ClipFraction / float64(t.opts.UpdateEpochs-1)
		}
	}
	return first, nil
}

// readOutputs names the scalars the train exec returned.
func readOutputs(ts []*tensors.Tensor, sft bool) (trainOutputs[float64], error) {
	o := trainOutputs[float64]{sft: sft}
	fs := o.fields()
	if len(ts) != len(fs) {
		return o, fmt.Errorf("train step returned %d outputs, want %d", len(ts), len(fs))
	}
	for i, f := range fs {
		*f.p = float64(tensors.ToScalar[float32](ts[i]))
	}
	return o, nil
}

// advance completes st with the first update's outputs and moves the trainer to the next version.
// The update has already been applied, so a non-finite output is returned as an error with the
// new version: the weights may now be broken, which the caller must know (restore the last
// checkpoint).
func (t *Trainer) advance(st StepStats, out trainOutputs[float64], start time.Time) (StepStats, error) {
	st.Loss, st.KL, st.PlanKL, st.ImageKL, st.RatioMean, st.ClipFraction = out.Loss, out.KL, out.PlanKL, out.ImageKL, out.RatioMean, out.ClipFraction
	st.RatioMin, st.RatioMax, st.GradNorm, st.LearningRate = out.RatioMin, out.RatioMax, out.GradNorm, out.LR
	st.SFTLoss = out.SFTLoss
	if t.opts.Loss.Beta == 0 {
		st.KL, st.PlanKL, st.ImageKL = 0, 0, 0 // the reference was not scored (referenceLogps)
	}
	if out.Tokens == 0 {
		st.RatioMin, st.RatioMax = 1, 1
	}
	t.version++
	t.steps++
	st.PolicyVersion = t.version
	st.Seconds = time.Since(start).Seconds()
	// Only the GRPO outputs are checked; a non-finite sft_loss reaches the caller in the stats.
	checked := out
	checked.sft = false
	for _, f := range checked.fields() {
		if v := *f.p; math.IsNaN(v) || math.IsInf(v, 0) {
			return st, fmt.Errorf("learner step: %s is %v after update to version %d (restore the last checkpoint)", f.name, v, t.version)
		}
	}
	return st, nil
}
