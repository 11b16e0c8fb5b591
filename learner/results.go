package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/evaluate"
	"github.com/bicot-rl/bicot/pkg/experiment"
	"github.com/bicot-rl/bicot/pkg/prompts"
)

// newResultsCmd is `learner results DIR`: the table of a directory of experiment runs.
func newResultsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "results DIR",
		Short: "Summarise the experiment runs (*.jsonl) in a directory as a markdown table",
		Long: "Reads every `learner experiment --out` file in DIR and, when present, base.json and\n" +
			"base-no-plan.json (`learner eval --json` of the starting policy on the same prompts), and prints\n" +
			"one row per run: training steps and time, the final held-out oracle mean and its change from the\n" +
			"base, per task type, plan quality, image-follows-plan, extra objects, diversity, and the training\n" +
			"reward and monitored oracle over the first and last tenth of the steps (reward hacking shows as\n" +
			"a reward that climbs while the oracle does not).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return printResults(cmd.OutOrStdout(), args[0])
		},
	}
}

type runSummary struct {
	name         string
	steps        int
	trainSeconds float64
	final        *evaluate.Result
	curve        []experiment.Point
	noPlan       bool
	rewardFirst  float64
	rewardLast   float64
	oracleFirst  float64
	oracleLast   float64
	hasOracle    bool
}

func readRun(path string) (runSummary, error) {
	s := runSummary{name: strings.TrimSuffix(filepath.Base(path), ".jsonl")}
	f, err := os.Open(path)
	if err != nil {
		return s, err
	}
	defer f.Close()
	var steps []experiment.Step
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var line struct {
			Kind   string            `json:"kind"`
			Step   *experiment.Step  `json:"step"`
			Point  *experiment.Point `json:"point"`
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
		case "step":
			steps = append(steps, *line.Step)
		case "eval":
			r := line.Point.Eval
			s.final = &r
			s.curve = append(s.curve, *line.Point)
		case "config":
			s.noPlan = line.Config != nil && line.Config.Sampling.MaxPlanTokens == 0
		}
	}
	if err := sc.Err(); err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	s.steps = len(steps)
	if len(steps) > 0 {
		s.trainSeconds = steps[len(steps)-1].TrainSeconds
		k := max(1, len(steps)/10)
		mean := func(xs []experiment.Step, f func(experiment.Step) (float64, bool)) (float64, bool) {
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
		rew := func(x experiment.Step) (float64, bool) { return x.Stats.RewardMean, true }
		orc := func(x experiment.Step) (float64, bool) { v, ok := x.Stats.PerExpert["oracle"]; return v, ok }
		s.rewardFirst, _ = mean(steps[:k], rew)
		s.rewardLast, _ = mean(steps[len(steps)-k:], rew)
		s.oracleFirst, s.hasOracle = mean(steps[:k], orc)
		s.oracleLast, _ = mean(steps[len(steps)-k:], orc)
	}
	return s, nil
}

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

func printResults(w io.Writer, dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("results: no *.jsonl runs in %s", dir)
	}
	sort.Strings(files)
	base, baseNoPlan := readBase(filepath.Join(dir, "base.json")), readBase(filepath.Join(dir, "base-no-plan.json"))
	var runs []runSummary
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
	order := prompts.InReportOrder(types)
	fmt.Fprintf(w, "| run | steps | train min | mean | vs base |")
	for _, t := range order {
		fmt.Fprintf(w, " %s |", t)
	}
	fmt.Fprintln(w, " plan q | follows | extras/img | diversity | reward first→last | oracle (train) first→last |")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|")
	for range order {
		fmt.Fprint(w, "---:|")
	}
	fmt.Fprintln(w, "---:|---:|---:|---:|---|---|")
	row := func(name string, steps int, minutes float64, r *evaluate.Result, b *evaluate.Result, tail string) {
		if r == nil {
			fmt.Fprintf(w, "| %s | %d | %.1f | (no evaluation) |\n", name, steps, minutes)
			return
		}
		delta := "—"
		if b != nil {
			delta = fmt.Sprintf("%+.3f", r.Mean-b.Mean)
		}
		fmt.Fprintf(w, "| %s | %d | %.1f | %.3f | %s |", name, steps, minutes, r.Mean, delta)
		for _, t := range order {
			fmt.Fprintf(w, " %.3f |", r.TaskTypes[t])
		}
		fmt.Fprintf(w, " %.3f | %.3f | %.3f | %.3f |%s\n", r.PlanQuality, r.ImageFollowsPlan, r.Checks["extra_per_image"], r.Diversity, tail)
	}
	if base != nil {
		row("base", 0, 0, base, nil, " | |")
	}
	if baseNoPlan != nil {
		row("base, no plan", 0, 0, baseNoPlan, nil, " | |")
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
		row(r.name, r.steps, r.trainSeconds/60, r.final, b, tail)
	}
	if base != nil {
		fmt.Fprintf(w, "\nEvaluation: %d samples of %d held-out prompts per run (fixed seed).\n", base.N, base.Prompts)
	}
	printCurves(w, runs, base, order)
	return nil
}

// printCurves lists, for runs evaluated more than once, the held-out mean (and per task type)
// against training time.
func printCurves(w io.Writer, runs []runSummary, base *evaluate.Result, order []string) {
	header := false
	for _, r := range runs {
		if len(r.curve) < 2 {
			continue
		}
		if !header {
			fmt.Fprintf(w, "\nLearning curves (held-out oracle mean against training time)\n\n| run | step | train min | mean |")
			for _, t := range order {
				fmt.Fprintf(w, " %s |", t)
			}
			fmt.Fprintf(w, "\n|---|---:|---:|---:|")
			for range order {
				fmt.Fprint(w, "---:|")
			}
			fmt.Fprintln(w)
			header = true
			if base != nil {
				fmt.Fprintf(w, "| base | 0 | 0.0 | %.3f |", base.Mean)
				for _, t := range order {
					fmt.Fprintf(w, " %.3f |", base.TaskTypes[t])
				}
				fmt.Fprintln(w)
			}
		}
		for _, p := range r.curve {
			fmt.Fprintf(w, "| %s | %d | %.1f | %.3f |", r.name, p.Step, p.TrainSeconds/60, p.Eval.Mean)
			for _, t := range order {
				fmt.Fprintf(w, " %.3f |", p.Eval.TaskTypes[t])
			}
			fmt.Fprintln(w)
		}
	}
}
