package evaluate

import (
	"context"
	"fmt"
	"sort"

	"github.com/bicot-rl/bicot/pkg/experts"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// Total names the ensemble's weighted sum among the experts of an Alignment.
const Total = "total"

// Alignment says how well a reward ensemble ranks a policy's own samples the way the oracle
// does. GRPO only sees rewards relative to the other samples of a prompt's group, so what
// matters is the ranking within each group: Spearman[task][expert] is the mean, over the groups
// of that task type whose oracle scores are not all equal, of the rank correlation between the
// expert's reward (Total: the ensemble's) and the oracle score. Groups with equal oracle scores
// carry no signal to agree with and are left out; a reward that is constant where the oracle
// varies counts as 0.
type Alignment struct {
	Spearman map[string]map[string]float64 `json:"spearman"`
	// Overall is the same mean over the groups of every task type.
	Overall map[string]float64 `json:"overall"`
	// Groups counts the groups used per task type; Prompts and Samples are what was sampled.
	Groups  map[string]int `json:"groups"`
	Prompts int            `json:"prompts"`
	Samples int            `json:"samples"`
}

// RewardAlignment samples G images per prompt with m (as Run does, with the same options),
// scores them with the oracle and with ens, and compares the two rankings within each group.
func RewardAlignment(ctx context.Context, m *model.Model, cb *vq.Codebook, ps []prompts.Prompt, ens *reward.Ensemble, o Options) (Alignment, error) {
	if o.G < 2 {
		return Alignment{}, fmt.Errorf("alignment: g %d, want >= 2 (rankings within a group)", o.G)
	}
	var items []reward.Item
	var oracle []float64
	var tasks []string
	observe := o.Observe
	o.Observe = func(s Sample) error {
		items = append(items, reward.Item{Prompt: s.Prompt, Image: s.Image})
		oracle = append(oracle, s.Score)
		tasks = append(tasks, s.Prompt.TaskType)
		if observe != nil {
			return observe(s)
		}
		return nil
	}
	res, err := Run(m, cb, ps, o)
	if err != nil {
		return Alignment{}, fmt.Errorf("alignment: %w", err)
	}
	scores := make([]reward.Scores, 0, len(items))
	const chunk = 64
	for lo := 0; lo < len(items); lo += chunk {
		sc, err := ens.Score(ctx, items[lo:min(lo+chunk, len(items))])
		if err != nil {
			return Alignment{}, fmt.Errorf("alignment: %w", err)
		}
		scores = append(scores, sc...)
	}
	names := append([]string{Total}, ens.Experts()...)
	sums := map[string]map[string]float64{}
	all := map[string]float64{}
	a := Alignment{Spearman: map[string]map[string]float64{}, Overall: map[string]float64{}, Groups: map[string]int{},
		Prompts: res.Prompts, Samples: res.N}
	total := 0
	for lo := 0; lo+o.G <= len(items); lo += o.G {
		or := oracle[lo : lo+o.G]
		if constant(or) {
			continue
		}
		t := tasks[lo]
		if sums[t] == nil {
			sums[t] = map[string]float64{}
		}
		for _, name := range names {
			r := make([]float64, o.G)
			for j := range r {
				if name == Total {
					r[j] = scores[lo+j].Total
				} else {
					r[j] = scores[lo+j].PerExpert[name]
				}
			}
			rho := experts.Spearman(r, or)
			sums[t][name] += rho
			all[name] += rho
		}
		a.Groups[t]++
		total++
	}
	for t, byName := range sums {
		a.Spearman[t] = map[string]float64{}
		for name, s := range byName {
			a.Spearman[t][name] = s / float64(a.Groups[t])
		}
	}
	if total > 0 {
		for name, s := range all {
			a.Overall[name] = s / float64(total)
		}
	}
	return a, nil
}

func constant(xs []float64) bool {
	for _, x := range xs[1:] {
		if x != xs[0] {
			return false
		}
	}
	return true
}

// Names lists an alignment's columns: Total first, then the experts in sorted order.
func (a Alignment) Names() []string {
	seen := map[string]bool{}
	for _, byName := range a.Spearman {
		for name := range byName {
			seen[name] = true
		}
	}
	var out []string
	for name := range seen {
		if name != Total {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return append([]string{Total}, out...)
}
