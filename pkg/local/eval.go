package local

import (
	"fmt"
	"io"

	"github.com/bicot-rl/bicot/pkg/evaluate"
	"github.com/bicot-rl/bicot/pkg/prompts"
)

// PrintEval writes the evaluation table: one row per task type with the initial and final
// policy's oracle score (initial may be nil).
func PrintEval(w io.Writer, initial *evaluate.Result, final evaluate.Result) {
	types := prompts.InReportOrder(final.TaskTypes)
	fmt.Fprintf(w, "oracle eval: %d samples of %d prompts\n", final.N, final.Prompts)
	if initial != nil {
		fmt.Fprintf(w, "%-18s %8s %8s\n", "task type", "initial", "final")
	} else {
		fmt.Fprintf(w, "%-18s %8s\n", "task type", "final")
	}
	row := func(name string, a, b float64) {
		if initial != nil {
			fmt.Fprintf(w, "%-18s %8.3f %8.3f\n", name, a, b)
		} else {
			fmt.Fprintf(w, "%-18s %8.3f\n", name, b)
		}
	}
	get := func(r *evaluate.Result, f func(evaluate.Result) float64) float64 {
		if r == nil {
			return 0
		}
		return f(*r)
	}
	for _, t := range types {
		row(t, get(initial, func(r evaluate.Result) float64 { return r.TaskTypes[t] }), final.TaskTypes[t])
	}
	row("mean", get(initial, func(r evaluate.Result) float64 { return r.Mean }), final.Mean)
	row("plan quality", get(initial, func(r evaluate.Result) float64 { return r.PlanQuality }), final.PlanQuality)
	row("image follows plan", get(initial, func(r evaluate.Result) float64 { return r.ImageFollowsPlan }), final.ImageFollowsPlan)
	row("diversity", get(initial, func(r evaluate.Result) float64 { return r.Diversity }), final.Diversity)
	row("distinct scenes", get(initial, func(r evaluate.Result) float64 { return r.DistinctScenes }), final.DistinctScenes)
	for _, k := range []string{"exact_rate", "count_ok_rate", "extra_per_image"} {
		row(k, get(initial, func(r evaluate.Result) float64 { return r.Checks[k] }), final.Checks[k])
	}
	if initial != nil {
		if d, h, err := evaluate.Compare(*initial, final); err == nil {
			fmt.Fprintf(w, "mean change %+.3f ± %.3f (95%% interval, paired over %d prompts, %d samples per policy)\n", d, h, final.Prompts, final.N)
		}
	}
}
