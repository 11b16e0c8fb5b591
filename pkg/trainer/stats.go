package trainer

// StepStats describe one update (a line of the run's metrics). Loss, KL and ratios are measured before
// the update, on the trained tokens.
type StepStats struct {
	// PolicyVersion is the version of the weights after the step.
	PolicyVersion int64   `json:"policy_version"`
	Loss          float64 `json:"loss"`
	// RewardMean and RewardStd are over every sample of the batch (before filtering).
	RewardMean float64 `json:"reward_mean"`
	RewardStd  float64 `json:"reward_std"`
	// PerExpert is each expert's mean reward over the samples that carry it.
	PerExpert map[string]float64 `json:"per_expert,omitempty"`
	// AdvAbsMean is the mean |advantage| over the trained samples.
	AdvAbsMean float64 `json:"adv_abs_mean"`
	// KL is the mean k3 estimate against the reference; PlanKL and ImageKL per level.
	KL      float64 `json:"kl"`
	PlanKL  float64 `json:"plan_kl"`
	ImageKL float64 `json:"image_kl"`
	// Ratio exp(logp - logp_old) over trained tokens: 1 while strictly on-policy.
	RatioMean    float64 `json:"ratio_mean"`
	RatioMin     float64 `json:"ratio_min"`
	RatioMax     float64 `json:"ratio_max"`
	ClipFraction float64 `json:"clip_fraction"`
	// LaterClipFraction is the mean clip fraction of the updates after the first (update_epochs).
	LaterClipFraction float64 `json:"later_clip_fraction,omitempty"`
	// SFTLoss is the supervised anchor's mean NLL (sft_coef > 0), before the update.
	SFTLoss float64 `json:"sft_loss,omitempty"`
	// ZeroStdRatio is the fraction of groups whose rewards all tie.
	ZeroStdRatio   float64 `json:"zero_std_ratio"`
	Groups         int     `json:"groups"`
	GroupsUsed     int     `json:"groups_used"`
	GroupsFiltered int     `json:"groups_filtered"`
	Samples        int     `json:"samples"`
	// PlanTokens and ImageTokens are the tokens trained at each level (after the level switch).
	PlanTokens  int `json:"plan_tokens"`
	ImageTokens int `json:"image_tokens"`
	// MaxStaleness is the largest version gap of a trained sample.
	MaxStaleness int64   `json:"max_staleness"`
	GradNorm     float64 `json:"grad_norm"`
	LearningRate float64 `json:"lr"`
	// Seconds: the whole step, the reference scoring and the update.
	Seconds       float64 `json:"seconds"`
	RefSeconds    float64 `json:"ref_seconds"`
	UpdateSeconds float64 `json:"update_seconds"`
}

// perExpert averages each expert's reward over the samples that report it.
func perExpert(groups []Group) map[string]float64 {
	sum, n := map[string]float64{}, map[string]int{}
	for _, g := range groups {
		for _, s := range g.Samples {
			for name, r := range s.PerExpert {
				sum[name] += r
				n[name]++
			}
		}
	}
	if len(sum) == 0 {
		return nil
	}
	out := make(map[string]float64, len(sum))
	for k, s := range sum {
		out[k] = s / float64(n[k])
	}
	return out
}
