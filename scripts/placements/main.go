// Command placements reads the samples `learner eval --samples FILE` writes (JSONL) and the prompt
// file they were drawn from, and prints, for each relation the prompts ask for, where the plans put
// the relation's second object relative to its first: left of, right of, above, below (each in the
// oracle's sense, the offset along the axis dominating), or diagonal. The last row is what two
// distinct cells drawn uniformly on the grid give. A policy that reads the relation word puts most
// of each row in its own column; one that ignores it gives every row the uniform row's shares.
// docs/learner.md ("The base does not know the relations") uses it:
//
//	go run ./learner eval --prompts data/prompts/train.jsonl --limit 300 --g 8 --samples s.jsonl
//	go run ./scripts/placements --prompts data/prompts/train.jsonl < s.jsonl
//
// Only plans whose phrases match the prompt's objects one to one (each asked once, the plan
// naming them in the prompt's order, as the base writes them) are counted; the rest are reported
// as skipped.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/bicot-rl/bicot/pkg/plan"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/scene"
)

// directions are the placements told apart, in the table's column order.
var directions = []scene.Relation{scene.LeftOf, scene.RightOf, scene.Above, scene.Below}

// sample is the part of an eval sample line this reads.
type sample struct {
	Prompt string `json:"prompt"`
	Plan   string `json:"plan"`
}

// tally counts placements per asked relation: counts[rel][i] for directions[i],
// counts[rel][len(directions)] for a diagonal placement, and counts[rel][len(directions)+1] for
// the plans where the asked relation holds.
type tally struct {
	counts  map[scene.Relation][]int
	skipped int
}

func main() {
	promptsPath := flag.String("prompts", "data/prompts/train.jsonl", "the prompt file the samples were drawn from (for each prompt's spec)")
	flag.Parse()
	if err := run(*promptsPath, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "placements:", err)
		os.Exit(1)
	}
}

func run(promptsPath string, in io.Reader, out io.Writer) error {
	ps, err := prompts.ReadFile(promptsPath)
	if err != nil {
		return err
	}
	specs := map[string]*scene.Spec{}
	for _, p := range ps {
		if p.Spec != nil {
			specs[p.Prompt] = p.Spec
		}
	}
	cfg := scene.DefaultConfig()
	t := tally{counts: map[scene.Relation][]int{}}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for line := 1; sc.Scan(); line++ {
		var s sample
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			return fmt.Errorf("samples line %d: %w", line, err)
		}
		spec, ok := specs[s.Prompt]
		if !ok {
			return fmt.Errorf("samples line %d: prompt %q is not in %s", line, s.Prompt, promptsPath)
		}
		if len(spec.Relations) == 0 {
			continue
		}
		t.add(*spec, s.Plan, cfg)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read samples: %w", err)
	}
	if len(t.counts) == 0 {
		return fmt.Errorf("no sample of a prompt with a relation on stdin")
	}
	t.print(out, cfg)
	return nil
}

// add counts the placement of every asked relation in one plan, or the plan as skipped when its
// phrases do not stand for the prompt's objects one to one.
func (t *tally) add(spec scene.Spec, planText string, cfg scene.Config) {
	sc, err := plan.Parse(planText, cfg)
	if err != nil || len(sc.Objects) != len(spec.Objects) {
		t.skipped++
		return
	}
	for i, o := range spec.Objects {
		if o.Count != 1 || !o.Matches(sc.Objects[i]) {
			t.skipped++
			return
		}
	}
	for _, r := range spec.Relations {
		c := t.counts[r.Rel]
		if c == nil {
			c = make([]int, len(directions)+2)
			t.counts[r.Rel] = c
		}
		a, b := sc.Objects[r.A], sc.Objects[r.B]
		c[placement(a, b)]++
		if r.Rel.Holds(a, b) {
			c[len(directions)+1]++
		}
	}
}

// placement is the index in directions of where a sits relative to b ("a is left of b"), or
// len(directions) for a diagonal placement.
func placement(a, b scene.Object) int {
	for i, d := range directions {
		if d.Holds(a, b) {
			return i
		}
	}
	return len(directions)
}

// uniform is the share of each placement for two distinct cells drawn uniformly on the grid.
func uniform(cfg scene.Config) []float64 {
	counts := make([]float64, len(directions)+1)
	n := 0.0
	for i := range cfg.Grid * cfg.Grid {
		for j := range cfg.Grid * cfg.Grid {
			if i == j {
				continue
			}
			a := scene.Object{Row: i / cfg.Grid, Col: i % cfg.Grid}
			b := scene.Object{Row: j / cfg.Grid, Col: j % cfg.Grid}
			counts[placement(a, b)]++
			n++
		}
	}
	for i := range counts {
		counts[i] /= n
	}
	return counts
}

// chance is the share of two distinct uniform cells on the grid for which r holds.
func chance(r scene.Relation, cfg scene.Config) float64 {
	holds, n := 0, 0
	for i := range cfg.Grid * cfg.Grid {
		for j := range cfg.Grid * cfg.Grid {
			if i == j {
				continue
			}
			n++
			if r.Holds(scene.Object{Row: i / cfg.Grid, Col: i % cfg.Grid}, scene.Object{Row: j / cfg.Grid, Col: j % cfg.Grid}) {
				holds++
			}
		}
	}
	return float64(holds) / float64(n)
}

func (t *tally) print(out io.Writer, cfg scene.Config) {
	fmt.Fprintln(out, "| asked (a REL b) | plans | a left of b | a right of b | a above b | a below b | diagonal | asked relation holds | holds for two uniform cells |")
	fmt.Fprintln(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	rels := make([]scene.Relation, 0, len(t.counts))
	for r := range t.counts {
		rels = append(rels, r)
	}
	slices.Sort(rels)
	for _, r := range rels {
		c := t.counts[r]
		n := 0
		for _, v := range c[:len(directions)+1] {
			n += v
		}
		fmt.Fprintf(out, "| %s | %d |", r, n)
		for _, v := range c {
			fmt.Fprintf(out, " %.2f |", float64(v)/float64(n))
		}
		fmt.Fprintf(out, " %.2f |\n", chance(r, cfg))
	}
	fmt.Fprintf(out, "| two uniform cells | - |")
	for _, v := range uniform(cfg) {
		fmt.Fprintf(out, " %.2f |", v)
	}
	fmt.Fprintln(out, " - | - |")
	fmt.Fprintf(out, "\n%d plans skipped (unparsable, or their phrases not the prompt's objects in its order)\n", t.skipped)
}
