package trainer

import (
	"fmt"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
)

// EncodePrompt turns a prompt's text into the policy's prompt ids. Rollouts must encode with this
// function too: the learner rebuilds every sequence from the prompt text, so both sides have to
// agree token for token. Unknown words are an error (as in pretraining), never mapped to unk.
func EncodePrompt(vocab *tokenizer.Vocab, text string) ([]int32, error) {
	ids, err := vocab.Encode(text)
	if err != nil {
		return nil, err
	}
	out := make([]int32, len(ids))
	for i, id := range ids {
		out[i] = int32(id)
	}
	return out, nil
}

// SampleToWire fills the plan and image fields of a bus sample from a model sample, in the form
// the learner reads back (sequenceFromWire is its inverse):
//
//   - plan_tokens are the sampled text tokens after [plan]: the plan words and, unless the plan
//     was cut at max_plan_tokens, the end-of-text that ended it; plan_len = len(plan_tokens);
//     plan_logp their sampling log-probs; plan_truncated when the end-of-text was given, not
//     sampled. An empty plan (no plan sampled) has no tokens.
//   - image_tokens are the VQ codes (0..K-1, not vocabulary ids), image_logp their log-probs.
func SampleToWire(cfg model.Config, s model.Sample, dst *bus.Sample) error {
	p := -1
	for i := 0; i < cfg.TextLen && i < len(s.Tokens); i++ {
		if s.Tokens[i] == cfg.Special.Plan {
			p = i
			break
		}
	}
	if p < 0 || len(s.TextMask) != cfg.TextLen || len(s.TextLogp) != cfg.TextLen {
		return fmt.Errorf("sample to wire: sample %d/%d has no [plan] token or wrong text lengths", s.Prompt, s.Index)
	}
	dst.PlanTokens, dst.PlanLogp = []int32{}, []float32{}
	for i := p + 1; i < cfg.TextLen && s.TextMask[i] != 0; i++ {
		dst.PlanTokens = append(dst.PlanTokens, s.Tokens[i])
		dst.PlanLogp = append(dst.PlanLogp, s.TextLogp[i])
	}
	dst.PlanLen = len(dst.PlanTokens)
	dst.PlanTruncated = s.Truncated
	if len(s.Codes) != cfg.ImageTokens || len(s.ImageLogp) != cfg.ImageTokens {
		return fmt.Errorf("sample to wire: sample %d/%d has %d codes and %d image log-probs, want %d", s.Prompt, s.Index, len(s.Codes), len(s.ImageLogp), cfg.ImageTokens)
	}
	dst.ImageTokens = make([]int32, len(s.Codes))
	for i, c := range s.Codes {
		dst.ImageTokens[i] = int32(c)
	}
	dst.ImageLogp = append([]float32(nil), s.ImageLogp...)
	return nil
}

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

// padRow is a batch filler: a valid sequence whose masks are all zero, so it adds nothing to any
// sum of the loss.
func padRow(cfg model.Config) row {
	return row{
		tokens:  cfg.UncondSequence(make([]int, cfg.ImageTokens)),
		textOld: make([]float32, cfg.TextLen), textMask: make([]float32, cfg.TextLen),
		imageOld: make([]float32, cfg.ImageTokens), imageMask: make([]float32, cfg.ImageTokens),
	}
}
