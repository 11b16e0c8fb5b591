// Package learner is the learner role of a distributed run: it pulls ScoredSamples from the
// run's scored queue, assembles complete groups with bus.Collector (each sample keyed by
// (step, prompt, sample), duplicates dropped, never a partial group), and when all P groups of
// the current step are in runs one BiCoT-GRPO update (pkg/trainer's Trainer). After each update
// it writes the new weights to the object store, announces the new policy version on the bus,
// appends a line to the run's metrics (<run>/metrics/, segments of runfiles.MetricsSegmentSteps),
// every samples_every steps and at the last step keeps the step's samples (images, plans, rewards, advantages) under <run>/samples/, every checkpoint_every
// steps and at the last step commits a checkpoint (trainer state with optimizer, weights,
// run-state snapshot) through pkg/ckpt, and reports the step and its learned groups to the
// coordinator.
//
// At start it resumes from the newest committed checkpoint of the run (dropping metrics lines and
// checkpoint debris of later steps, which it learns again identically), or starts from the initial
// policy, and (re-)announces its current version, which makes version 0 available to rollout
// workers. With DAPO filtering (grpo.filter_zero_std) a step trains P informative groups: while
// tied groups leave it fewer, it makes no update, keeps the informative ones and asks the
// coordinator for as many fresh prompts as it lacks, up to max_resample_rounds rounds. The
// staleness bound is the trainer's: a group holding a sample drawn with a policy more than k
// versions behind is not trained.
package learner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gomlx/gomlx/backends"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/ckpt"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/pretrain"
	"github.com/bicot-rl/bicot/pkg/runstate"
	"github.com/bicot-rl/bicot/pkg/store"
	"github.com/bicot-rl/bicot/pkg/trainer"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// Deps are what a learner is given: its name, connection, compute, storage, initial policy and
// hooks. Every setting comes from the run config, so laptop mode and the learner binary, which
// both call New, cannot configure it differently.
type Deps struct {
	// ID names the learner in events (default "learner").
	ID      string
	JS      jetstream.JetStream
	Backend backends.Backend
	Store   store.Store
	// Init is the initial policy checkpoint (model.Save bytes), used when the run has no
	// checkpoint yet.
	Init []byte
	// Codebook, when set, keeps the samples of every samples_every-th step and the last under
	// <run>/samples/step-<N>/ (pkg/runfiles): their images as PNGs and an index of prompts, plans,
	// rewards and advantages.
	Codebook *vq.Codebook
	// RunState, when set, supplies the run-state snapshot (runstate.EncodeSnapshot) stored in
	// checkpoints, with the data cursor it holds as its own part.
	RunState func() ([]byte, error)
	// OnStep is called after every step (laptop mode's progress display).
	OnStep func(StepRecord)
	// Metrics registers the learner's Prometheus series (nil: none).
	Metrics prometheus.Registerer
	// Update applies a step's update through t (nil: t.Step, the BiCoT-GRPO update). Benchmarks
	// put simulated compute here (trainer.Trainer.StepSimulated) to measure everything else.
	Update func(t *trainer.Trainer, groups []trainer.Group) (trainer.StepStats, error)
	Log    zerolog.Logger
}

// Learner is the learner role.
type Learner struct {
	o       Deps
	consume bus.ConsumeOptions
	beat    time.Duration // heartbeat interval
	cfg     config.Config
	js      jetstream.JetStream
	trainer *trainer.Trainer
	coll    *bus.Collector
	rep     *bus.Reporter
	log     zerolog.Logger

	mu       sync.Mutex
	wake     chan struct{}
	next     int64 // the step being collected / trained next
	complete map[int64][]bus.Group
	dropped  map[int64][]string // group keys a step's resample rounds dropped, reported as consumed at step_done
	filtered map[int64]int      // how many of them were tied (the rest were stale)
	acct     Accounting
	prom     *promMetrics
	// resumed is the checkpoint the learner started from (nil: a fresh run), whose step_done it
	// reports again at start in case the previous learner died between the two.
	resumed *ckpt.Manifest
	// incarnation names this learner's start; resumePoint is where it resumed (nil: unknown, a
	// checkpoint without run state), reported to the coordinators at start.
	incarnation   string
	resumePoint   *runstate.Rewind
	resumeLearned []string
	// minAttempt is the lowest dispatch attempt whose samples this learner takes (superseded),
	// set before the consumer starts.
	minAttempt   int
	metrics      bytes.Buffer // the current metrics segment's lines
	metricsStart int64        // its first step
	lastAnn      bus.PolicyAnnounce
	annAt        time.Time
	// clock is the run's time so far (config.TimeBudget; Final: the budget ended the run);
	// roundsTook is the time the step in progress spent on resample rounds before it trains.
	clock      ckpt.Progress
	roundsTook time.Duration
}

// New prepares the learner of the run c: it resumes from the run's newest checkpoint or builds a
// trainer over the initial policy (ctx bounds that I/O); Run learns.
func New(ctx context.Context, o Deps, c config.Config) (*Learner, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.RunID == "" {
		return nil, errors.New("learner: run id is required")
	}
	if o.ID == "" {
		o.ID = "learner"
	}
	if o.Update == nil {
		o.Update = (*trainer.Trainer).Step
	}
	if o.JS == nil || o.Backend == nil || o.Store == nil {
		return nil, errors.New("learner: JetStream, backend and store are required")
	}
	log := logging.Component(o.Log, "learner").With().Str("run", c.RunID).Logger()
	topts, err := trainer.OptionsFor(c)
	if err != nil {
		return nil, fmt.Errorf("learner: %w", err)
	}
	js := o.JS
	prom, err := newPromMetrics(o.Metrics, o.ID)
	if err != nil {
		return nil, err
	}
	l := &Learner{prom: prom, o: o, incarnation: fmt.Sprintf("%s-%d", o.ID, time.Now().UnixNano()), consume: bus.ConsumeFrom(c.Wire, scoredFetchers), beat: c.Wire.Heartbeat.D(), cfg: c, js: js, coll: newCollector(c), log: log,
		rep:  bus.NewReporter(js, c.RunID, o.ID, bus.RoleLearner, log),
		wake: make(chan struct{}, 1), complete: map[int64][]bus.Group{}, dropped: map[int64][]string{}, filtered: map[int64]int{},
		acct: Accounting{Received: map[bus.GroupKey]int{}, Learned: map[int64][]LearnedGroup{}, Resampled: map[int64]int{}}}
	if err := l.start(ctx, topts); err != nil {
		return nil, fmt.Errorf("learner: %w", err)
	}
	if topts.SFTCoef > 0 {
		src, err := pretrain.Anchor(c, l.trainer.Policy().Config, o.Codebook)
		if err != nil {
			return nil, fmt.Errorf("learner: %w", err)
		}
		if err := l.trainer.SetSupervised(src); err != nil {
			return nil, fmt.Errorf("learner: %w", err)
		}
	}
	return l, nil
}

// Trainer exposes the trainer (its policy is the current one).
func (l *Learner) Trainer() *trainer.Trainer { return l.trainer }

// NextStep is the step the learner trains next.
func (l *Learner) NextStep() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.next
}

// scoredFetchers scored samples are taken in at once: each costs a pull and a confirmed ack (two
// round trips to the server) besides its checks, so one at a time caps a learner at a few
// thousand samples a second, which 64 workers' steps exceed. The handler is safe to run
// concurrently (the collector and the accounting have their locks).
const scoredFetchers = 8

func newCollector(c config.Config) *bus.Collector {
	coll := bus.NewCollector(c.RunID)
	coll.MaxPartial = maxPartialGroups(c.Staleness, c.PromptsPerStep)
	return coll
}
