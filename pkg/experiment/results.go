package experiment

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bicot-rl/bicot/pkg/evaluate"
	"github.com/bicot-rl/bicot/pkg/prompts"
)

// runSummary is what the results table shows of one record file.
type runSummary struct {
	name         string
	steps        int
	trainSeconds float64
	final        *evaluate.Result
	curve        []Point
	noPlan       bool
	rewardFirst  float64
	rewardLast   float64
	oracleFirst  float64
	oracleLast   float64
	hasOracle    bool
}

// readRun summarises a record file; the run is named after the file.
func readRun(path string) (runSummary, error) {
	s := runSummary{name: strings.TrimSuffix(filepath.Base(path), ".jsonl")}
	f, err := os.Open(path)
	if err != nil {
		return s, err
	}
	defer f.Close()
	var steps []Step
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20) // a config line holds the whole run config
	for sc.Scan() {
		// Of the config line only whether the run sampled plans: that picks the base it is
		// compared with.
		var line struct {
			Kind   string `json:"kind"`
			Step   *Step  `json:"step"`
			Point  *Point `json:"point"`
			Config *struct {
				Sampling struct {
					MaxPlanTokens int `json:"max_plan_tokens"`
				} `json:"sampling"`
			} `json:"config"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return s, fmt.Errorf("%s: %w", path, err)
		}
		switch line.Kind {
		case kindStep:
			steps = append(steps, *line.Step)
		case kindEval:
			r := line.Point.Eval
			s.final = &r
			s.curve = append(s.curve, *line.Point)
		case kindConfig:
			s.noPlan = line.Config != nil && line.Config.Sampling.MaxPlanTokens == 0
		}
	}
	if err := sc.Err(); err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	s.summariseSteps(steps)
	return s, nil
}

// summariseSteps sets the step count, the training time and the reward and monitored oracle over
// the first and last tenth of the steps: a reward that climbs while the oracle does not is
// reward hacking.
func (s *runSummary) summariseSteps(steps []Step) {
	s.steps = len(steps)
	if len(steps) == 0 {
		return
	}
	s.trainSeconds = steps[len(steps)-1].TrainSeconds
	k := max(1, len(steps)/10)
	first, last := steps[:k], steps[len(steps)-k:]
	rew := func(x Step) (float64, bool) { return x.Stats.RewardMean, true }
	orc := func(x Step) (float64, bool) { v, ok := x.Stats.PerExpert["oracle"]; return v, ok }
	s.rewardFirst, _ = meanOf(first, rew)
	s.rewardLast, _ = meanOf(last, rew)
	s.oracleFirst, s.hasOracle = meanOf(first, orc)
	s.oracleLast, _ = meanOf(last, orc)
}

// meanOf is the mean of f over the steps that have a value (false when none has).
func meanOf(xs []Step, f func(Step) (float64, bool)) (float64, bool) {
	sum, n := 0.0, 0
	for _, x := range xs {
		if v, ok := f(x); ok {
			sum += v
			n++
		}
	}
	if n == 0 {
		return 0, false
	}
	return sum / float64(n), true
}

// readBase reads a `learner eval --json` result; a missing or unreadable one is no base.
func readBase(path string) *evaluate.Result {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var r evaluate.Result
	if json.Unmarshal(b, &r) != nil {
		return nil
	}
	return &r
}

// WriteResults writes the markdown table of the record files (*.jsonl, Settings.Out) in dir:
// one row per run with its final held-out evaluation, its change from the base (base.json, or
// base-no-plan.json for runs without plans, when present), and its training reward and monitored
// oracle first→last; then the learning curves of the runs evaluated more than once.
func WriteResults(w io.Writer, dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("results: no *.jsonl runs in %s", dir)
	}
	sort.Strings(files)
	runs := make([]runSummary, 0, len(files))
	types := map[string]float64{}
	for _, f := range files {
		r, err := readRun(f)
		if err != nil {
			return err
		}
		runs = append(runs, r)
		if r.final != nil {
			for t := range r.final.TaskTypes {
				types[t] = 0
			}
		}
	}
	t := table{w: w, order: prompts.InReportOrder(types)}
	base, baseNoPlan := readBase(filepath.Join(dir, "base.json")), readBase(filepath.Join(dir, "base-no-plan.json"))
	t.runs(runs, base, baseNoPlan)
	if base != nil {
		fmt.Fprintf(w, "\nEvaluation: %d samples of %d held-out prompts per run (fixed seed).\n", base.N, base.Prompts)
	}
	t.curves(runs, base)
	return nil
}

// table writes the results' markdown with a column per task type, in order.
type table struct {
	w     io.Writer
	order []string
}

func (t table) runs(runs []runSummary, base, baseNoPlan *evaluate.Result) {
	fmt.Fprintf(t.w, "| run | steps | train min | mean | vs base |")
	t.typeHeader()
	fmt.Fprintln(t.w, " plan q | follows | extras/img | diversity | reward first→last | oracle (train) first→last |")
	fmt.Fprintf(t.w, "|---|---:|---:|---:|---:|")
	t.typeRule()
	fmt.Fprintln(t.w, "---:|---:|---:|---:|---|---|")
	if base != nil {
		t.run("base", 0, 0, base, nil, " | |")
	}
	if baseNoPlan != nil {
		t.run("base, no plan", 0, 0, baseNoPlan, nil, " | |")
	}
	for _, r := range runs {
		b := base
		if r.noPlan {
			b = baseNoPlan
		}
		tail := fmt.Sprintf(" %.3f→%.3f |", r.rewardFirst, r.rewardLast)
		if r.hasOracle {
			tail += fmt.Sprintf(" %.3f→%.3f |", r.oracleFirst, r.oracleLast)
		} else {
			tail += " |"
		}
		t.run(r.name, r.steps, r.trainSeconds/60, r.final, b, tail)
	}
}

func (t table) run(name string, steps int, minutes float64, r, base *evaluate.Result, tail string) {
	if r == nil {
		fmt.Fprintf(t.w, "| %s | %d | %.1f | (no evaluation) |\n", name, steps, minutes)
		return
	}
	delta := "—"
	if base != nil {
		delta = fmt.Sprintf("%+.3f", r.Mean-base.Mean)
	}
	fmt.Fprintf(t.w, "| %s | %d | %.1f | %.3f | %s |", name, steps, minutes, r.Mean, delta)
	t.typeCells(r)
	fmt.Fprintf(t.w, " %.3f | %.3f | %.3f | %.3f |%s\n", r.PlanQuality, r.ImageFollowsPlan, r.Checks["extra_per_image"], r.Diversity, tail)
}

// curves lists, for runs evaluated more than once, the held-out mean (and per task type)
// against training time.
func (t table) curves(runs []runSummary, base *evaluate.Result) {
	header := false
	for _, r := range runs {
		if len(r.curve) < 2 {
			continue
		}
		if !header {
			t.curveHeader(base)
			header = true
		}
		for _, p := range r.curve {
			fmt.Fprintf(t.w, "| %s | %d | %.1f | %.3f |", r.name, p.Step, p.TrainSeconds/60, p.Eval.Mean)
			t.typeCells(&p.Eval)
			fmt.Fprintln(t.w)
		}
	}
}

func (t table) curveHeader(base *evaluate.Result) {
	fmt.Fprintf(t.w, "\nLearning curves (held-out oracle mean against training time)\n\n| run | step | train min | mean |")
	t.typeHeader()
	fmt.Fprintf(t.w, "\n|---|---:|---:|---:|")
	t.typeRule()
	fmt.Fprintln(t.w)
	if base != nil {
		fmt.Fprintf(t.w, "| base | 0 | 0.0 | %.3f |", base.Mean)
		t.typeCells(base)
		fmt.Fprintln(t.w)
	}
}

func (t table) typeHeader() {
	for _, ty := range t.order {
		fmt.Fprintf(t.w, " %s |", ty)
	}
}

func (t table) typeRule() {
	for range t.order {
		fmt.Fprint(t.w, "---:|")
	}
}

func (t table) typeCells(r *evaluate.Result) {
	for _, ty := range t.order {
		fmt.Fprintf(t.w, " %.3f |", r.TaskTypes[ty])
	}
}
