// Package rolloutworker is the rollout worker role: it pulls BatchTasks from the run's task queue,
// loads the policy version a task names (weights from the object store, checksum-verified,
// cached; it waits for the version's announcement when it is not out yet), samples G plans and
// images per prompt with model.Sample, and publishes one bus.Sample per sample before acking the
// task.
//
// Sampling is deterministic: every sample's random stream derives from (run seed, step, prompt
// index, sample index) (model.SampleSeed), so a redelivered or re-dispatched task reproduces the
// same samples under the same policy version, their message ids are the same sample keys, and
// JetStream and the learner drop the copies. Workers hold no state of the run: start or stop them
// at any time.
package rolloutworker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bicot-rl/bicot/pkg/config"

	"github.com/bicot-rl/bicot/pkg/wire"

	"github.com/gomlx/gomlx/backends"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/ckpt"
	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/scene"
	"github.com/bicot-rl/bicot/pkg/store"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// Deps are what a rollout worker is given: its name, connection, compute and storage. Everything
// else comes from the run config, so laptop mode and the rollout-worker binary, which both call
// New, cannot configure it differently.
type Deps struct {
	// ID names the worker in events and samples.
	ID      string
	JS      jetstream.JetStream
	Backend backends.Backend
	Store   store.Store
	// Codebook decodes images for sampling.attach_png (unused otherwise).
	Codebook *vq.Codebook
	// Metrics registers the worker's Prometheus series (nil: none).
	Metrics prometheus.Registerer
	// Sample draws a task's samples from the loaded policy (nil: the policy's own
	// model.Model.Sample). Benchmarks put simulated compute here to measure everything else.
	Sample Sampler
	Log    zerolog.Logger
}

// Sampler draws the samples of a request from policy m.
type Sampler func(m *model.Model, req model.SampleRequest) ([]model.Sample, error)

// options are the worker's settings, derived from Deps and the run config by New.
type options struct {
	Run        string
	ID         string
	Backend    backends.Backend
	Store      store.Store
	Codebook   *vq.Codebook
	AttachPNG  bool
	Consume    bus.ConsumeOptions
	Heartbeat  time.Duration
	PolicyWait time.Duration
	Sample     Sampler
}

// Stats count a worker's work.
type Stats struct {
	Tasks   int64
	Samples int64
	// Steps lists the steps this worker sampled for (sorted by first seen).
	Steps []int64
}

// Worker samples BatchTasks.
type Worker struct {
	o      options
	js     jetstream.JetStream
	vocab  *tokenizer.Vocab
	cache  *ckpt.WeightCache
	rep    *bus.Reporter
	log    zerolog.Logger
	policy *policyLoader
	topo   bus.Topology
	m      *metrics
	// sampling serialises the model: one policy per worker, swapped between tasks.
	sampling sync.Mutex

	mu      sync.Mutex
	steps   []int64
	tasks   atomic.Int64
	samples atomic.Int64
}

// New returns a worker of the run cfg; Run starts it. ctx bounds set-up (none today: the streams
// are ensured by Run).
func New(_ context.Context, d Deps, cfg config.Config) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("rollout: %w", err)
	}
	if err := config.ValidateRunID(cfg.RunID); err != nil {
		return nil, fmt.Errorf("rollout: %w", err)
	}
	if d.ID == "" || d.JS == nil || d.Backend == nil || d.Store == nil {
		return nil, errors.New("rollout: worker id, JetStream, backend and store are required")
	}
	if cfg.Sampling.AttachPNG && d.Codebook == nil {
		return nil, errors.New("rollout: sampling.attach_png needs a codebook")
	}
	o := options{Run: cfg.RunID, ID: d.ID, Backend: d.Backend, Store: d.Store, Codebook: d.Codebook,
		AttachPNG: cfg.Sampling.AttachPNG, Consume: bus.ConsumeFrom(cfg.Wire, cfg.Wire.RolloutFetchers),
		Heartbeat: cfg.Wire.Heartbeat.D(), PolicyWait: cfg.Wire.PolicyWait.D(), Sample: d.Sample}
	if o.Sample == nil {
		o.Sample = (*model.Model).Sample
	}
	log := logging.Component(d.Log, "rollout").With().Str("worker", o.ID).Logger()
	m, err := newMetrics(d.Metrics, o.ID)
	if err != nil {
		return nil, err
	}
	w := &Worker{o: o, js: d.JS, vocab: tokenizer.New(), cache: ckpt.NewWeightCache(o.Store), log: log,
		rep: bus.NewReporter(d.JS, o.Run, o.ID, bus.RoleRollout, log), m: m}
	w.policy = &policyLoader{w: w, seen: map[int64]bus.PolicyAnnounce{}, superseded: map[int64]bool{}}
	return w, nil
}

// Stats returns the worker's counters.
func (w *Worker) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Stats{Tasks: w.tasks.Load(), Samples: w.samples.Load(), Steps: append([]int64(nil), w.steps...)}
}

// Run works until ctx ends. It returns nil on a clean stop.
func (w *Worker) Run(ctx context.Context) error {
	topo, err := bus.AwaitStreams(ctx, w.js, w.o.Run, w.log)
	if err != nil {
		return fmt.Errorf("rollout %s: %w", w.o.ID, err)
	}
	w.topo = topo
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		w.rep.Heartbeat(ctx, w.o.Heartbeat)
	}()
	go func() {
		defer wg.Done()
		_ = bus.WatchPolicy(ctx, w.js, w.o.Run, w.policy.announced, func(err error) {
			w.log.Warn().Err(err).Msg("policy watch")
		})
	}()
	co := w.o.Consume
	lg := w.log
	co.Logger = &lg
	w.log.Info().Msg("rollout worker started")
	err = bus.Consume(ctx, w.js, w.topo.Tasks, bus.Typed(w.handle), co)
	wg.Wait()
	w.log.Info().Int64("tasks", w.tasks.Load()).Int64("samples", w.samples.Load()).Msg("rollout worker stopped")
	return err
}

func (w *Worker) handle(ctx context.Context, t *bus.BatchTask, _ jetstream.Msg) error {
	if t.Run != w.o.Run {
		return bus.Poison(fmt.Errorf("task of run %s on a worker of run %s", t.Run, w.o.Run))
	}
	start := time.Now()
	ann, err := w.policy.await(ctx, t.PolicyVersion)
	if errors.Is(err, errSuperseded) {
		w.log.Warn().Str("task", t.MsgID()).Int64("version", t.PolicyVersion).Msg("task of a replaced learner's policy version dropped")
		return nil
	}
	if err != nil {
		return err
	}
	w.sampling.Lock()
	defer w.sampling.Unlock()
	busyFrom := time.Now()
	m, err := w.policy.load(ctx, ann)
	if err != nil {
		return err
	}
	version := ann.Version
	w.rep.SetProgress(t.Step, version)
	encoded := make([][]int32, len(t.Prompts))
	ids := make([]uint64, len(t.Prompts))
	for i, p := range t.Prompts {
		enc, err := wire.EncodePrompt(w.vocab, p.Prompt.Prompt)
		if err != nil {
			return bus.Poison(fmt.Errorf("task %s: prompt %d %q: %w", t.MsgID(), p.Index, p.Prompt.Prompt, err))
		}
		encoded[i], ids[i] = enc, uint64(p.Index)
	}
	req := wire.SampleRequest(t.Sampling)
	req.Prompts, req.PromptIDs, req.G, req.Seed, req.Step = encoded, ids, t.G, t.Seed, uint64(t.Step)
	ss, err := w.o.Sample(m, req)
	if err != nil {
		// A prompt longer than the policy's text part can never be sampled.
		return bus.Poison(fmt.Errorf("task %s: %w", t.MsgID(), err))
	}
	outs := make([]bus.Sample, len(ss))
	for i, s := range ss {
		ref := t.Prompts[s.Prompt]
		out := bus.Sample{Run: t.Run, Step: t.Step, PromptIndex: ref.Index, SampleIndex: s.Index, G: t.G,
			PolicyVersion: version, Prompt: ref.Prompt, Worker: w.o.ID, Attempt: t.Attempt}
		if err := wire.FromSample(m.Config, s, &out); err != nil {
			return bus.Poison(fmt.Errorf("task %s: %w", t.MsgID(), err))
		}
		if w.o.AttachPNG {
			img, err := w.o.Codebook.Decode(s.Codes)
			if err != nil {
				return bus.Poison(fmt.Errorf("task %s: decode: %w", t.MsgID(), err))
			}
			if out.PNG, err = scene.PNG(img); err != nil {
				return fmt.Errorf("task %s: png: %w", t.MsgID(), err)
			}
		}
		outs[i] = out
	}
	if err := publishSamples(ctx, w.js, outs); err != nil {
		return fmt.Errorf("task %s: %w", t.MsgID(), err)
	}
	w.tasks.Add(1)
	w.samples.Add(int64(len(ss)))
	w.m.task(len(ss), version, time.Since(start), time.Since(busyFrom))
	w.mu.Lock()
	if n := len(w.steps); n == 0 || w.steps[n-1] != t.Step {
		w.steps = append(w.steps, t.Step)
	}
	w.mu.Unlock()
	w.rep.Emit(ctx, bus.EventTaskDone, t.Step, version, len(ss), t.MsgID(), "")
	w.log.Debug().Int64("step", t.Step).Int("prompts", len(t.Prompts)).Int("samples", len(ss)).
		Dur("took", time.Since(start)).Msg("task sampled")
	return nil
}

// publishSamples publishes a task's samples side by side (at most publishConcurrency at once)
// and waits for every acknowledgement: one round trip to the server per task instead of one per
// sample. Any failure fails the task, which is then sampled again; the samples' message ids make
// JetStream drop the copies already stored.
func publishSamples(ctx context.Context, js jetstream.JetStream, outs []bus.Sample) error {
	sem := make(chan struct{}, publishConcurrency)
	errs := make([]error, len(outs))
	var wg sync.WaitGroup
	for i := range outs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_, errs[i] = bus.PublishSample(ctx, js, outs[i])
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// publishConcurrency bounds a task's samples in flight to the server.
const publishConcurrency = 16

// policyLoader keeps the worker's policy at the version tasks ask for.
type policyLoader struct {
	w *Worker

	mu     sync.Mutex
	seen   map[int64]bus.PolicyAnnounce
	latest int64
	// learner is the incarnation whose announcements seen holds, first seen at learnerSince;
	// superseded are versions only earlier incarnations announced.
	learner      string
	learnerSince time.Time
	superseded   map[int64]bool
	model        *model.Model
	loaded       string // sha256 of the loaded weights
	version      int64
}

// errSuperseded: the task names a version only a learner that has since been replaced announced
// (the run was rewound to the new learner's checkpoint), so it belongs to the abandoned part of
// the run and is dropped instead of waited for.
var errSuperseded = errors.New("policy version announced only by a replaced learner")

// supersededWait is how long a task naming a superseded version waits before it is dropped: the
// new learner may announce the same version number any moment (a task dispatched for it can
// arrive a little before its announcement).
const supersededWait = 2 * time.Second

func (p *policyLoader) announced(a bus.PolicyAnnounce) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a.Learner != p.learner {
		if a.Time.Before(p.learnerSince) {
			return // a predecessor's, read late
		}
		// A new learner (one restarted from a checkpoint): the versions its predecessor announced
		// past that checkpoint are not this run's any more.
		p.learner, p.learnerSince = a.Learner, a.Time
		for v := range p.seen {
			p.superseded[v] = true
		}
		p.seen, p.latest = map[int64]bus.PolicyAnnounce{}, 0
	}
	p.seen[a.Version] = a
	if a.Version > p.latest {
		p.latest = a.Version
	}
}

// await returns the announcement a task of version want is sampled with: exactly that version
// when this worker has seen its announcement, else the newest announced one when it is newer (a
// task dispatched with version v may be sampled by any later version within the staleness bound,
// which the learner enforces). It waits while no announced version reaches want - outside the
// sampling lock, so a task waiting for its version never holds up one that can run.
func (p *policyLoader) await(ctx context.Context, want int64) (bus.PolicyAnnounce, error) {
	start := time.Now()
	deadline := start.Add(p.w.o.PolicyWait)
	for {
		p.mu.Lock()
		a, ok := p.seen[want]
		if !ok && len(p.seen) > 0 && p.latest > want {
			a, ok = p.seen[p.latest], true
		}
		superseded := !ok && p.superseded[want]
		p.mu.Unlock()
		if superseded && time.Since(start) > supersededWait {
			return bus.PolicyAnnounce{}, errSuperseded
		}
		if !ok {
			// The watcher may lag a moment behind the stream: ask it directly too.
			if la, err := bus.LatestPolicy(ctx, p.w.js, p.w.o.Run); err == nil {
				p.announced(la)
				if la.Version >= want {
					a, ok = la, true
				}
			}
		}
		if ok {
			return a, nil
		}
		if time.Now().After(deadline) {
			return bus.PolicyAnnounce{}, fmt.Errorf("policy version %d not announced after %v", want, p.w.o.PolicyWait)
		}
		select {
		case <-ctx.Done():
			return bus.PolicyAnnounce{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (p *policyLoader) load(ctx context.Context, a bus.PolicyAnnounce) (*model.Model, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.model != nil && p.loaded == a.SHA256 {
		return p.model, nil
	}
	b, err := p.w.cache.Get(ctx, a.WeightsKey, a.SHA256)
	if err != nil {
		return nil, fmt.Errorf("policy v%d: %w", a.Version, err)
	}
	if p.model == nil {
		m, err := model.Load(p.w.o.Backend, b)
		if err != nil {
			return nil, bus.Poison(fmt.Errorf("policy v%d: %w", a.Version, err))
		}
		p.model = m
	} else if err := p.model.LoadWeights(b); err != nil {
		return nil, fmt.Errorf("policy v%d: %w", a.Version, err)
	}
	p.loaded, p.version = a.SHA256, a.Version
	p.w.log.Info().Int64("version", a.Version).Msg("policy loaded")
	return p.model, nil
}
