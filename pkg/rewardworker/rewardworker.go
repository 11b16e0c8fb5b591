// Package rewardworker is the reward worker role: it pulls Samples from the run's sample queue, turns
// each into an image (decoding its image tokens with the VQ codebook, or reading the PNG a rollout
// attached), scores it with the expert ensemble (pkg/reward: the built-in experts of pkg/experts or
// remote expert servers), and publishes a ScoredSample with the total and each expert's reward
// before acking the sample.
//
// A reward that cannot be computed is an error, never a silent 0: the ensemble validates every
// raw output and reward, the worker re-checks the total, and a failing sample is retried and
// finally dead-lettered by the bus. Workers are stateless; scale the pool by starting processes
// (its queue depth is exported for an autoscaler).
package rewardworker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/bicot-rl/bicot/pkg/config"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// Scorer scores a batch of items; *reward.Ensemble implements it.
type Scorer interface {
	Score(ctx context.Context, items []reward.Item) ([]reward.Scores, error)
}

// Deps are what a reward worker is given: its name, connection, experts and codebook.
// Everything else comes from the run config, so laptop mode and the reward-worker binary, which
// both call New, cannot configure it differently.
type Deps struct {
	// ID names the worker in events.
	ID string
	JS jetstream.JetStream
	// Ensemble computes the rewards (experts.BuildEnsemble builds the run's).
	Ensemble Scorer
	// Codebook decodes image tokens (samples without a PNG).
	Codebook *vq.Codebook
	// Metrics registers the worker's Prometheus series (nil: none), the ensemble's per-expert
	// timings and failures among them when it is a *reward.Ensemble.
	Metrics prometheus.Registerer
	Log     zerolog.Logger
}

// options are the worker's settings, derived from Deps and the run config by New.
type options struct {
	Run        string
	ID         string
	Ensemble   Scorer
	Codebook   *vq.Codebook
	Consume    bus.ConsumeOptions
	Heartbeat  time.Duration
	OutageWait time.Duration
	BatchWait  time.Duration
}

// Worker scores samples.
type Worker struct {
	o   options
	js  jetstream.JetStream
	rep *bus.Reporter
	log zerolog.Logger
	m   *metrics
	// scoreItem scores one sample: through the batcher when batching, else alone.
	scoreItem func(context.Context, reward.Item) (reward.Scores, error)

	scored atomic.Int64
}

// New returns a worker of the run cfg; Run starts it. ctx bounds set-up (none today: the streams
// are ensured by Run).
func New(_ context.Context, d Deps, cfg config.Config) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("reward worker: %w", err)
	}
	if err := config.ValidateRunID(cfg.RunID); err != nil {
		return nil, fmt.Errorf("reward worker: %w", err)
	}
	if d.ID == "" || d.JS == nil || d.Ensemble == nil || d.Codebook == nil {
		return nil, errors.New("reward worker: id, JetStream, ensemble and codebook are required")
	}
	o := options{Run: cfg.RunID, ID: d.ID, Ensemble: d.Ensemble, Codebook: d.Codebook,
		Consume: bus.ConsumeFrom(cfg.Wire, cfg.Wire.RewardFetchers), Heartbeat: cfg.Wire.Heartbeat.D(),
		OutageWait: cfg.Wire.ExpertOutageWait.D(), BatchWait: cfg.Wire.RewardBatchWait.D()}
	log := logging.Component(d.Log, "reward").With().Str("worker", o.ID).Logger()
	m, err := newMetrics(d.Metrics, o.ID)
	if err != nil {
		return nil, err
	}
	if ens, ok := o.Ensemble.(*reward.Ensemble); ok && d.Metrics != nil {
		em, err := reward.NewMetrics(prometheus.WrapRegistererWith(prometheus.Labels{"worker": o.ID}, d.Metrics))
		if err != nil {
			return nil, err
		}
		o.Ensemble = ens.Instrumented(em)
	}
	return &Worker{o: o, js: d.JS, log: log, m: m, rep: bus.NewReporter(d.JS, o.Run, o.ID, bus.RoleReward, log)}, nil
}

// Scored is how many samples this worker scored.
func (w *Worker) Scored() int64 { return w.scored.Load() }

// Run works until ctx ends; nil on a clean stop.
func (w *Worker) Run(ctx context.Context) error {
	topo, err := bus.AwaitStreams(ctx, w.js, w.o.Run, w.log)
	if err != nil {
		return fmt.Errorf("reward worker %s: %w", w.o.ID, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.rep.Heartbeat(ctx, w.o.Heartbeat)
	}()
	w.scoreItem = w.scoreAlone
	batchDone := make(chan struct{})
	if w.o.BatchWait > 0 && w.o.Consume.Fetchers > 1 {
		b := newBatcher(w.o.Ensemble.Score, w.o.Consume.Fetchers, w.o.BatchWait)
		b.sizes = w.m.batch
		w.scoreItem = b.Score
		go func() {
			defer close(batchDone)
			b.run(ctx)
		}()
	} else {
		close(batchDone)
	}
	co := w.o.Consume
	lg := w.log
	co.Logger = &lg
	w.log.Info().Msg("reward worker started")
	err = bus.Consume(ctx, w.js, topo.Samples, bus.Typed(w.handle), co)
	<-done
	<-batchDone
	w.log.Info().Int64("scored", w.scored.Load()).Msg("reward worker stopped")
	return err
}

// score scores items, riding out an outage of remote experts: while the ensemble reports one
// unavailable (reward.ErrUnavailable) it tries again with backoff for up to the run's
// wire.expert_outage_wait, telling JetStream the sample is in progress, so a short outage costs its
// duration instead of redeliveries, a dead letter and a re-dispatch.
func (w *Worker) score(ctx context.Context, msg jetstream.Msg, key string, item reward.Item) (reward.Scores, error) {
	deadline := time.Now().Add(w.o.OutageWait)
	wait := time.Second
	for {
		sc, err := w.scoreItem(ctx, item)
		if err == nil || !errors.Is(err, reward.ErrUnavailable) || time.Now().Add(wait).After(deadline) {
			return sc, err
		}
		w.log.Warn().Err(err).Str("sample", key).Dur("retry_in", wait).Msg("remote expert unavailable; retrying")
		if msg != nil {
			_ = msg.InProgress()
		}
		select {
		case <-ctx.Done():
			return reward.Scores{}, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 15*time.Second)
	}
}

// scoreAlone scores one sample in an ensemble call of its own.
func (w *Worker) scoreAlone(ctx context.Context, it reward.Item) (reward.Scores, error) {
	scores, err := w.o.Ensemble.Score(ctx, []reward.Item{it})
	if err != nil {
		return reward.Scores{}, err
	}
	if len(scores) != 1 {
		return reward.Scores{}, fmt.Errorf("ensemble returned %d scores for 1 sample", len(scores))
	}
	return scores[0], nil
}

func (w *Worker) handle(ctx context.Context, s *bus.Sample, msg jetstream.Msg) error {
	if s.Run != w.o.Run {
		return bus.Poison(fmt.Errorf("sample of run %s on a worker of run %s", s.Run, w.o.Run))
	}
	img, err := s.Image(w.o.Codebook)
	if err != nil {
		return bus.Poison(err)
	}
	w.rep.SetProgress(s.Step, s.PolicyVersion)
	start := time.Now()
	sc, err := w.score(ctx, msg, s.Key(), reward.Item{Prompt: s.Prompt, Image: img})
	took := time.Since(start)
	if err != nil {
		return fmt.Errorf("score %s: %w", s.Key(), err)
	}
	if math.IsNaN(sc.Total) || math.IsInf(sc.Total, 0) {
		return fmt.Errorf("score %s: total reward %v", s.Key(), sc.Total)
	}
	out := bus.ScoredSample{Sample: *s, Reward: sc.Total, PerExpert: sc.PerExpert, Scorer: w.o.ID}
	if _, err := bus.PublishScored(ctx, w.js, out); err != nil {
		return fmt.Errorf("score %s: %w", s.Key(), err)
	}
	w.scored.Add(1)
	w.m.scored(sc, took, time.Since(start))
	return nil
}
