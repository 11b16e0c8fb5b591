// Package wire converts between the policy's samples and the bus's sample messages: the contract
// the rollout worker and the trainer share. Both sides encode prompts with EncodePrompt and the
// rollout worker fills messages with FromSample; the trainer rebuilds every sequence from a
// message's prompt text and tokens (trainer's sequenceFromWire is FromSample's inverse), so the
// two must agree token for token.
package wire

import (
	"fmt"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
)

// SampleRequest is the sample request for the rollout's sampling settings: temperature, guidance,
// the plan cap (0: no plan), which image log-probs are recorded and the cell mask. Every sampler
// of training groups builds its request here, so a setting reaches them all; the caller adds
// the prompts, their ids, G, the seed and the step.
func SampleRequest(sp bus.SamplingParams) model.SampleRequest {
	return model.SampleRequest{Temperature: sp.Temperature, CFGWeight: sp.CFGWeight,
		NoPlan: sp.MaxPlanTokens == 0, MaxPlanTokens: sp.MaxPlanTokens,
		ConditionalLogp: sp.ImageLogp == config.ImageLogpConditional, ExclusiveCells: sp.ExclusiveCells}
}

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

// FromSample fills the plan and image fields of a bus sample from a model sample, in the form
// the learner reads back (the trainer's sequenceFromWire is its inverse):
//
//   - plan_tokens are the sampled text tokens after [plan]: the plan words and, unless the plan
//     was cut at max_plan_tokens, the end-of-text that ended it; plan_len = len(plan_tokens);
//     plan_logp their sampling log-probs; plan_truncated when the end-of-text was given, not
//     sampled. An empty plan (no plan sampled) has no tokens.
//   - image_tokens are the VQ codes (0..K-1, not vocabulary ids), image_logp their log-probs.
func FromSample(cfg model.Config, s model.Sample, dst *bus.Sample) error {
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
