package learner_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/learner"
	"github.com/bicot-rl/bicot/pkg/prompts"
)

// The bus not taking the learner's policy announcement for a while - as after a NATS server
// restart, until JetStream has its streams back - pauses the learner instead of ending it: the
// step's announcement goes out once the stream is there again and the run finishes. Before, the
// learner exited with "announce version 1: no response from stream", and its successor had to
// relearn every step since its checkpoint.
func TestLearnerRidesOutABusOutage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	js, backend, st, _, init, cfg := tinyRun(t, "outage1")
	cfg.Wire.PollWait = config.Duration(time.Second)
	l, err := learner.New(ctx, learner.Deps{JS: js, Backend: backend, Store: st, Init: init, Log: zerolog.Nop()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	ps, err := prompts.ReadFile(filepath.Join(root(t), "data/prompts/train.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	topo, err := bus.NewTopology(cfg.RunID)
	if err != nil {
		t.Fatal(err)
	}
	back := make(chan error, 1)
	publishStepWith(ctx, t, js, st, cfg, backend, ps[:2], false, func(i int, _ bus.ScoredSample) []bus.ScoredSample {
		if i == 0 {
			// Version 0 is out (the samples were drawn with it); the stream the next
			// announcement goes to is gone until the "server" has recovered it.
			if err := js.DeleteStream(ctx, topo.PolicyStream); err != nil {
				t.Fatal(err)
			}
			go func() {
				time.Sleep(2 * time.Second)
				_, err := bus.EnsureStreams(ctx, js, cfg.RunID)
				back <- err
			}()
		}
		return nil
	})
	if err := <-done; err != nil {
		t.Fatalf("the learner stopped on the outage: %v", err)
	}
	if err := <-back; err != nil {
		t.Fatal(err)
	}
	if v, err := bus.LatestPolicy(ctx, js, cfg.RunID); err != nil || v.Version != 1 {
		t.Fatalf("announced %+v (%v) after the outage, want version 1", v, err)
	}
}
