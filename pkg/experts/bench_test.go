package experts

import (
	"context"
	"testing"
)

// BenchmarkEnsemble64 scores a batch of 64 images with all four experts in parallel, as a reward
// worker does for one batch of rollouts (8 prompts x G=8).
func BenchmarkEnsemble64(b *testing.B) {
	ens, _, err := LocalEnsemble(testBackend, testDir)
	if err != nil {
		b.Fatal(err)
	}
	items := mixItems(b, 64, 9)
	if _, err := ens.Score(context.Background(), items); err != nil { // compile outside the timing
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := ens.Score(context.Background(), items); err != nil {
			b.Fatal(err)
		}
	}
}
