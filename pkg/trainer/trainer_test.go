package trainer

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/grpo"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/wire"
)

// The wire form of a sample rebuilds exactly the sequence, masks and log-probs the model sampled,
// for plans that end with end-of-text, plans cut at max_plan_tokens and no plan at all.
func TestSampleWireRoundTrip(t *testing.T) {
	m := newPolicy(t, tinyConfig(), 1)
	vocab := tokenizer.New()
	for _, tc := range []struct {
		name    string
		maxPlan int
		noPlan  bool
	}{{"free", 0, false}, {"cut", 2, false}, {"none", 0, true}} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := wire.EncodePrompt(vocab, testPrompts[0])
			if err != nil {
				t.Fatal(err)
			}
			ss, err := m.Sample(model.SampleRequest{Prompts: [][]int32{p}, G: 6, Seed: 3, MaxPlanTokens: tc.maxPlan, NoPlan: tc.noPlan, CFGWeight: 2})
			if err != nil {
				t.Fatal(err)
			}
			truncated := 0
			for _, s := range ss {
				var w Group
				w.Samples = make([]bus.ScoredSample, 1)
				ws := &w.Samples[0].Sample
				ws.Run, ws.G = "test", 1
				if err := wire.FromSample(m.Config, s, ws); err != nil {
					t.Fatal(err)
				}
				r, err := sequenceFromWire(m.Config, p, ws)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(r.tokens, s.Tokens) || !slices.Equal(r.textMask, s.TextMask) || !slices.Equal(r.textOld, s.TextLogp) ||
					!slices.Equal(r.imageOld, s.ImageLogp) || !slices.Equal(r.imageMask, s.ImageMask) {
					t.Fatalf("round trip differs:\n tokens %v\n want   %v\n mask %v want %v", r.tokens, s.Tokens, r.textMask, s.TextMask)
				}
				if s.Truncated {
					truncated++
				}
			}
			if tc.name == "cut" && truncated == 0 {
				t.Fatal("no sample hit max_plan_tokens; the case is not exercised")
			}
		})
	}
}

// Strictly on-policy (samples drawn from the trainer's own weights, reference == policy), the
// first update sees ratio 1 and KL 0 (also with guidance, and with guidance weight 1 = off at
// temperature 0.7), so the loss is the hand-computed -(sum_b A_b*n_b)/sum_b n_b.
// With exclusive cells the rollouts record plan log-probs under the masked distribution and the
// trainer scores the same: the on-policy ratio is 1. A trainer that does not mask scores those
// plans differently, so the check is not vacuous.
func TestOnPolicyRatioIsOneWithExclusiveCells(t *testing.T) {
	cfg := tinyConfig()
	vocab := tokenizer.New()
	for _, w := range []string{"a1", "b1", "a2", "b2"} {
		id, ok := vocab.ID(w)
		if !ok {
			t.Fatalf("no word %q", w)
		}
		cfg.CellTokens = append(cfg.CellTokens, int32(id))
	}
	m := newPolicy(t, cfg, 2)
	favourEOS(t, m, 4)
	favourTokens(t, m, 5, cfg.CellTokens...)
	r := rollout{g: 8, cfg: 3, condLogp: true, maxPlan: 4, exclusive: true, seed: 5, promptIDs: []int{0, 1}, reward: targetReward(1)}
	groups := r.groups(t, m)
	twoCells := 0
	for _, g := range groups {
		for _, s := range g.Samples {
			n := 0
			for _, w := range s.PlanTokens[:s.PlanLen] {
				if slices.Contains(cfg.CellTokens, w) {
					n++
				}
			}
			if n >= 2 {
				twoCells++
			}
		}
	}
	if twoCells == 0 {
		t.Fatal("no plan names two cells: the mask was never used")
	}
	ratio := func(exclusive bool) StepStats {
		t.Helper()
		o := DefaultOptions()
		o.BatchSize = 16
		o.CFGWeight, o.ImageLogp, o.ExclusiveCells = 3, config.ImageLogpConditional, exclusive
		clone, err := m.Clone()
		if err != nil {
			t.Fatal(err)
		}
		st, err := mustTrainer(t, clone, o).Step(groups)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := ratio(true)
	for name, v := range map[string]float64{"ratio_mean": st.RatioMean, "ratio_min": st.RatioMin, "ratio_max": st.RatioMax} {
		if math.Abs(v-1) > 1e-5 {
			t.Errorf("exclusive cells: %s = %.8f, want 1 within 1e-5", name, v)
		}
	}
	if math.Abs(st.KL) > 1e-6 {
		t.Errorf("exclusive cells: kl %g, want 0", st.KL)
	}
	o := DefaultOptions()
	o.ExclusiveCells = true
	if _, err := NewTrainer(newPolicy(t, tinyConfig(), 2), o); err == nil || !strings.Contains(err.Error(), "cell_tokens") {
		t.Errorf("policy without cell words: %v, want an error naming cell_tokens", err)
	}
	// Unmasked, the plan words after a named cell are less likely than they were drawn at.
	if st := ratio(false); st.RatioMin > 0.999 {
		t.Errorf("a trainer without the mask: ratio min %.6f, want it below 1", st.RatioMin)
	}
}

func TestOnPolicyRatioIsOne(t *testing.T) {
	for _, tc := range []struct {
		cfg, temp float64
		cond      bool
	}{{0, 0, false}, {3, 0, false}, {1, 0.7, false}, {3, 0, true}, {3, 0.7, true}} {
		cfgW := tc.cfg
		m := newPolicy(t, tinyConfig(), 2)
		favourEOS(t, m, 5.5)
		o := DefaultOptions()
		o.BatchSize = 16
		o.CFGWeight, o.Temperature = cfgW, tc.temp
		if tc.cond {
			o.ImageLogp = config.ImageLogpConditional
		}
		tr := mustTrainer(t, m, o)
		r := rollout{g: 8, cfg: cfgW, condLogp: tc.cond, temp: tc.temp, maxPlan: 4, seed: 5, promptIDs: []int{0, 1}, reward: targetReward(1)}
		groups := r.groups(t, m)
		st, err := tr.Step(groups)
		if err != nil {
			t.Fatal(err)
		}
		for name, v := range map[string]float64{"ratio_mean": st.RatioMean, "ratio_min": st.RatioMin, "ratio_max": st.RatioMax} {
			if math.Abs(v-1) > 1e-5 {
				t.Errorf("cfg %g: %s = %.8f, want 1 within 1e-5", cfgW, name, v)
			}
		}
		if math.Abs(st.KL) > 1e-6 || st.ClipFraction != 0 {
			t.Errorf("cfg %g: kl %g clip fraction %g, want 0 (reference == policy)", cfgW, st.KL, st.ClipFraction)
		}
		adv, err := grpo.ComputeAdvantages([][]float64{groups[0].Rewards(), groups[1].Rewards()}, grpo.AdvantageOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var num, den float64
		plan := 0
		for gi, g := range groups {
			for si, s := range g.Samples {
				n := float64(s.PlanLen + len(s.ImageTokens))
				plan += s.PlanLen
				num += adv.PerGroup[gi][si] * n
				den += n
			}
		}
		want := -num / den
		if math.Abs(want) < 1e-4 {
			t.Fatalf("cfg %g: hand-computed loss %g: plan lengths do not vary enough for an exactness check", cfgW, want)
		}
		if math.Abs(st.Loss-want) > 1e-5 {
			t.Errorf("cfg %g: loss %.8f, hand-computed %.8f", cfgW, st.Loss, want)
		}
		if st.PlanTokens != plan || st.ImageTokens != 16*tinyConfig().ImageTokens || st.Samples != 16 {
			t.Errorf("cfg %g: tokens plan %d image %d samples %d, want %d, %d, 16", cfgW, st.PlanTokens, st.ImageTokens, st.Samples, plan, 16*tinyConfig().ImageTokens)
		}
		if st.PolicyVersion != 1 || tr.Version() != 1 || !(st.GradNorm > 0) || st.LearningRate != float64(float32(config.DefaultLR)) {
			t.Errorf("cfg %g: version %d/%d grad norm %g lr %g", cfgW, st.PolicyVersion, tr.Version(), st.GradNorm, st.LearningRate)
		}
		if math.Abs(st.PerExpert["half"]-st.RewardMean/2) > 1e-12 || math.Abs(st.AdvAbsMean) == 0 {
			t.Errorf("cfg %g: per-expert %v reward mean %g adv |A| %g", cfgW, st.PerExpert, st.RewardMean, st.AdvAbsMean)
		}
		// The update moved the policy away from the reference.
		st2, err := tr.Step(rollout{version: 1, step: 1, g: 8, cfg: cfgW, condLogp: tc.cond, temp: tc.temp, maxPlan: 4, seed: 5, promptIDs: []int{0, 1}, reward: targetReward(1)}.groups(t, m))
		if err != nil {
			t.Fatal(err)
		}
		if !(st2.KL > 0) {
			t.Errorf("cfg %g: kl after one update %g, want > 0", cfgW, st2.KL)
		}
		// The sampling settings matter: a learner scoring under other ones sees ratios != 1.
		wrong := o
		wrong.CFGWeight, wrong.Temperature = cfgW+2, 1.3
		same := newPolicy(t, tinyConfig(), 2)
		favourEOS(t, same, 5.5) // the weights that drew the samples
		stw, err := mustTrainer(t, same, wrong).Step(groups)
		if err != nil {
			t.Fatal(err)
		}
		if !(stw.RatioMax-stw.RatioMin > 1e-2) {
			t.Errorf("cfg %g: mismatched sampling settings still give ratios in [%g, %g]", cfgW, stw.RatioMin, stw.RatioMax)
		}
	}
}

// More updates per batch move the policy further on the same samples; they need clipping, and
// the stats still describe the first (on-policy) update.
func TestUpdateEpochs(t *testing.T) {
	o := DefaultOptions()
	o.BatchSize = 16
	o.UpdateEpochs = 3
	if err := o.Validate(); err == nil {
		t.Fatal("update_epochs 3 without clipping accepted")
	}
	o.Loss.Clip = true
	kl := map[int]float64{}
	for _, epochs := range []int{1, 3} {
		m := newPolicy(t, tinyConfig(), 2)
		o.UpdateEpochs = epochs
		tr := mustTrainer(t, m, o)
		r := rollout{g: 8, maxPlan: 4, seed: 5, promptIDs: []int{0, 1}, reward: targetReward(1)}
		st, err := tr.Step(r.groups(t, m))
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(st.RatioMean-1) > 1e-5 || tr.Version() != 1 {
			t.Fatalf("epochs %d: first-update ratio %g, version %d", epochs, st.RatioMean, tr.Version())
		}
		r.version, r.step = 1, 1
		st2, err := tr.Step(r.groups(t, m))
		if err != nil {
			t.Fatal(err)
		}
		kl[epochs] = st2.KL
	}
	if !(kl[3] > kl[1]) {
		t.Fatalf("KL after one step: %g with 3 updates per batch, %g with 1; want more movement", kl[3], kl[1])
	}
}

type fixedSource struct {
	b     model.Batch
	calls []int
}

func (f *fixedSource) Batch(step int) (model.Batch, error) {
	f.calls = append(f.calls, step)
	return f.b, nil
}

// The supervised anchor joins the update: it needs a source, reports its loss, asks for the
// batch of each update in turn, and changes the weights the update produces.
func TestSupervisedAnchor(t *testing.T) {
	o := DefaultOptions()
	o.BatchSize = 16
	o.SFTCoef = 1
	m := newPolicy(t, tinyConfig(), 2)
	tr := mustTrainer(t, m, o)
	r := rollout{g: 8, maxPlan: 4, seed: 5, promptIDs: []int{0, 1}, reward: targetReward(1)}
	if _, err := tr.Step(r.groups(t, m)); err == nil {
		t.Fatal("sft_coef without a source trained")
	}
	groups := r.groups(t, m)
	var b model.Batch
	for _, g := range groups[0].Samples[:4] {
		seq, err := m.Config.Sequence(mustEncode(t, g.Prompt.Prompt), g.PlanTokens, toCodes(g.ImageTokens))
		if err != nil {
			t.Fatal(err)
		}
		tm, im := m.Config.Masks(seq, false)
		b.Tokens, b.TextMask, b.ImageMask = append(b.Tokens, seq), append(b.TextMask, tm), append(b.ImageMask, im)
	}
	src := &fixedSource{b: b}
	if err := tr.SetSupervised(src); err != nil {
		t.Fatal(err)
	}
	st, err := tr.Step(groups)
	if err != nil {
		t.Fatal(err)
	}
	if !(st.SFTLoss > 0) || math.Abs(st.RatioMean-1) > 1e-5 {
		t.Fatalf("sft loss %v, ratio %v", st.SFTLoss, st.RatioMean)
	}
	r.version, r.step = 1, 1
	if _, err := tr.Step(r.groups(t, m)); err != nil {
		t.Fatal(err)
	}
	if len(src.calls) != 2 || src.calls[0] != 0 || src.calls[1] != 1 {
		t.Fatalf("batches asked for: %v, want [0 1]", src.calls)
	}
	o.SFTCoef = -1
	if err := o.Validate(); err == nil {
		t.Fatal("negative sft_coef accepted")
	}
}

func mustEncode(t *testing.T, text string) []int32 {
	t.Helper()
	ids, err := wire.EncodePrompt(tokenizer.New(), text)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func toCodes(ts []int32) []int {
	out := make([]int, len(ts))
	for i, c := range ts {
		out[i] = int(c)
	}
	return out
}

// With beta 0 the reference is not scored: the update is the one a vanishing beta makes (the KL
// term's gradient is beta times its own), and the KL statistics read 0 rather than a value that
// nothing measured.
func TestBetaZeroSkipsTheReference(t *testing.T) {
	type result struct {
		st   StepStats
		logp [][]float32
	}
	res := map[float64]result{}
	for _, beta := range []float64{0, 1e-30} {
		m := newPolicy(t, tinyConfig(), 2)
		o := DefaultOptions()
		o.BatchSize = 16
		o.Optimizer.LR = 1e-2 // move the policy well away from the reference in one step
		o.Loss.Beta = beta
		tr := mustTrainer(t, m, o)
		r := rollout{g: 8, maxPlan: 4, seed: 5, promptIDs: []int{0, 1}, reward: targetReward(1)}
		if _, err := tr.Step(r.groups(t, m)); err != nil {
			t.Fatal(err)
		}
		r.version, r.step = 1, 1
		groups := r.groups(t, m)
		st, err := tr.Step(groups)
		if err != nil {
			t.Fatal(err)
		}
		var seqs [][]int32
		for _, g := range groups {
			for i := range g.Samples {
				r, err := sequenceFromWire(m.Config, mustEncode(t, g.Samples[i].Prompt.Prompt), &g.Samples[i].Sample)
				if err != nil {
					t.Fatal(err)
				}
				seqs = append(seqs, r.tokens)
			}
		}
		text, _, err := tr.Policy().Score(seqs, tr.scoreOptions())
		if err != nil {
			t.Fatal(err)
		}
		res[beta] = result{st, text}
	}
	skip, tiny := res[0], res[1e-30]
	if !(tiny.st.KL > 1e-4) {
		t.Fatalf("kl %g with a vanishing beta: the policy did not move from the reference, the test shows nothing", tiny.st.KL)
	}
	if skip.st.KL != 0 || skip.st.PlanKL != 0 || skip.st.ImageKL != 0 {
		t.Errorf("beta 0 reports kl %g plan %g image %g, want 0 (nothing measured it)", skip.st.KL, skip.st.PlanKL, skip.st.ImageKL)
	}
	if math.Abs(skip.st.Loss-tiny.st.Loss) > 1e-6 || math.Abs(skip.st.RatioMean-tiny.st.RatioMean) > 1e-6 {
		t.Errorf("loss %g ratio %g with beta 0, %g %g with a vanishing beta", skip.st.Loss, skip.st.RatioMean, tiny.st.Loss, tiny.st.RatioMean)
	}
	for i := range skip.logp {
		for j := range skip.logp[i] {
			if d := math.Abs(float64(skip.logp[i][j] - tiny.logp[i][j])); d > 1e-5 {
				t.Fatalf("sequence %d token %d: log-prob %g after beta 0 updates, %g after vanishing-beta ones", i, j, skip.logp[i][j], tiny.logp[i][j])
			}
		}
	}
}
