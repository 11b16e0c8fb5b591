// Package evaluate samples a policy on evaluation prompts and scores every image with the oracle
// (exact scene parsing against the prompt's spec, never a reward). It gives the numbers of
// `learner eval` and of laptop mode's initial/final table: the oracle's mean per task type, the
// quality of the sampled plans, how often an image shows exactly its own plan, and diversity.
// RewardAlignment compares a reward ensemble's ranking of those samples with the oracle's
// (`reward-worker alignment`). Seeds are fixed, so the same policy and options give the same
// numbers.
//
// Checkpoint is `learner eval`: it evaluates a checkpoint file and writes the sample grid (PNG)
// and the per-sample records (JSONL) beside a Report, the Result with its settings, which
// WriteTable prints and WriteFile stores; CompareFiles is `learner compare`, two stored reports
// side by side with the paired change of the mean.
package evaluate

import (
	"fmt"
	"image"
	"math"
	"time"

	"github.com/bicot-rl/bicot/pkg/wire"

	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/oracle"
	"github.com/bicot-rl/bicot/pkg/plan"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// Options configure an evaluation.
type Options struct {
	// LimitPerType keeps the first N prompts of each task type (0: all).
	LimitPerType int
	// G samples per prompt; Batch prompts are sampled together (default 8).
	G, Batch    int
	Seed        uint64
	Temperature float64 // 0 means 1
	CFGWeight   float64
	// NoPlan samples without a plan (the token-only ablation).
	NoPlan bool
	// ExclusiveCells samples plans that never name a cell twice (model.SampleRequest.ExclusiveCells).
	ExclusiveCells bool
	// Progress, when set, is told after each batch how many prompts are done.
	Progress func(done, total int)
	// Observe, when set, sees every sample with its verdict, in prompt order.
	Observe func(Sample) error
}

// Sample is one evaluated sample.
type Sample struct {
	Prompt prompts.Prompt
	// PromptIndex is the prompt's position among the evaluated prompts, Index the sample's
	// within its prompt's group.
	PromptIndex, Index int
	Plan               string
	PlanQuality        float64
	// Drawn is the canonical plan of the scene the oracle reads in the image ("" when it reads
	// something that is not an object of the world); FollowsPlan whether that is the sample's
	// own (parseable) plan.
	Drawn       string
	FollowsPlan bool
	Score       float64
	Image       image.Image
}

// Result is the oracle's verdict on a policy.
type Result struct {
	TaskTypes   map[string]float64 `json:"task_types"`
	Mean        float64            `json:"mean"`
	MeanByTask  float64            `json:"mean_by_task"`
	PlanQuality float64            `json:"plan_quality"`
	// Diversity is the mean over prompts of the mean pairwise distance between the prompt's G
	// images: the fraction of their cells that differ (one image token is one cell, decoded
	// exactly, so this is the fraction of the canvas drawn differently). 0 when every sample is
	// the same picture; two random scenes differ in most cells.
	Diversity float64 `json:"diversity"`
	// DistinctScenes is the mean over prompts of the distinct scenes the oracle reads among the
	// G images, over G (1: every sample a different arrangement or look).
	DistinctScenes float64 `json:"distinct_scenes"`
	// PlanParse is the fraction of samples whose plan parses into a scene on the canvas;
	// ImageFollowsPlan the fraction of those whose image shows exactly that scene (the token-level
	// CoT's fidelity, whatever the plan's quality).
	PlanParse        float64            `json:"plan_parse"`
	ImageFollowsPlan float64            `json:"image_follows_plan"`
	Checks           map[string]float64 `json:"checks"`
	N                int                `json:"n"`
	Prompts          int                `json:"prompts"`
	// PromptScores is each prompt's mean oracle score, in prompt order (for paired comparisons
	// of two policies on the same prompts and seeds, see Compare).
	PromptScores []float64 `json:"prompt_scores,omitempty"`
	Seconds      float64   `json:"seconds"`
}

// Run samples G images per prompt with m, decodes them with the codebook and scores them.
func Run(m *model.Model, cb *vq.Codebook, ps []prompts.Prompt, o Options) (Result, error) {
	if o.G < 1 {
		return Result{}, fmt.Errorf("eval: g %d, want >= 1", o.G)
	}
	if o.Batch <= 0 {
		o.Batch = 8
	}
	if math.IsNaN(o.CFGWeight) || math.IsInf(o.CFGWeight, 0) || o.Temperature < 0 || math.IsNaN(o.Temperature) || math.IsInf(o.Temperature, 0) {
		return Result{}, fmt.Errorf("eval: cfg %v must be finite and temperature %v >= 0", o.CFGWeight, o.Temperature)
	}
	if cb.K() != m.Config.ImageVocab || cb.TokensPerImage() != m.Config.ImageTokens {
		return Result{}, fmt.Errorf("eval: the codebook has K=%d and %d tokens per image, the policy expects %d and %d",
			cb.K(), cb.TokensPerImage(), m.Config.ImageVocab, m.Config.ImageTokens)
	}
	vocab := tokenizer.New()
	if vocab.Size() != m.Config.TextVocab {
		return Result{}, fmt.Errorf("eval: the tokenizer has %d ids, the policy expects %d", vocab.Size(), m.Config.TextVocab)
	}
	ps = LimitPerType(ps, o.LimitPerType)
	if len(ps) == 0 {
		return Result{}, fmt.Errorf("eval: no prompts")
	}
	encoded := make([][]int32, len(ps))
	for i, p := range ps {
		if p.Spec == nil {
			return Result{}, fmt.Errorf("eval: prompt %d %q has no spec (the oracle needs one)", i, p.Prompt)
		}
		var err error
		if encoded[i], err = wire.EncodePrompt(vocab, p.Prompt); err != nil {
			return Result{}, fmt.Errorf("eval: prompt %d: %w", i, err)
		}
	}
	parser, err := oracle.NewParser(cb.Config())
	if err != nil {
		return Result{}, fmt.Errorf("eval: %w", err)
	}
	start := time.Now()
	report := oracle.NewReport()
	var quality, diversity, scenes float64
	var parsedPlans, following int
	var promptScores []float64
	for lo := 0; lo < len(ps); lo += o.Batch {
		hi := min(lo+o.Batch, len(ps))
		ids := make([]uint64, 0, hi-lo)
		for i := lo; i < hi; i++ {
			ids = append(ids, uint64(i))
		}
		samples, err := m.Sample(model.SampleRequest{Prompts: encoded[lo:hi], PromptIDs: ids, G: o.G, Seed: o.Seed,
			Temperature: o.Temperature, CFGWeight: o.CFGWeight, NoPlan: o.NoPlan, ExclusiveCells: o.ExclusiveCells})
		if err != nil {
			return Result{}, fmt.Errorf("eval: %w", err)
		}
		for i := lo; i < hi; i++ {
			p := ps[i]
			distinct := map[string]bool{}
			var codes [][]int
			promptSum := 0.0
			for j := 0; j < o.G; j++ {
				s := samples[(i-lo)*o.G+j]
				img, err := cb.Decode(s.Codes)
				if err != nil {
					return Result{}, fmt.Errorf("eval: decode sample: %w", err)
				}
				got, err := parser.Parse(img)
				if err != nil {
					return Result{}, fmt.Errorf("eval: parse sample: %w", err)
				}
				res, err := oracle.ScoreParsed(p, got)
				if err != nil {
					return Result{}, fmt.Errorf("eval: score %q: %w", p.Prompt, err)
				}
				report.Add(res)
				promptSum += res.Score
				ev := Sample{Prompt: p, PromptIndex: i, Index: j, Plan: vocab.Decode(toInts(s.Plan)), Score: res.Score, Image: img}
				ev.PlanQuality = plan.Quality(p, ev.Plan)
				quality += ev.PlanQuality
				if len(got.Unknown) == 0 {
					ev.Drawn = plan.Canonical(got.Scene())
				}
				if sc, err := plan.Parse(ev.Plan, cb.Config()); err == nil && !o.NoPlan {
					parsedPlans++
					if ev.FollowsPlan = ev.Drawn != "" && ev.Drawn == plan.Canonical(sc); ev.FollowsPlan {
						following++
					}
				}
				key := ev.Drawn
				if key == "" {
					key = "unreadable " + fmt.Sprint(s.Codes)
				}
				distinct[key] = true
				codes = append(codes, s.Codes)
				if o.Observe != nil {
					if err := o.Observe(ev); err != nil {
						return Result{}, fmt.Errorf("eval: %w", err)
					}
				}
			}
			scenes += float64(len(distinct)) / float64(o.G)
			diversity += pairwiseDistance(codes)
			promptScores = append(promptScores, promptSum/float64(o.G))
		}
		if o.Progress != nil {
			o.Progress(hi, len(ps))
		}
	}
	sc := report.Scores()
	r := Result{
		TaskTypes: map[string]float64{}, Mean: sc["overall"], MeanByTask: sc["overall_by_task"],
		PlanQuality: quality / float64(report.N()), Diversity: diversity / float64(len(ps)), DistinctScenes: scenes / float64(len(ps)),
		PlanParse: float64(parsedPlans) / float64(report.N()), Checks: report.Checks(), N: report.N(),
		Prompts: len(ps), Seconds: time.Since(start).Seconds(), PromptScores: promptScores,
	}
	if parsedPlans > 0 {
		r.ImageFollowsPlan = float64(following) / float64(parsedPlans)
	}
	for _, t := range report.TaskTypes() {
		r.TaskTypes[t] = sc[t]
	}
	return r, nil
}

// pairwiseDistance is the mean over pairs of the fraction of positions where two code
// sequences differ (0 for fewer than two).
func pairwiseDistance(codes [][]int) float64 {
	var sum float64
	pairs := 0
	for i := range codes {
		for j := i + 1; j < len(codes); j++ {
			diff := 0
			for k := range codes[i] {
				if codes[i][k] != codes[j][k] {
					diff++
				}
			}
			sum += float64(diff) / float64(len(codes[i]))
			pairs++
		}
	}
	if pairs == 0 {
		return 0
	}
	return sum / float64(pairs)
}

// Compare returns the change of the mean oracle score from a to b, evaluated on the same prompts
// with the same seeds, and the half-width of its 95% confidence interval from the prompt-paired
// differences (1.96 standard errors). The mean is over samples; with equal G per prompt that is
// the mean of the prompt means, so the interval is for the same number.
func Compare(a, b Result) (delta, half float64, err error) {
	n := len(a.PromptScores)
	if n == 0 || n != len(b.PromptScores) {
		return 0, 0, fmt.Errorf("compare: %d and %d prompt scores, want the same non-zero number", n, len(b.PromptScores))
	}
	d := make([]float64, n)
	for i := range d {
		d[i] = b.PromptScores[i] - a.PromptScores[i]
		delta += d[i]
	}
	delta /= float64(n)
	if n < 2 {
		return delta, math.Inf(1), nil
	}
	var ss float64
	for _, x := range d {
		ss += (x - delta) * (x - delta)
	}
	return delta, 1.96 * math.Sqrt(ss/float64(n-1)/float64(n)), nil
}

// LimitPerType keeps the first n prompts of each task type (all when n <= 0).
func LimitPerType(ps []prompts.Prompt, n int) []prompts.Prompt {
	if n <= 0 {
		return ps
	}
	seen := map[string]int{}
	var out []prompts.Prompt
	for _, p := range ps {
		if seen[p.TaskType] < n {
			seen[p.TaskType]++
			out = append(out, p)
		}
	}
	return out
}

func toInts(ids []int32) []int {
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = int(id)
	}
	return out
}
