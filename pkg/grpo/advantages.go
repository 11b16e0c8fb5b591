// Package grpo is the math of BiCoT-GRPO (T2I-R1): group-relative advantages over the G samples of
// each prompt, the per-token policy loss over plan (semantic-level CoT) and image (token-level
// CoT) tokens with a k3 KL penalty against a frozen reference policy, optional PPO clipping for
// stale samples, the loss normalisation and level switches of the paper's ablations, and the
// optimiser step (global-norm gradient clipping, AdamW, learning-rate schedule).
//
// The advantage code is plain Go (the learner computes it from rewards on the host); the loss and
// optimiser are gomlx graph-building functions that the learner calls inside its train step. See
// README.md in this directory for the formulas and the choices made.
package grpo

import (
	"errors"
	"fmt"
	"math"

	"github.com/bicot-rl/bicot/pkg/config"
)

// AdvantageOptions configure ComputeAdvantages.
type AdvantageOptions struct {
	// StdEps is added to the unbiased standard deviation; default config.DefaultStdEps.
	StdEps float64
	// FilterZeroStd drops groups whose rewards all tie (DAPO's dynamic sampling filter): they have
	// zero advantage everywhere, so they only dilute the batch and add KL.
	FilterZeroStd bool
	// MinSpread: a group whose rewards span less than this (max - min) counts as tied. Learned
	// experts never tie exactly, so without it a group whose samples differ only by the experts'
	// noise gets unit-size advantages from the std division. 0: only exact ties.
	MinSpread float64
	// Scale divides the centred rewards: config.AdvScaleStd (the reference; "" too) by std + StdEps, or
	// config.AdvScaleNone (Dr. GRPO) by nothing, so a group's advantages are as large as its rewards differ.
	Scale string
}

// Validate checks the options.
func (o AdvantageOptions) Validate() error {
	if math.IsNaN(o.StdEps) || math.IsInf(o.StdEps, 0) || o.StdEps < 0 {
		return fmt.Errorf("advantage std eps %v: want a finite value >= 0", o.StdEps)
	}
	if math.IsNaN(o.MinSpread) || math.IsInf(o.MinSpread, 0) || o.MinSpread < 0 {
		return fmt.Errorf("advantage min spread %v: want a finite value >= 0", o.MinSpread)
	}
	if o.Scale != "" && o.Scale != config.AdvScaleStd && o.Scale != config.AdvScaleNone {
		return fmt.Errorf("advantage scale %q: want %q or %q", o.Scale, config.AdvScaleStd, config.AdvScaleNone)
	}
	return nil
}

// GroupStats summarise a batch of groups.
type GroupStats struct {
	Groups int // groups in the batch
	// ZeroStd counts groups whose rewards all tie, or span less than MinSpread (zero advantage
	// everywhere).
	ZeroStd int
	// ZeroStdRatio = ZeroStd / Groups, the metric zero_std_ratio.
	ZeroStdRatio float64
	// Dropped counts groups removed by FilterZeroStd.
	Dropped int
	// RewardMean and RewardStd over every sample of every group (before filtering).
	RewardMean, RewardStd float64
}

// Advantages is the result of ComputeAdvantages.
type Advantages struct {
	// PerGroup[i] holds the advantages of group Kept[i], one per sample in input order.
	PerGroup [][]float64
	// Kept lists the input indices of the groups that remain (all of them unless filtering).
	Kept  []int
	Stats GroupStats
}

// Flat returns the kept advantages concatenated in group order, as float32 for a [B] tensor.
func (a Advantages) Flat() []float32 {
	var out []float32
	for _, g := range a.PerGroup {
		for _, x := range g {
			out = append(out, float32(x))
		}
	}
	return out
}

// ComputeAdvantages turns the rewards of each group (the G samples of one prompt) into
// A_i = (r_i - mean) / (std + eps), std unbiased (n-1) (or A_i = r_i - mean with config.AdvScaleNone). A group whose rewards all tie gets exactly
// zero advantages (and is counted in ZeroStd); a group of one sample counts as tied. A NaN or
// infinite reward is an error naming the group and sample, never silently zeroed.
func ComputeAdvantages(groups [][]float64, o AdvantageOptions) (Advantages, error) {
	if o.StdEps == 0 {
		o.StdEps = config.DefaultStdEps
	}
	if err := o.Validate(); err != nil {
		return Advantages{}, err
	}
	if len(groups) == 0 {
		return Advantages{}, errors.New("advantages: no groups")
	}
	var all []float64
	for gi, g := range groups {
		if len(g) == 0 {
			return Advantages{}, fmt.Errorf("advantages: group %d is empty", gi)
		}
		for si, r := range g {
			if math.IsNaN(r) || math.IsInf(r, 0) {
				return Advantages{}, fmt.Errorf("advantages: group %d sample %d: reward is %v", gi, si, r)
			}
		}
		all = append(all, g...)
	}
	res := Advantages{Stats: GroupStats{Groups: len(groups)}}
	res.Stats.RewardMean, res.Stats.RewardStd = meanStd(all)
	for gi, g := range groups {
		if tied(g, o.MinSpread) {
			res.Stats.ZeroStd++
			if o.FilterZeroStd {
				res.Stats.Dropped++
				continue
			}
			res.PerGroup = append(res.PerGroup, make([]float64, len(g)))
			res.Kept = append(res.Kept, gi)
			continue
		}
		mean, std := meanStd(g)
		adv := make([]float64, len(g))
		div := std + o.StdEps
		if o.Scale == config.AdvScaleNone {
			div = 1
		}
		for i, r := range g {
			adv[i] = (r - mean) / div
		}
		res.PerGroup = append(res.PerGroup, adv)
		res.Kept = append(res.Kept, gi)
	}
	res.Stats.ZeroStdRatio = float64(res.Stats.ZeroStd) / float64(res.Stats.Groups)
	return res, nil
}

func tied(g []float64, minSpread float64) bool {
	lo, hi := g[0], g[0]
	for _, r := range g[1:] {
		lo, hi = min(lo, r), max(hi, r)
	}
	if minSpread > 0 {
		return hi-lo < minSpread
	}
	return hi == lo
}

// meanStd returns the mean and the unbiased standard deviation (0 for one value).
func meanStd(xs []float64) (mean, std float64) {
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	if len(xs) < 2 {
		return mean, 0
	}
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(ss / float64(len(xs)-1))
}
