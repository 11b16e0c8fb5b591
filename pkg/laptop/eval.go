package laptop

import (
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/bicot-rl/bicot/pkg/learn"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/oracle"
	"github.com/bicot-rl/bicot/pkg/plan"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// EvalOptions configure the oracle evaluation of a policy.
type EvalOptions struct {
	// LimitPerType keeps the first N prompts of each task type (0: all).
	LimitPerType int
	G            int
	Seed         uint64
	Temperature  float64
	CFGWeight    float64
	// NoPlan samples without a plan (the token-only ablation).
	NoPlan bool
	// Batch prompts sampled together (default 8).
	Batch int
}

// EvalResult is the oracle's verdict on a policy, the fields of `learner eval`'s JSON.
type EvalResult struct {
	TaskTypes   map[string]float64 `json:"task_types"`
	Mean        float64            `json:"mean"`
	MeanByTask  float64            `json:"mean_by_task"`
	PlanQuality float64            `json:"plan_quality"`
	Checks      map[string]float64 `json:"checks"`
	N           int                `json:"n"`
	Prompts     int                `json:"prompts"`
	Seconds     float64            `json:"seconds"`
}

// Evaluate samples G images per evaluation prompt with m, decodes them with the codebook and
// scores them with the oracle (exact scene parsing against each prompt's spec, never a reward).
// The same inputs give the same numbers (fixed seeds).
func Evaluate(m *model.Model, cb *vq.Codebook, ps []prompts.Prompt, o EvalOptions) (EvalResult, error) {
	if o.G < 1 {
		return EvalResult{}, fmt.Errorf("eval: g %d, want >= 1", o.G)
	}
	if o.Batch <= 0 {
		o.Batch = 8
	}
	ps = limitPerType(ps, o.LimitPerType)
	if len(ps) == 0 {
		return EvalResult{}, fmt.Errorf("eval: no prompts")
	}
	vocab := tokenizer.New()
	parser, err := oracle.NewParser(cb.Config())
	if err != nil {
		return EvalResult{}, fmt.Errorf("eval: %w", err)
	}
	encoded := make([][]int32, len(ps))
	for i, p := range ps {
		if p.Spec == nil {
			return EvalResult{}, fmt.Errorf("eval: prompt %d %q has no spec (the oracle needs one)", i, p.Prompt)
		}
		if encoded[i], err = learn.EncodePrompt(vocab, p.Prompt); err != nil {
			return EvalResult{}, fmt.Errorf("eval: prompt %d: %w", i, err)
		}
	}
	start := time.Now()
	report := oracle.NewReport()
	var quality float64
	for lo := 0; lo < len(ps); lo += o.Batch {
		hi := min(lo+o.Batch, len(ps))
		ids := make([]uint64, 0, hi-lo)
		for i := lo; i < hi; i++ {
			ids = append(ids, uint64(i))
		}
		ss, err := m.Sample(model.SampleRequest{Prompts: encoded[lo:hi], PromptIDs: ids, G: o.G, Seed: o.Seed,
			Temperature: o.Temperature, CFGWeight: o.CFGWeight, NoPlan: o.NoPlan})
		if err != nil {
			return EvalResult{}, fmt.Errorf("eval: %w", err)
		}
		for _, s := range ss {
			p := ps[lo+s.Prompt]
			img, err := cb.Decode(s.Codes)
			if err != nil {
				return EvalResult{}, fmt.Errorf("eval: decode: %w", err)
			}
			res, err := parser.Score(p, img)
			if err != nil {
				return EvalResult{}, fmt.Errorf("eval: score %q: %w", p.Prompt, err)
			}
			report.Add(res)
			plans := make([]int, len(s.Plan))
			for i, t := range s.Plan {
				plans[i] = int(t)
			}
			quality += plan.Quality(p, vocab.Decode(plans))
		}
	}
	sc := report.Scores()
	r := EvalResult{TaskTypes: map[string]float64{}, Mean: sc["overall"], MeanByTask: sc["overall_by_task"],
		PlanQuality: quality / float64(report.N()), Checks: report.Checks(), N: report.N(), Prompts: len(ps),
		Seconds: time.Since(start).Seconds()}
	for _, t := range report.TaskTypes() {
		r.TaskTypes[t] = sc[t]
	}
	return r, nil
}

func limitPerType(ps []prompts.Prompt, n int) []prompts.Prompt {
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

// PrintEval writes the evaluation table: one row per task type with the initial and final
// policy's oracle score (initial may be nil).
func PrintEval(w io.Writer, initial *EvalResult, final EvalResult) {
	types := make([]string, 0, len(final.TaskTypes))
	for _, t := range prompts.TaskTypes {
		if _, ok := final.TaskTypes[t]; ok {
			types = append(types, t)
		}
	}
	for t := range final.TaskTypes {
		if !slices.Contains(types, t) {
			types = append(types, t)
		}
	}
	fmt.Fprintf(w, "oracle eval: %d samples of %d prompts\n", final.N, final.Prompts)
	if initial != nil {
		fmt.Fprintf(w, "%-14s %8s %8s\n", "task type", "initial", "final")
	} else {
		fmt.Fprintf(w, "%-14s %8s\n", "task type", "final")
	}
	row := func(name string, a, b float64) {
		if initial != nil {
			fmt.Fprintf(w, "%-14s %8.3f %8.3f\n", name, a, b)
		} else {
			fmt.Fprintf(w, "%-14s %8.3f\n", name, b)
		}
	}
	get := func(r *EvalResult, f func(EvalResult) float64) float64 {
		if r == nil {
			return 0
		}
		return f(*r)
	}
	for _, t := range types {
		row(t, get(initial, func(r EvalResult) float64 { return r.TaskTypes[t] }), final.TaskTypes[t])
	}
	row("mean", get(initial, func(r EvalResult) float64 { return r.Mean }), final.Mean)
	row("plan quality", get(initial, func(r EvalResult) float64 { return r.PlanQuality }), final.PlanQuality)
	for _, k := range []string{"exact_rate", "count_ok_rate", "extra_per_image"} {
		row(k, get(initial, func(r EvalResult) float64 { return r.Checks[k] }), final.Checks[k])
	}
}
