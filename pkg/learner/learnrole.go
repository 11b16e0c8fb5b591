// Package learner is the learner role of a distributed run: it pulls ScoredSamples from the
// run's scored queue, assembles complete groups with bus.Collector (each sample keyed by
// (step, prompt, sample), duplicates dropped, never a partial group), and when all P groups of
// the current step are in runs one BiCoT-GRPO update (pkg/learn's Trainer). After each update it
// writes the new weights to the object store, announces the new policy version on the bus,
// appends a line to <run>/metrics.jsonl, reports the step and its learned groups to the
// coordinator, and every N steps commits a checkpoint (trainer state with optimizer, weights,
// run-state snapshot) through pkg/ckpt.
//
// At start it resumes from the newest committed checkpoint of the run (dropping metrics lines and
// checkpoint debris of later steps, which it learns again identically), or starts from the initial
// policy, and (re-)announces its current version, which makes version 0 available to rollout
// workers. When DAPO filtering drops every group of a step (trainer.ErrAllFiltered) it makes no
// update and asks the coordinator for fresh prompts for the step, up to max_resample_rounds. The staleness bound is the trainer's: a group holding a sample drawn with a policy more
// than k versions behind is not trained.
package learner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gomlx/gomlx/backends"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/ckpt"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/pretrain"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/runstate"
	"github.com/bicot-rl/bicot/pkg/scene"
	"github.com/bicot-rl/bicot/pkg/store"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/trainer"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// Checkpoint part names written besides ckpt's conventional ones.
const (
	PartTrainer = "trainer" // trainer.Trainer.Save: weights + optimizer + reference + version
	PartConfig  = "config"  // the run config (YAML)
	PartLearned = "learned" // the group keys the checkpoint's step consumed (JSON list)
)

// Options configure the learner.
type Options struct {
	Config  config.Config
	ID      string
	Backend backends.Backend
	Store   store.Store
	// Init is the initial policy checkpoint (model.Save bytes), used when the run has no
	// checkpoint yet.
	Init []byte
	// Codebook, when set, writes the images of the final step's samples as PNGs under
	// <run>/samples/step-<N>/.
	Codebook *vq.Codebook
	// RunState, when set, supplies the run-state snapshot (runstate.EncodeSnapshot) stored in
	// checkpoints, with the data cursor it holds as its own part.
	RunState  func() ([]byte, error)
	Consume   bus.ConsumeOptions
	Heartbeat time.Duration
	// OnStep is called after every step (laptop mode's progress display).
	OnStep func(StepRecord)
	Log    zerolog.Logger
}

// StepRecord is one line of metrics.jsonl.
type StepRecord struct {
	Step          int64              `json:"step"`
	PolicyVersion int64              `json:"policy_version"`
	Stats         trainer.StepStats  `json:"stats"`
	PerExpert     map[string]float64 `json:"per_expert,omitempty"`
	Groups        int                `json:"groups"`
	Samples       int                `json:"samples"`
	// ResampleRounds is how many rounds of this step were dropped whole (every group tied under
	// grpo.filter_zero_std) before this one trained; FilteredGroups the groups they held.
	ResampleRounds int `json:"resample_rounds,omitempty"`
	FilteredGroups int `json:"filtered_groups,omitempty"`
	// WaitSeconds is the time from the previous step's end until this step's groups were complete
	// (rollout + reward); TrainSeconds the update; StepSeconds both plus publishing.
	WaitSeconds  float64   `json:"wait_seconds"`
	TrainSeconds float64   `json:"train_seconds"`
	StepSeconds  float64   `json:"step_seconds"`
	Time         time.Time `json:"time"`
}

// LearnedGroup is one group a step trained on.
type LearnedGroup struct {
	PromptIndex int `json:"prompt_index"`
	Samples     int `json:"samples"`
	// SampleIndices as trained, in order.
	SampleIndices []int `json:"sample_indices"`
}

// Accounting is the learner's own record of what it received and trained.
type Accounting struct {
	// Received counts accepted (first-seen) samples per group.
	Received map[bus.GroupKey]int
	// Duplicates are samples dropped because their key was already held (redelivery, re-dispatch).
	Duplicates int
	// Late are samples of steps already learned.
	Late int
	// StaleGroups were complete but outside the staleness bound, so not trained.
	StaleGroups int
	// Resampled counts, per step, the rounds whose groups all tied and were dropped by
	// grpo.filter_zero_std (ErrAllFiltered), each answered with fresh prompts for the step.
	Resampled map[int64]int
	// Learned lists each step's trained groups.
	Learned map[int64][]LearnedGroup
	Stats   []trainer.StepStats
}

// Learner is the learner role.
type Learner struct {
	o       Options
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
	dropped  map[int64][]string // group keys of whole-filtered rounds, reported as consumed at step_done
	acct     Accounting
	// resumed is the checkpoint the learner started from (nil: a fresh run), whose step_done it
	// reports again at start in case the previous learner died between the two.
	resumed       *ckpt.Manifest
	resumeLearned []string
	metrics       bytes.Buffer
	lastAnn       bus.PolicyAnnounce
	annAt         time.Time
}

// reannounceEvery is how often a learner waiting for groups publishes its current version again:
// a no-op while the policy stream still holds it (same message id), and what brings rollout
// workers back after the run's streams were reset (coordinator resume) or lost.
const reannounceEvery = 10 * time.Second

// TrainerOptions turns the run config into the trainer's options: the config's grpo section
// decoded over trainer.DefaultOptions (unknown keys are errors), with the batch size at least P*G
// and the sampling settings and staleness bound of the run.
func TrainerOptions(c config.Config) (trainer.Options, error) {
	o := trainer.DefaultOptions()
	if len(c.GRPO) > 0 {
		b, err := yaml.Marshal(c.GRPO)
		if err != nil {
			return o, fmt.Errorf("grpo options: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&o); err != nil {
			return o, fmt.Errorf("grpo options: %w", err)
		}
	}
	if need := c.PromptsPerStep * c.GroupSize; o.BatchSize < need {
		o.BatchSize = need
	}
	o.CFGWeight, o.Temperature, o.ImageLogp = c.Sampling.CFGWeight, c.Sampling.Temperature, c.Sampling.ImageLogp
	o.MaxStaleness = int64(c.Staleness)
	if o.MaxStaleness > 0 {
		o.Loss.Clip = true
	}
	if err := o.Validate(); err != nil {
		return o, err
	}
	return o, nil
}

// EffectiveConfig is c with its grpo section replaced by every trainer option in force
// (defaults filled in), which is what a run records as its config.yaml: a run's learning rate,
// KL weight and advantage settings are then readable without knowing the code's defaults.
func EffectiveConfig(c config.Config) (config.Config, error) {
	o, err := TrainerOptions(c)
	if err != nil {
		return c, err
	}
	o = o.WithDefaults()
	b, err := yaml.Marshal(o)
	if err != nil {
		return c, fmt.Errorf("grpo options: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return c, fmt.Errorf("grpo options: %w", err)
	}
	c.GRPO = m
	return c, nil
}

// New prepares the learner: it resumes from the run's newest checkpoint or builds a trainer over
// the initial policy.
func New(ctx context.Context, js jetstream.JetStream, o Options) (*Learner, error) {
	c := o.Config
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.RunID == "" {
		return nil, errors.New("learner: run id is required")
	}
	if o.ID == "" {
		o.ID = "learner"
	}
	if o.Backend == nil || o.Store == nil {
		return nil, errors.New("learner: backend and store are required")
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = c.Wire.Heartbeat.D()
	}
	log := logging.Component(o.Log, "learner").With().Str("run", c.RunID).Logger()
	topts, err := TrainerOptions(c)
	if err != nil {
		return nil, fmt.Errorf("learner: %w", err)
	}
	l := &Learner{o: o, cfg: c, js: js, coll: bus.NewCollector(c.RunID), log: log,
		rep:  bus.NewReporter(js, c.RunID, o.ID, bus.RoleLearner, log),
		wake: make(chan struct{}, 1), complete: map[int64][]bus.Group{}, dropped: map[int64][]string{},
		acct: Accounting{Received: map[bus.GroupKey]int{}, Learned: map[int64][]LearnedGroup{}, Resampled: map[int64]int{}}}

	m, err := ckpt.Latest(ctx, o.Store, c.RunID, ckpt.WithLogger(log))
	switch {
	case err == nil:
		state, err := ckpt.Load(ctx, o.Store, m, PartTrainer)
		if err != nil {
			return nil, fmt.Errorf("learner: resume: %w", err)
		}
		if l.trainer, err = trainer.Load(o.Backend, state, &topts); err != nil {
			return nil, fmt.Errorf("learner: resume from %s: %w", m.Key, err)
		}
		l.next = m.Step + 1
		l.resumed = &m
		if b, err := ckpt.Load(ctx, o.Store, m, PartLearned); err == nil {
			_ = json.Unmarshal(b, &l.resumeLearned)
		}
		if prev, err := readMetrics(ctx, o.Store, c.RunID); err == nil {
			// Lines of steps after the checkpoint belong to the interrupted run: the resumed run
			// learns those steps again (with the same result) and writes them anew.
			l.metrics.Write(metricsUpTo(prev, m.Step))
		}
		if err := dropNewer(ctx, o.Store, c.RunID, m.Step, log); err != nil {
			return nil, fmt.Errorf("learner: resume: %w", err)
		}
		log.Info().Int64("step", l.next).Int64("version", l.trainer.Version()).Str("checkpoint", m.Key).Msg("resumed")
	case errors.Is(err, ckpt.ErrNoCheckpoint):
		if len(o.Init) == 0 {
			return nil, errors.New("learner: no checkpoint to resume and no initial policy")
		}
		policy, err := model.Load(o.Backend, o.Init)
		if err != nil {
			return nil, fmt.Errorf("learner: initial policy: %w", err)
		}
		if l.trainer, err = trainer.NewTrainer(policy, topts); err != nil {
			return nil, fmt.Errorf("learner: %w", err)
		}
	default:
		return nil, fmt.Errorf("learner: %w", err)
	}
	if topts.SFTCoef > 0 {
		src, err := Anchor(c, l.trainer.Policy().Config, o.Codebook)
		if err != nil {
			return nil, fmt.Errorf("learner: %w", err)
		}
		if err := l.trainer.SetSupervised(src); err != nil {
			return nil, fmt.Errorf("learner: %w", err)
		}
	}
	return l, nil
}

// Anchor builds the supervised anchor's data (grpo.sft_coef > 0): pretraining examples of the
// run's pretrain_prompts in the pretraining mix, seeded by the run (seed + 1000, apart from the
// samples' streams). Batch s depends only on (seed, s), and the trainer asks for the batch of its
// own update count, so a resumed run draws the same batches. cb may be nil: the run's codebook is
// loaded.
func Anchor(c config.Config, mcfg model.Config, cb *vq.Codebook) (*pretrain.Examples, error) {
	if c.PretrainPrompts == "" {
		return nil, errors.New("supervised anchor: pretrain_prompts is empty")
	}
	ps, err := prompts.ReadFile(c.PretrainPrompts)
	if err != nil {
		return nil, fmt.Errorf("supervised anchor: %w", err)
	}
	if cb == nil {
		if cb, err = vq.Load(c.Codebook); err != nil {
			return nil, fmt.Errorf("supervised anchor: %w", err)
		}
	}
	mix := pretrain.DefaultMix()
	mix.Seed = c.Seed + 1000
	src, err := pretrain.NewExamples(mix, mcfg, tokenizer.New(), cb, ps)
	if err != nil {
		return nil, fmt.Errorf("supervised anchor: %s: %w", c.PretrainPrompts, err)
	}
	// A file the examples cannot be drawn from (held-out prompts) fails here, not at the first step.
	if _, err := src.Batch(0); err != nil {
		return nil, fmt.Errorf("supervised anchor: %s: %w", c.PretrainPrompts, err)
	}
	return src, nil
}

// Trainer exposes the trainer (its policy is the current one).
func (l *Learner) Trainer() *trainer.Trainer { return l.trainer }

// NextStep is the step the learner trains next.
func (l *Learner) NextStep() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.next
}

// Accounting returns a copy of the learner's record.
func (l *Learner) Accounting() Accounting {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.acct
	a.Received = maps.Clone(a.Received)
	a.Learned = map[int64][]LearnedGroup{}
	for k, v := range l.acct.Learned {
		a.Learned[k] = slices.Clone(v)
	}
	a.Stats = slices.Clone(a.Stats)
	return a
}

// metricsKey is where metrics.jsonl lives in the store.
func metricsKey(run string) string { return run + "/metrics.jsonl" }

func readMetrics(ctx context.Context, st store.Store, run string) ([]byte, error) {
	rc, err := st.Get(ctx, metricsKey(run))
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(rc)
	return b.Bytes(), err
}

// metricsUpTo keeps the metrics.jsonl lines of steps <= last (unparseable lines are dropped).
func metricsUpTo(b []byte, last int64) []byte {
	var out bytes.Buffer
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		var r struct {
			Step *int64 `json:"step"`
		}
		if len(bytes.TrimSpace(line)) == 0 || json.Unmarshal(line, &r) != nil || r.Step == nil || *r.Step > last {
			continue
		}
		out.Write(line)
		out.WriteByte('\n')
	}
	return out.Bytes()
}

// dropNewer deletes what checkpoints of steps after the resumed one left in the store (a
// corrupted or partial newest checkpoint that Latest skipped, parts of a save cut short), so the
// resumed run can commit those steps again.
func dropNewer(ctx context.Context, st store.Store, run string, step int64, log zerolog.Logger) error {
	objs, err := st.List(ctx, ckpt.Prefix(run))
	if err != nil {
		return fmt.Errorf("list checkpoints: %w", err)
	}
	// Manifests first, so an interrupted clean-up never leaves a manifest without its parts.
	slices.SortFunc(objs, func(a, b store.ObjectInfo) int {
		am, bm := strings.HasSuffix(a.Key, "/"+ckpt.ManifestName), strings.HasSuffix(b.Key, "/"+ckpt.ManifestName)
		switch {
		case am && !bm:
			return -1
		case bm && !am:
			return 1
		}
		return strings.Compare(a.Key, b.Key)
	})
	removed := map[string]bool{}
	for _, o := range objs {
		rest := strings.TrimPrefix(o.Key, ckpt.Prefix(run))
		dir, _, ok := strings.Cut(rest, "/")
		if !ok {
			continue
		}
		var s int64
		if _, err := fmt.Sscanf(dir, "%d", &s); err != nil || s <= step {
			continue
		}
		if err := st.Delete(ctx, o.Key); err != nil {
			return fmt.Errorf("drop checkpoint step %d: %w", s, err)
		}
		if !removed[dir] {
			removed[dir] = true
			log.Warn().Int64("step", s).Int64("resumed_from", step).Msg("dropping checkpoint newer than the one resumed from")
		}
	}
	return nil
}

// Announce publishes the trainer's current weights as its version.
func (l *Learner) announce(ctx context.Context, step int64) error {
	w, err := l.trainer.Weights()
	if err != nil {
		return err
	}
	v := l.trainer.Version()
	key, sum, err := ckpt.PutWeights(ctx, l.o.Store, l.cfg.RunID, v, w)
	if err != nil {
		return err
	}
	ann := bus.PolicyAnnounce{Run: l.cfg.RunID, Version: v, Step: step, WeightsKey: key, SHA256: sum}
	if _, err := bus.AnnouncePolicy(ctx, l.js, ann); err != nil {
		return err
	}
	l.mu.Lock()
	l.lastAnn, l.annAt = ann, time.Now()
	l.mu.Unlock()
	l.log.Info().Int64("version", v).Int64("step", step).Msg("policy announced")
	return nil
}

// Run announces the current policy, then learns until the run's last step is done (it returns
// nil) or ctx ends (nil too) or a step fails (the error).
func (l *Learner) Run(ctx context.Context) error {
	topo, err := bus.EnsureStreams(ctx, l.js, l.cfg.RunID)
	if err != nil {
		return fmt.Errorf("learner: %w", err)
	}
	if err := l.announce(ctx, l.next); err != nil {
		return fmt.Errorf("learner: announce initial policy: %w", err)
	}
	l.checkRunState()
	if m := l.resumed; m != nil && l.resumeLearned != nil {
		// Idempotent at the coordinator (a finished step's StepDone is a no-op); it matters when
		// the previous learner committed this checkpoint and died before reporting the step.
		if err := l.rep.EmitJSON(ctx, bus.EventStepDone, m.Step, m.PolicyVersion, bus.StepReport{Learned: l.resumeLearned},
			fmt.Sprintf("learner/step/%d", m.Step)); err != nil {
			l.log.Warn().Err(err).Int64("step", m.Step).Msg("step done not reported again")
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		l.rep.Heartbeat(cctx, l.o.Heartbeat)
	}()
	consumeErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		co := l.o.Consume
		lg := l.log
		co.Logger = &lg
		consumeErr <- bus.Consume(cctx, l.js, topo.Scored, bus.Typed(l.handle), co)
	}()
	err = l.loop(cctx)
	cancel()
	wg.Wait()
	if cerr := <-consumeErr; err == nil && cerr != nil {
		err = cerr
	}
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// checkRunState warns when the coordinators' run state is past the step this learner starts at:
// steps after its checkpoint were recorded as learned (a newer checkpoint was corrupted, or
// checkpoints are sparser than steps) and would never be dispatched again. Resuming through
// `coordinator resume` rebuilds the run state from the checkpoint instead.
func (l *Learner) checkRunState() {
	if l.o.RunState == nil {
		return
	}
	b, err := l.o.RunState()
	if err != nil {
		return
	}
	st, err := runstate.DecodeSnapshot(bytes.NewReader(b))
	if err != nil || st.RunID != l.cfg.RunID {
		return
	}
	if st.Step > l.next {
		l.log.Error().Int64("run_state_step", st.Step).Int64("learner_step", l.next).
			Msg("the coordinators' run state is past the newest good checkpoint: steps in between will not be dispatched again; resume the run with `coordinator resume` instead")
	}
}

func (l *Learner) handle(ctx context.Context, s *bus.ScoredSample, _ jetstream.Msg) error {
	l.mu.Lock()
	next := l.next
	l.mu.Unlock()
	if s.Step < next {
		l.mu.Lock()
		l.acct.Late++
		l.mu.Unlock()
		return nil
	}
	if s.G != l.cfg.GroupSize {
		return bus.Poison(fmt.Errorf("sample %s has group size %d, the run's is %d", s.Key(), s.G, l.cfg.GroupSize))
	}
	g, dup, err := l.coll.Add(*s)
	if err != nil {
		return bus.Poison(err)
	}
	l.mu.Lock()
	if dup {
		l.acct.Duplicates++
		l.mu.Unlock()
		return nil
	}
	l.acct.Received[bus.GroupKey{Step: s.Step, PromptIndex: s.PromptIndex}]++
	if g != nil {
		l.complete[g.Key.Step] = append(l.complete[g.Key.Step], *g)
	}
	l.mu.Unlock()
	if g != nil {
		l.rep.Emit(ctx, bus.EventGroupComplete, g.Key.Step, s.PolicyVersion, len(g.Samples),
			groupKey(g.Key), "learner/group/"+groupKey(g.Key))
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

func groupKey(k bus.GroupKey) string { return fmt.Sprintf("%d/%d", k.Step, k.PromptIndex) }

func (l *Learner) loop(ctx context.Context) error {
	last := time.Now()
	for {
		l.mu.Lock()
		step := l.next
		ready := len(l.complete[step]) >= l.cfg.PromptsPerStep
		l.mu.Unlock()
		if step >= int64(l.cfg.Steps) {
			l.log.Info().Int64("steps", step).Msg("run complete")
			return nil
		}
		l.rep.SetProgress(step, l.trainer.Version())
		l.mu.Lock()
		ann, stale := l.lastAnn, time.Since(l.annAt) > reannounceEvery
		l.mu.Unlock()
		if !ready && stale && ann.Run != "" {
			if _, err := bus.AnnouncePolicy(ctx, l.js, ann); err != nil && ctx.Err() == nil {
				l.log.Warn().Err(err).Int64("version", ann.Version).Msg("announcing the policy again")
			}
			l.mu.Lock()
			l.annAt = time.Now()
			l.mu.Unlock()
		}
		if !ready {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-l.wake:
			case <-time.After(time.Second):
			}
			continue
		}
		if err := l.trainStep(ctx, step, time.Since(last)); err != nil {
			return fmt.Errorf("learner step %d: %w", step, err)
		}
		last = time.Now()
	}
}

func (l *Learner) trainStep(ctx context.Context, step int64, wait time.Duration) error {
	start := time.Now()
	l.mu.Lock()
	groups := slices.Clone(l.complete[step])
	l.mu.Unlock()
	slices.SortFunc(groups, func(a, b bus.Group) int { return a.Key.PromptIndex - b.Key.PromptIndex })
	lgs := make([]trainer.Group, len(groups))
	for i, g := range groups {
		lgs[i] = trainer.Group(g)
	}
	fresh, stale := l.trainer.Partition(lgs)
	if len(stale) > 0 {
		l.log.Warn().Int("groups", len(stale)).Int64("version", l.trainer.Version()).Int("staleness", l.cfg.Staleness).
			Msg("groups outside the staleness bound are not trained")
	}
	if len(fresh) == 0 {
		return fmt.Errorf("all %d groups are outside the staleness bound %d of version %d", len(stale), l.cfg.Staleness, l.trainer.Version())
	}
	t0 := time.Now()
	stats, err := l.trainer.Step(fresh)
	if errors.Is(err, trainer.ErrAllFiltered) {
		return l.resample(ctx, step, groups)
	}
	if err != nil {
		return err
	}
	trainTime := time.Since(t0)
	if err := l.announce(ctx, step+1); err != nil {
		return err
	}
	l.mu.Lock()
	dropped := slices.Clone(l.dropped[step])
	rounds := l.acct.Resampled[step]
	l.mu.Unlock()
	rec := StepRecord{Step: step, PolicyVersion: l.trainer.Version(), Stats: stats, PerExpert: stats.PerExpert,
		ResampleRounds: rounds, FilteredGroups: len(dropped), Groups: len(fresh), WaitSeconds: wait.Seconds(), TrainSeconds: trainTime.Seconds(), Time: time.Now().UTC()}
	var learned []string
	var lg []LearnedGroup
	for _, g := range fresh {
		learned = append(learned, groupKey(g.Key))
		idx := make([]int, len(g.Samples))
		for i, s := range g.Samples {
			idx[i] = s.SampleIndex
		}
		lg = append(lg, LearnedGroup{PromptIndex: g.Key.PromptIndex, Samples: len(g.Samples), SampleIndices: idx})
		rec.Samples += len(g.Samples)
	}
	// Groups of dropped rounds were consumed too: the coordinator forgets them with the step.
	learned = append(learned, dropped...)
	for _, g := range stale {
		learned = append(learned, groupKey(g.Key))
	}
	final := step+1 >= int64(l.cfg.Steps)
	if final && l.o.Codebook != nil {
		if err := l.writeImages(ctx, step, fresh); err != nil {
			l.log.Warn().Err(err).Msg("sample images not written")
		}
	}
	rec.StepSeconds = time.Since(start).Seconds() + wait.Seconds()
	line, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.metrics.Write(line)
	l.metrics.WriteByte('\n')
	all := bytes.Clone(l.metrics.Bytes())
	l.mu.Unlock()
	if err := l.o.Store.Put(ctx, metricsKey(l.cfg.RunID), bytes.NewReader(all), int64(len(all))); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if final || (l.cfg.CheckpointEvery > 0 && (step+1)%int64(l.cfg.CheckpointEvery) == 0) {
		if err := l.checkpoint(ctx, step, stats, learned); err != nil {
			return err
		}
	}
	metrics := map[string]float64{"loss": stats.Loss, "reward_mean": stats.RewardMean, "kl": stats.KL,
		"ratio_mean": stats.RatioMean, "zero_std_ratio": stats.ZeroStdRatio, "step_seconds": rec.StepSeconds,
		"resample_rounds": float64(rounds)}
	for k, v := range stats.PerExpert {
		metrics["reward/"+k] = v
	}
	if err := l.rep.EmitJSON(ctx, bus.EventStepDone, step, l.trainer.Version(), bus.StepReport{Learned: learned, Metrics: metrics},
		fmt.Sprintf("learner/step/%d", step)); err != nil {
		return fmt.Errorf("report step done: %w", err)
	}
	l.mu.Lock()
	l.acct.Learned[step] = lg
	l.acct.StaleGroups += len(stale)
	l.acct.Stats = append(l.acct.Stats, stats)
	delete(l.complete, step)
	delete(l.dropped, step)
	l.next = step + 1
	l.mu.Unlock()
	l.coll.Forget(step + 1)
	l.log.Info().Int64("step", step).Int64("version", l.trainer.Version()).Float64("reward", stats.RewardMean).
		Float64("loss", stats.Loss).Float64("kl", stats.KL).Float64("ratio", stats.RatioMean).
		Dur("train", trainTime).Dur("wait", wait).Msg("step learned")
	if l.o.OnStep != nil {
		l.o.OnStep(rec)
	}
	return nil
}

// resample answers a step whose complete groups all tied under grpo.filter_zero_std
// (trainer.ErrAllFiltered): the trainer refused to update, so the policy, its version and the
// optimizer are unchanged. The learner drops the round's groups, counts it, and asks the
// coordinator for fresh prompts for the same step (a step_resample event; the coordinator
// dispatches the next P prompts of the data cursor as round r of the step, with the current
// policy version). Up to max_resample_rounds rounds per step; beyond that the rewards are
// broken for this run and the learner stops with an error naming the step.
func (l *Learner) resample(ctx context.Context, step int64, groups []bus.Group) error {
	l.mu.Lock()
	round := l.acct.Resampled[step] + 1
	if round > l.cfg.MaxResampleRounds {
		l.mu.Unlock()
		return fmt.Errorf("%w (step %d: %d rounds of %d groups tied, max_resample_rounds %d)", trainer.ErrAllFiltered,
			step, round, len(groups), l.cfg.MaxResampleRounds)
	}
	l.acct.Resampled[step] = round
	keys := make([]string, 0, len(groups))
	for _, g := range groups {
		keys = append(keys, groupKey(g.Key))
	}
	l.dropped[step] = append(l.dropped[step], keys...)
	delete(l.complete, step)
	l.mu.Unlock()
	l.log.Warn().Int64("step", step).Int("round", round).Int("groups", len(groups)).
		Msg("every group of the step tied and was filtered (grpo.filter_zero_std): no update, asking for fresh prompts")
	if err := l.rep.EmitJSON(ctx, bus.EventStepResample, step, l.trainer.Version(), bus.ResampleRequest{Round: round, Dropped: keys},
		fmt.Sprintf("learner/resample/%d/%d", step, round)); err != nil {
		return fmt.Errorf("ask for fresh prompts: %w", err)
	}
	return nil
}

func (l *Learner) checkpoint(ctx context.Context, step int64, stats trainer.StepStats, learned []string) error {
	state, err := l.trainer.Save()
	if err != nil {
		return err
	}
	w, err := l.trainer.Weights()
	if err != nil {
		return err
	}
	cfg, err := l.cfg.YAML()
	if err != nil {
		return err
	}
	lj, err := json.Marshal(learned)
	if err != nil {
		return err
	}
	parts := map[string][]byte{PartTrainer: state, ckpt.PartWeights: w, PartConfig: cfg, PartLearned: lj}
	if l.o.RunState != nil {
		if rs, err := l.o.RunState(); err == nil {
			parts[ckpt.PartRunState] = rs
			if st, err := runstate.DecodeSnapshot(bytes.NewReader(rs)); err == nil {
				if cur, err := json.Marshal(st.Cursor); err == nil {
					parts[ckpt.PartCursor] = cur
				}
			}
		} else {
			l.log.Warn().Err(err).Msg("checkpoint without run-state snapshot")
		}
	}
	m, err := ckpt.Save(ctx, l.o.Store, l.cfg.RunID, step, parts, ckpt.Meta{PolicyVersion: l.trainer.Version(),
		Metrics: map[string]float64{"reward_mean": stats.RewardMean, "kl": stats.KL}})
	if err != nil && !errors.Is(err, ckpt.ErrExists) {
		return fmt.Errorf("checkpoint: %w", err)
	}
	key := ckpt.ManifestKey(l.cfg.RunID, step)
	if err == nil {
		key = m.Key
	}
	l.rep.Emit(ctx, bus.EventCheckpoint, step, l.trainer.Version(), 0, key, "learner/checkpoint/"+key)
	l.log.Info().Int64("step", step).Str("key", key).Msg("checkpoint committed")
	if r := l.cfg.Retention; r.KeepLast > 0 {
		removed, err := ckpt.Prune(ctx, l.o.Store, l.cfg.RunID, ckpt.Retention{KeepLast: r.KeepLast, KeepBest: r.KeepBest,
			Metric: r.Metric, LowerIsBetter: r.LowerIsBetter}, ckpt.WithLogger(l.log))
		if err != nil {
			// Retention is housekeeping: a failed delete must not stop training.
			l.log.Warn().Err(err).Msg("pruning checkpoints")
		} else if len(removed) > 0 {
			l.log.Debug().Ints64("steps", removed).Msg("pruned checkpoints")
		}
	}
	return nil
}

// writeImages stores the decoded images of a step's samples under <run>/samples/step-<N>/.
func (l *Learner) writeImages(ctx context.Context, step int64, groups []trainer.Group) error {
	for _, g := range groups {
		for _, s := range g.Samples {
			img, err := s.Sample.Image(l.o.Codebook)
			if err != nil {
				return err
			}
			b, err := scene.PNG(img)
			if err != nil {
				return err
			}
			key := fmt.Sprintf("%s/samples/step-%d/p%d-s%d.png", l.cfg.RunID, step, s.PromptIndex, s.SampleIndex)
			if err := l.o.Store.Put(ctx, key, bytes.NewReader(b), int64(len(b))); err != nil {
				return err
			}
		}
	}
	return nil
}

// RunStateFromCluster returns a RunState function that reads the replicated run state from the
// coordinator cluster's leader (runstate.Client follows failovers by itself).
func RunStateFromCluster(cl *runstate.Client) func() ([]byte, error) {
	return func() ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		st, err := cl.State(ctx)
		if err != nil {
			return nil, fmt.Errorf("run state: %w", err)
		}
		var b bytes.Buffer
		if err := runstate.EncodeSnapshot(&b, st); err != nil {
			return nil, err
		}
		return b.Bytes(), nil
	}
}

// RunStateFrom returns a RunState function that reads the snapshot from a coordinator's status
// API (GET <url>/v1/runstate).
func RunStateFrom(url string) func() ([]byte, error) {
	hc := &http.Client{Timeout: 10 * time.Second}
	return func() ([]byte, error) {
		resp, err := hc.Get(strings.TrimRight(url, "/") + "/v1/runstate")
		if err != nil {
			return nil, fmt.Errorf("run state from %s: %w", url, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, fmt.Errorf("run state from %s: %w", url, err)
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("run state from %s: %s", url, resp.Status)
		}
		if _, err := runstate.DecodeSnapshot(bytes.NewReader(b)); err != nil {
			return nil, fmt.Errorf("run state from %s: %w", url, err)
		}
		return b, nil
	}
}
