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

func run(in io.Reader, out io.Writer) error {
	byType := map[string]*rates{}
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
		if sharesCell(s.Plan) {
			r.sharedCell++
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
	return nil
}

// sharesCell reports whether two of a plan's object phrases name the same cell, whatever else is
// wrong with them.
func sharesCell(text string) bool {
	seen := map[string]bool{}
	for _, w := range plan.Fields(text) {
		if _, _, ok := plan.ParseCell(w); !ok {
			continue
		}
		if seen[w] {
			return true
		}
		seen[w] = true
	}
	return false
}
