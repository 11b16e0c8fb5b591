package evaluate

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/bicot-rl/bicot/pkg/prompts"
)

// Report is a Result with the settings that produced it: the JSON `learner eval --json` writes
// and `learner compare` reads, so that two reports can be checked to be comparable.
type Report struct {
	Result
	Checkpoint string `json:"checkpoint"`
	NoPlan     bool   `json:"no_plan"`
	// ExclusiveCells: plans were drawn without naming a cell twice.
	ExclusiveCells bool    `json:"exclusive_cells,omitempty"`
	G              int     `json:"g"`
	CFG            float64 `json:"cfg"`
	Temperature    float64 `json:"temperature"`
	Seed           uint64  `json:"seed"`
}

// WriteTable writes the report for a reader: the score per task type, then the plan, diversity
// and check figures.
func (r Report) WriteTable(w io.Writer) {
	mode := "with plans"
	switch {
	case r.NoPlan:
		mode = "no plan"
	case r.ExclusiveCells:
		mode = "with plans, exclusive cells"
	}
	fmt.Fprintf(w, "%s (%s, G=%d, cfg=%g, T=%g, seed=%d): %d samples of %d prompts\n",
		r.Checkpoint, mode, r.G, r.CFG, r.Temperature, r.Seed, r.N, r.Prompts)
	fmt.Fprintf(w, "%-12s %6s\n", "task type", "score")
	for _, t := range prompts.InReportOrder(r.TaskTypes) {
		fmt.Fprintf(w, "%-12s %6.3f\n", t, r.TaskTypes[t])
	}
	fmt.Fprintf(w, "%-12s %6.3f\n", "mean", r.Mean)
	fmt.Fprintf(w, "%-12s %6.3f\n", "plan quality", r.PlanQuality)
	fmt.Fprintf(w, "%-12s %6.3f\n", "diversity", r.Diversity)
	fmt.Fprintf(w, "%-12s %6.3f\n", "distinct", r.DistinctScenes)
	if !r.NoPlan {
		fmt.Fprintf(w, "%-18s %6.3f\n", "plan_parse", r.PlanParse)
		fmt.Fprintf(w, "%-18s %6.3f\n", "image_follows_plan", r.ImageFollowsPlan)
	}
	for _, k := range []string{"exact_rate", "count_ok_rate", "extra_image_rate", "bound_rate", "relation_rate"} {
		if v, ok := r.Checks[k]; ok {
			fmt.Fprintf(w, "%-18s %6.3f\n", k, v)
		}
	}
}

// WriteFile writes the report as indented JSON.
func (r Report) WriteFile(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("eval: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("eval: write %s: %w", path, err)
	}
	return nil
}

// CompareFiles writes two reports of the same prompts, G and seed side by side per task type,
// with the change of the mean and its 95% interval paired over the prompts (Compare). With ps,
// the prompts both reports scored in their order, it adds the scores by prompt form
// (prompts.Form) for every task type that mixes forms and for all prompts.
func CompareFiles(w io.Writer, basePath, otherPath string, ps []prompts.Prompt) error {
	a, err := readComparable(basePath)
	if err != nil {
		return err
	}
	b, err := readComparable(otherPath)
	if err != nil {
		return err
	}
	if err := writeComparison(w, a, b); err != nil {
		return err
	}
	if ps == nil {
		return nil
	}
	return writeForms(w, a, b, ps)
}

// readComparable reads a report that holds its per-prompt scores, which the paired interval
// needs.
func readComparable(path string) (Report, error) {
	var r Report
	data, err := os.ReadFile(path)
	if err != nil {
		return r, fmt.Errorf("compare: %w", err)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("compare: %s: %w", path, err)
	}
	if len(r.PromptScores) == 0 {
		return r, fmt.Errorf("compare: %s has no prompt_scores (written by an older learner eval?)", path)
	}
	return r, nil
}

func writeComparison(w io.Writer, a, b Report) error {
	if a.G != b.G || a.Seed != b.Seed || a.Prompts != b.Prompts || a.NoPlan != b.NoPlan || a.ExclusiveCells != b.ExclusiveCells {
		return fmt.Errorf("compare: different evaluations: G %d/%d, seed %d/%d, %d/%d prompts, no-plan %v/%v, exclusive cells %v/%v",
			a.G, b.G, a.Seed, b.Seed, a.Prompts, b.Prompts, a.NoPlan, b.NoPlan, a.ExclusiveCells, b.ExclusiveCells)
	}
	d, half, err := Compare(a.Result, b.Result)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%-20s %8s %8s %8s\n", "", "base", "other", "change")
	for _, t := range prompts.InReportOrder(a.TaskTypes) {
		fmt.Fprintf(w, "%-20s %8.3f %8.3f %+8.3f\n", t, a.TaskTypes[t], b.TaskTypes[t], b.TaskTypes[t]-a.TaskTypes[t])
	}
	row := func(name string, x, y float64) { fmt.Fprintf(w, "%-20s %8.3f %8.3f %+8.3f\n", name, x, y, y-x) }
	row("mean", a.Mean, b.Mean)
	row("plan quality", a.PlanQuality, b.PlanQuality)
	row("image follows plan", a.ImageFollowsPlan, b.ImageFollowsPlan)
	row("extra per image", a.Checks["extra_per_image"], b.Checks["extra_per_image"])
	row("diversity", a.Diversity, b.Diversity)
	fmt.Fprintf(w, "mean change %+.3f ± %.3f (95%% interval, paired over %d prompts, %d samples each)\n", d, half, a.Prompts, a.N)
	return nil
}

// writeForms writes a and b by prompt form. ps must be the prompts the reports scored, in order:
// their number and each task type's mean of the prompt scores must match the reports.
func writeForms(w io.Writer, a, b Report, ps []prompts.Prompt) error {
	if len(ps) != len(a.PromptScores) {
		return fmt.Errorf("compare: %d prompts given, the evaluations scored %d (same file and --limit as learner eval?)",
			len(ps), len(a.PromptScores))
	}
	type acc struct {
		n    int
		a, b float64
	}
	byType, byForm := map[string]*acc{}, map[string]*acc{}
	forms := map[string]map[string]*acc{}
	add := func(m map[string]*acc, k string, i int) {
		if m[k] == nil {
			m[k] = &acc{}
		}
		m[k].n++
		m[k].a += a.PromptScores[i]
		m[k].b += b.PromptScores[i]
	}
	for i, p := range ps {
		f := prompts.Form(p)
		if forms[p.TaskType] == nil {
			forms[p.TaskType] = map[string]*acc{}
		}
		add(byType, p.TaskType, i)
		add(forms[p.TaskType], f, i)
		add(byForm, f, i)
	}
	for t, x := range byType {
		for _, r := range []struct {
			rep Report
			sum float64
		}{{a, x.a}, {b, x.b}} {
			got := r.sum / float64(x.n)
			if want, ok := r.rep.TaskTypes[t]; !ok || math.Abs(got-want) > 1e-6 {
				return fmt.Errorf("compare: the prompts given are not the ones evaluated: task type %q scores %.4f over them in %s, the evaluation %.4f",
					t, got, r.rep.Checkpoint, want)
			}
		}
	}
	fmt.Fprintf(w, "\n%-20s %5s %8s %8s %8s\n", "by prompt form", "n", "base", "other", "change")
	row := func(name string, x *acc) {
		n := float64(x.n)
		fmt.Fprintf(w, "%-20s %5d %8.3f %8.3f %+8.3f\n", name, x.n, x.a/n, x.b/n, (x.b-x.a)/n)
	}
	order := []string{prompts.FormAttribute, prompts.FormCount, prompts.FormRelation}
	for _, t := range prompts.InReportOrder(byType) {
		if len(forms[t]) < 2 {
			continue
		}
		for _, f := range order {
			if x := forms[t][f]; x != nil {
				row(t+"/"+f, x)
			}
		}
	}
	for _, f := range order {
		if x := byForm[f]; x != nil {
			row("all/"+f, x)
		}
	}
	return nil
}
