// Command samplerates reads the samples `learner eval --samples FILE` writes (JSONL, one sample per
// line) and prints, per task type, where the samples go wrong: the share of prompts whose group
// holds at least one right sample (score 1), the share of right samples, of right plans, of
// images that follow their plan, of plans that parse into a scene (plan.Parse) and of plans that
// put two objects in one cell (the commonest reason a plan does not parse). docs/learner.md
// ("Where the relation types are stuck", "Plans that put two objects in one cell") uses it:
//
//	go run ./learner eval --prompts data/prompts/rl.jsonl --g 16 --limit 30 --samples s.jsonl
//	go run ./scripts/samplerates < s.jsonl
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/bicot-rl/bicot/pkg/plan"
	"github.com/bicot-rl/bicot/pkg/scene"
)

// sample is the part of an eval sample line this reads.
type sample struct {
	Prompt      string  `json:"prompt"`
	TaskType    string  `json:"task_type"`
	Plan        string  `json:"plan"`
	PlanQuality float64 `json:"plan_quality"`
	FollowsPlan bool    `json:"follows_plan"`
	Score       float64 `json:"score"`
}

type rates struct {
	samples, right, rightPlans, follows int
	parses, sharedCell                  int
	groupRight                          map[string]bool
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "samplerates:", err)
		os.Exit(1)
	}
}

// byCount tallies plans by the number of cells they name: how many share a cell, against what
// cells drawn independently and uniformly would share.
type byCount struct{ plans, shared int }

func run(in io.Reader, out io.Writer) error {
	byType := map[string]*rates{}
	counts := map[int]*byCount{}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for line := 1; sc.Scan(); line++ {
		var s sample
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		r := byType[s.TaskType]
		if r == nil {
			r = &rates{groupRight: map[string]bool{}}
			byType[s.TaskType] = r
		}
		right := s.Score >= 1
		r.samples++
		r.groupRight[s.Prompt] = r.groupRight[s.Prompt] || right
		if right {
			r.right++
		}
		if s.PlanQuality >= 1 {
			r.rightPlans++
		}
		if s.FollowsPlan {
			r.follows++
		}
		if _, err := plan.Parse(s.Plan, scene.DefaultConfig()); err == nil {
			r.parses++
		}
		cells, shared := planCells(s.Plan)
		if shared {
			r.sharedCell++
		}
		if cells > 0 {
			c := counts[cells]
			if c == nil {
				c = &byCount{}
				counts[cells] = c
			}
			c.plans++
			if shared {
				c.shared++
			}
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(byType) == 0 {
		return fmt.Errorf("no samples on stdin")
	}
	types := make([]string, 0, len(byType))
	for t := range byType {
		types = append(types, t)
	}
	slices.Sort(types)
	fmt.Fprintln(out, "| type | prompts | groups with a right sample | right samples | right plans | images following their plan | plans that parse | two objects in one cell |")
	fmt.Fprintln(out, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, t := range types {
		r := byType[t]
		groups := 0
		for _, ok := range r.groupRight {
			if ok {
				groups++
			}
		}
		n := float64(r.samples)
		fmt.Fprintf(out, "| %s | %d | %.2f | %.3f | %.3f | %.3f | %.3f | %.3f |\n", t, len(r.groupRight), float64(groups)/float64(len(r.groupRight)),
			float64(r.right)/n, float64(r.rightPlans)/n, float64(r.follows)/n, float64(r.parses)/n, float64(r.sharedCell)/n)
	}
	ns := make([]int, 0, len(counts))
	for n := range counts {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	cells := scene.DefaultConfig().Cells()
	fmt.Fprintln(out)
	fmt.Fprintf(out, "| cells a plan names | plans | two objects in one cell | if each cell were drawn uniformly from %d |\n", cells)
	fmt.Fprintln(out, "|---:|---:|---:|---:|")
	for _, n := range ns {
		c := counts[n]
		fmt.Fprintf(out, "| %d | %d | %.3f | %.3f |\n", n, c.plans, float64(c.shared)/float64(c.plans), uniformShare(n, cells))
	}
	return nil
}

// planCells counts the cell names in a plan and reports whether two of them are the same, whatever
// else is wrong with the plan.
func planCells(text string) (n int, shared bool) {
	seen := map[string]bool{}
	for _, w := range plan.Fields(text) {
		if _, _, ok := plan.ParseCell(w); !ok {
			continue
		}
		n++
		shared = shared || seen[w]
		seen[w] = true
	}
	return n, shared
}

// uniformShare is the chance that n cells drawn independently and uniformly from cells share one:
// 1 - (cells-1)/cells * ... * (cells-n+1)/cells.
func uniformShare(n, cells int) float64 {
	distinct := 1.0
	for k := 1; k < n; k++ {
		distinct *= float64(cells-k) / float64(cells)
	}
	return 1 - distinct
}
