package experts

import (
	"context"
	"fmt"
	"image"

	"github.com/bicot-rl/bicot/pkg/oracle"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/scene"
)

// Oracle is the name of the diagnostic expert that scores images with the exact oracle
// (pkg/oracle). It is never part of the default ensemble: evaluation uses the oracle, so a run
// rewarded by it measures the ceiling of the learning machinery, not of the rewards. With weight
// 0 it is a monitor: its score is logged per step beside the reward (per_expert.oracle) and adds
// nothing to the total, which is how reward hacking shows during a run.
const Oracle = "oracle"

// OracleBackend parses each image with the oracle and answers its score for the query's prompt
// (OutputScore). Prompts need the scene world's spec; one without fails the batch, naming it.
type OracleBackend struct {
	parser  *oracle.Parser
	partial float64
}

// NewOracleBackend returns the oracle for images of the scene configuration cfg, scoring an
// inexact image at most partial (oracle.PartialCredit is the evaluation's score; see
// ExpertConfig.PartialCredit).
func NewOracleBackend(cfg scene.Config, partial float64) (*OracleBackend, error) {
	if !(partial >= 0 && partial < 1) {
		return nil, fmt.Errorf("oracle expert: partial credit %v must be in [0, 1)", partial)
	}
	p, err := oracle.NewParser(cfg)
	if err != nil {
		return nil, fmt.Errorf("oracle expert: %w", err)
	}
	return &OracleBackend{parser: p, partial: partial}, nil
}

// Output implements reward.Backend.
func (*OracleBackend) Output() reward.Output { return reward.OutputScore }

// Infer implements reward.Backend. The parser is read-only, so concurrent calls are safe.
func (b *OracleBackend) Infer(ctx context.Context, qs []reward.Query) ([]reward.Raw, error) {
	out := make([]reward.Raw, len(qs))
	for i, q := range qs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		res, err := b.score(q.Prompt, q.Image)
		if err != nil {
			return nil, fmt.Errorf("oracle expert: query %d (%q): %w", i, q.Prompt.Prompt, err)
		}
		v := res.WithPartialCredit(b.partial)
		out[i].Score = &v
	}
	return out, nil
}

func (b *OracleBackend) score(p prompts.Prompt, img image.Image) (oracle.Result, error) {
	if img == nil {
		return oracle.Result{}, fmt.Errorf("no image")
	}
	return b.parser.Score(p, img)
}

// ScoreRule passes a score backend's output through as the reward; the score must already be
// in [0, 1] (the oracle's is).
type ScoreRule struct{}

// Output implements reward.Rule.
func (ScoreRule) Output() reward.Output { return reward.OutputScore }

// Shortcut implements reward.Rule.
func (ScoreRule) Shortcut(prompts.Prompt) (float64, bool) { return 0, false }

// Questions implements reward.Rule.
func (ScoreRule) Questions(prompts.Prompt) []string { return nil }

// Reward implements reward.Rule.
func (ScoreRule) Reward(_ prompts.Prompt, raw reward.Raw) (float64, error) {
	if raw.Score == nil {
		return 0, fmt.Errorf("no score")
	}
	if s := *raw.Score; !(s >= 0 && s <= 1) {
		return 0, fmt.Errorf("score %v outside [0, 1]", s)
	}
	return *raw.Score, nil
}
