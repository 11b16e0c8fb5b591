package learner

import (
	"bytes"
	"context"
	"fmt"

	"github.com/bicot-rl/bicot/pkg/scene"
	"github.com/bicot-rl/bicot/pkg/trainer"
)

// writeImages stores the decoded images of a step's samples under <run>/samples/step-<N>/.
func (l *Learner) writeImages(ctx context.Context, step int64, groups []trainer.Group) error {
	for _, g := range groups {
		for _, s := range g.Samples {
			key := fmt.Sprintf("%s/samples/step-%d/p%d-s%d.png", l.cfg.RunID, step, s.PromptIndex, s.SampleIndex)
			img, err := s.Sample.Image(l.o.Codebook)
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			b, err := scene.PNG(img)
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			if err := l.o.Store.Put(ctx, key, bytes.NewReader(b), int64(len(b))); err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
		}
	}
	return nil
}
