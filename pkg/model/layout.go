package model

import "fmt"

// ImageToken maps image code c to its token id.
func (c Config) ImageToken(code int) int32 { return int32(c.TextVocab + code) }

// PlanPos is the position of the [plan] token for a prompt of n words.
func PlanPos(promptLen int) int { return promptLen + 1 }

// Sequence builds the full token sequence [bos] prompt [plan] plan [eos] pad.. [img_start] codes.
// A nil codes slice leaves the image part as pads (for sampling buffers). Plans longer than the
// text part allows are an error, never silently cut.
func (c Config) Sequence(prompt, plan []int32, codes []int) ([]int32, error) {
	L := c.TextLen
	if need := 1 + len(prompt) + 1 + len(plan) + 1; need > L {
		return nil, fmt.Errorf("sequence: prompt (%d) + plan (%d) words need %d text positions, have %d",
			len(prompt), len(plan), need, L)
	}
	if codes != nil && len(codes) != c.ImageTokens {
		return nil, fmt.Errorf("sequence: %d image codes, want %d", len(codes), c.ImageTokens)
	}
	s := c.Special
	seq := make([]int32, c.SeqLen())
	for i := range seq {
		seq[i] = s.Pad
	}
	seq[0] = s.BOS
	for i, t := range prompt {
		if err := c.checkText(t); err != nil {
			return nil, fmt.Errorf("sequence: prompt word %d: %w", i, err)
		}
		seq[1+i] = t
	}
	p := PlanPos(len(prompt))
	seq[p] = s.Plan
	for i, t := range plan {
		if err := c.checkText(t); err != nil {
			return nil, fmt.Errorf("sequence: plan word %d: %w", i, err)
		}
		seq[p+1+i] = t
	}
	seq[p+1+len(plan)] = s.EOS
	seq[L] = s.ImgStart
	for i, code := range codes {
		if code < 0 || code >= c.ImageVocab {
			return nil, fmt.Errorf("sequence: image code %d = %d outside [0,%d)", i, code, c.ImageVocab)
		}
		seq[L+1+i] = c.ImageToken(code)
	}
	return seq, nil
}

// UncondSequence is the unconditional context ([bos] [uncond] pads.. [img_start]) followed by
// the given image codes (nil: pads).
func (c Config) UncondSequence(codes []int) []int32 {
	s := c.Special
	seq := make([]int32, c.SeqLen())
	for i := range seq {
		seq[i] = s.Pad
	}
	seq[0], seq[1], seq[c.TextLen] = s.BOS, s.Uncond, s.ImgStart
	for i, code := range codes {
		seq[c.TextLen+1+i] = c.ImageToken(code)
	}
	return seq
}

func (c Config) checkText(t int32) error {
	if t < 0 || int(t) >= c.TextVocab {
		return fmt.Errorf("token %d outside text vocab [0,%d)", t, c.TextVocab)
	}
	s := c.Special
	switch t {
	case s.BOS, s.EOS, s.Plan, s.ImgStart, s.Uncond, s.Pad:
		return fmt.Errorf("special token %d inside text", t)
	}
	return nil
}

// Masks returns the loss masks of a sequence: text [L] is 1 at the plan words and the eos that
// ends them (the sampled positions; nothing after the first eos), image [I] is 1 everywhere (image
// sequences have a fixed length and are never truncated). With noPlan the plan is empty and its
// eos was given, so the text mask is all zeros. A sequence without [plan] has no text to learn
// (e.g. the unconditional context).
func (c Config) Masks(seq []int32, noPlan bool) (text, image []float32) {
	text = make([]float32, c.TextLen)
	image = make([]float32, c.ImageTokens)
	for i := range image {
		image[i] = 1
	}
	if noPlan {
		return
	}
	p := -1
	for i := 0; i < c.TextLen; i++ {
		if seq[i] == c.Special.Plan {
			p = i
			break
		}
	}
	if p < 0 {
		return
	}
	for i := p + 1; i < c.TextLen; i++ {
		text[i] = 1
		if seq[i] == c.Special.EOS {
			break
		}
	}
	return
}

// PlanWords extracts the plan words of a sequence (between [plan] and the first eos).
func (c Config) PlanWords(seq []int32) []int32 {
	var out []int32
	in := false
	for i := 0; i < c.TextLen; i++ {
		switch {
		case seq[i] == c.Special.Plan && !in:
			in = true
		case in && seq[i] == c.Special.EOS:
			return out
		case in:
			out = append(out, seq[i])
		}
	}
	return out
}

// ImageCodes extracts the image codes of a sequence.
func (c Config) ImageCodes(seq []int32) []int {
	out := make([]int, c.ImageTokens)
	for i := range out {
		out[i] = int(seq[c.TextLen+1+i]) - c.TextVocab
	}
	return out
}
