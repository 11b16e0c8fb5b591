package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"image"
	"math/rand/v2"
	"time"

	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/rolloutworker"
	"github.com/bicot-rl/bicot/pkg/trainer"
)

// Compute is simulated model compute: how long each role's work takes.
type Compute struct {
	// Sample is the rollout time per sample (a task of p prompts x G samples takes p*G of them).
	Sample time.Duration
	// Score is the reward time per sample.
	Score time.Duration
	// Learn is the learner's update time per step.
	Learn time.Duration
}

// Sampler returns a rolloutworker.Sampler that sleeps c.Sample per sample and returns samples in
// the policy's layout (a plan of the prompt's own words, image codes drawn from the sample's seed),
// so everything after the model - the wire format, the reward worker's decoding, the learner's
// checks and batch layout - runs as in a real run.
func (c Compute) Sampler() rolloutworker.Sampler {
	return func(m *model.Model, req model.SampleRequest) ([]model.Sample, error) {
		cfg := m.Config
		out := make([]model.Sample, 0, len(req.Prompts)*req.G)
		time.Sleep(time.Duration(len(req.Prompts)*req.G) * c.Sample)
		for p, prompt := range req.Prompts {
			id := uint64(p)
			if req.PromptIDs != nil {
				id = req.PromptIDs[p]
			}
			words := prompt
			if len(words) > req.MaxPlanTokens && req.MaxPlanTokens > 0 {
				words = words[:req.MaxPlanTokens]
			}
			// [bos] prompt [plan] words [eos] must fit the text part.
			if room := max(0, cfg.TextLen-len(prompt)-3); len(words) > room {
				words = words[:room]
			}
			for g := range req.G {
				rng := rand.New(rand.NewPCG(model.SampleSeed(req.Seed, req.Step, id, uint64(g)), 0))
				codes := make([]int, cfg.ImageTokens)
				for i := range codes {
					codes[i] = rng.IntN(cfg.ImageVocab)
				}
				seq, err := cfg.Sequence(prompt, words, codes)
				if err != nil {
					return nil, fmt.Errorf("simulated sample: %w", err)
				}
				text, img := cfg.Masks(seq, false)
				s := model.Sample{Prompt: p, Index: g, Tokens: seq, Plan: words, Codes: codes,
					TextMask: text, ImageMask: img, TextLogp: make([]float32, cfg.TextLen), ImageLogp: make([]float32, cfg.ImageTokens)}
				for i, on := range text {
					if on != 0 {
						s.TextLogp[i] = -1
					}
				}
				for i := range s.ImageLogp {
					s.ImageLogp[i] = -1
				}
				out = append(out, s)
			}
		}
		return out, nil
	}
}

// Scorer is a reward ensemble that sleeps Compute.Score per sample and scores each image by a
// hash of its pixels: deterministic, in [0, 1], and spread within a group, so no group ties.
type Scorer struct{ Compute Compute }

// Score implements rewardworker.Scorer.
func (s Scorer) Score(ctx context.Context, items []reward.Item) ([]reward.Scores, error) {
	select {
	case <-time.After(time.Duration(len(items)) * s.Compute.Score):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	out := make([]reward.Scores, len(items))
	for i, it := range items {
		v := imageHash(it.Image)
		out[i] = reward.Scores{Total: v, PerExpert: map[string]float64{"simulated": v}}
	}
	return out, nil
}

func imageHash(img image.Image) float64 {
	h := fnv.New64a()
	b := img.Bounds()
	var buf [8]byte
	for y := b.Min.Y; y < b.Max.Y; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			r, g, bl, _ := img.At(x, y).RGBA()
			binary.LittleEndian.PutUint64(buf[:], uint64(r)<<32|uint64(g)<<16|uint64(bl))
			h.Write(buf[:])
		}
	}
	return float64(h.Sum64()>>11) / float64(1<<53)
}

// Update is the learner's update with the model's compute replaced by a sleep of c.Learn.
func (c Compute) Update(t *trainer.Trainer, groups []trainer.Group) (trainer.StepStats, error) {
	return t.StepSimulated(groups, func() { time.Sleep(c.Learn) })
}
