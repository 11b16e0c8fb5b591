package trainer

import (
	"fmt"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/wire"
)

// row is one sample in the policy's layout with its recorded log-probs and loss masks.
type row struct {
	tokens               []int32
	textOld, textMask    []float32 // [TextLen]
	imageOld, imageMask  []float32 // [ImageTokens]
	planTokens, imgCount int
}

// sequenceFromWire rebuilds a sample's sequence [bos] prompt [plan] plan.. [eos] pads [img_start]
// codes, with logp_old and the masks at the positions that were sampled.
func sequenceFromWire(cfg model.Config, prompt []int32, s *bus.Sample) (row, error) {
	n := s.PlanLen
	plan := s.PlanTokens[:n]
	endsWithEOS := n > 0 && plan[n-1] == cfg.Special.EOS
	words := plan
	if endsWithEOS {
		words = plan[:n-1]
	}
	switch {
	case endsWithEOS && s.PlanTruncated:
		return row{}, fmt.Errorf("sample %s: plan ends with end-of-text but is marked truncated", s.Key())
	case !endsWithEOS && !s.PlanTruncated && n > 0:
		return row{}, fmt.Errorf("sample %s: plan of %d tokens has no end-of-text and is not marked truncated", s.Key(), n)
	case len(s.ImageTokens) != cfg.ImageTokens:
		return row{}, fmt.Errorf("sample %s: %d image tokens, the policy makes %d", s.Key(), len(s.ImageTokens), cfg.ImageTokens)
	}
	codes := make([]int, len(s.ImageTokens))
	for i, c := range s.ImageTokens {
		codes[i] = int(c)
	}
	seq, err := cfg.Sequence(prompt, words, codes)
	if err != nil {
		return row{}, fmt.Errorf("sample %s: %w", s.Key(), err)
	}
	r := row{
		tokens:  seq,
		textOld: make([]float32, cfg.TextLen), textMask: make([]float32, cfg.TextLen),
		imageOld: make([]float32, cfg.ImageTokens), imageMask: make([]float32, cfg.ImageTokens),
		planTokens: n, imgCount: cfg.ImageTokens,
	}
	p := model.PlanPos(len(prompt))
	for i := 0; i < n; i++ {
		r.textOld[p+1+i], r.textMask[p+1+i] = s.PlanLogp[i], 1
	}
	for i := range codes {
		r.imageOld[i], r.imageMask[i] = s.ImageLogp[i], 1
	}
	return r, nil
}

// Check reports whether the trainer could use s: its prompt in the policy's vocabulary, its plan
// and image tokens in the policy's layout and vocabulary. The learner checks every sample as it
// arrives, so a sample that would fail the step is dead-lettered instead of stopping the run.
func (t *Trainer) Check(s *bus.Sample) error {
	prompt, err := wire.EncodePrompt(t.vocab, s.Prompt.Prompt)
	if err != nil {
		return fmt.Errorf("sample %s: prompt: %w", s.Key(), err)
	}
	// The rebuild the step does checks the plan and image tokens' counts and ranges.
	_, err = sequenceFromWire(t.policy.Config, prompt, s)
	return err
}

// padRow is a batch filler: a valid sequence whose masks are all zero, so it adds nothing to any
// sum of the loss.
func padRow(cfg model.Config) row {
	return row{
		tokens:  cfg.UncondSequence(make([]int, cfg.ImageTokens)),
		textOld: make([]float32, cfg.TextLen), textMask: make([]float32, cfg.TextLen),
		imageOld: make([]float32, cfg.ImageTokens), imageMask: make([]float32, cfg.ImageTokens),
	}
}
