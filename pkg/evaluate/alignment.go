package evaluate

import (
	"context"
	"fmt"
	"sort"

	"github.com/bicot-rl/bicot/pkg/stats"

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
	// TiedGroups counts, per task type, the groups whose oracle scores all tie. With TieSpread
	// > 0 they are part of Spearman and Overall: a reward agrees (1) when its values span less
	// than TieSpread, the spread below which the learner's min_spread gives the group no
	// advantage, and disagrees (0) when it would push the policy on noise.
	TiedGroups map[string]int `json:"tied_groups"`
	// Records holds every sample's rewards and oracle score, in group order, for offline study
	// (ensemble weights, thresholds).
	Records []AlignmentRecord `json:"records,omitempty"`
}

// AlignmentRecord is one sample of an alignment measurement.
type AlignmentRecord struct {
	TaskType  string             `json:"task_type"`
	Group     int                `json:"group"`
	Oracle    float64            `json:"oracle"`
	Total     float64            `json:"total"`
	PerExpert map[string]float64 `json:"per_expert"`
}

// RewardAlignment samples G images per prompt with m (as Run does, with the same options),
// scores them with the oracle and with ens, and compares the two rankings within each group.
//
// tieSpread > 0 counts the groups the oracle ties too (see Alignment.TiedGroups).
func RewardAlignment(ctx context.Context, m *model.Model, cb *vq.Codebook, ps []prompts.Prompt, ens *reward.Ensemble, o Options, tieSpread float64) (Alignment, error) {
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
		TiedGroups: map[string]int{}, Prompts: res.Prompts, Samples: res.N}
	for i := range items {
		a.Records = append(a.Records, AlignmentRecord{TaskType: tasks[i], Group: i / o.G, Oracle: oracle[i],
			Total: scores[i].Total, PerExpert: scores[i].PerExpert})
	}
	total := 0
	for lo := 0; lo+o.G <= len(items); lo += o.G {
		or := oracle[lo : lo+o.G]
		t := tasks[lo]
		tiedOracle := constant(or)
		if tiedOracle {
			a.TiedGroups[t]++
			if tieSpread <= 0 {
				continue
			}
		}
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
			var rho float64
			if tiedOracle {
				lo, hi := r[0], r[0]
				for _, x := range r {
					lo, hi = min(lo, x), max(hi, x)
				}
				if hi-lo < tieSpread {
					rho = 1
				}
			} else {
				rho = stats.Spearman(r, or)
			}
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
