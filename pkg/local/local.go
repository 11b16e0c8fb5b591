// Package local runs a whole BiCoT-GRPO run in one process: an embedded nats-server (real NATS,
// real JetStream on loopback), a single-node raft coordinator, N rollout workers, M reward workers
// and the learner, all talking over the bus exactly as separate processes would, with the local
// directory store. It writes the run under <out>/<run-id>/ (config, checkpoints, weights,
// the metrics, the last step's sample images, eval.json), shows a line per step, and ends with
// the oracle evaluation of the final policy.
//
// The roles are the same code the cluster binaries run (pkg/coordinator, pkg/rolloutworker,
// pkg/rewardworker, pkg/learner); Start exposes them so tests can add workers mid-run or inspect
// accounting.
package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gomlx/gomlx/backends"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/coordinator"
	"github.com/bicot-rl/bicot/pkg/evaluate"
	"github.com/bicot-rl/bicot/pkg/learner"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/natsd"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/rewardworker"
	"github.com/bicot-rl/bicot/pkg/rolloutworker"
	"github.com/bicot-rl/bicot/pkg/runfiles"
	"github.com/bicot-rl/bicot/pkg/runstate"
	"github.com/bicot-rl/bicot/pkg/startup"
	"github.com/bicot-rl/bicot/pkg/store"
	"github.com/bicot-rl/bicot/pkg/trainer"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// Options configure a laptop run.
type Options struct {
	Config         config.Config
	RolloutWorkers int
	RewardWorkers  int
	// Out is the directory runs are written under (default "runs").
	Out string
	// HTTPAddr of the coordinator's status API (default 127.0.0.1:0).
	HTTPAddr string
	// NATSPort for the embedded server (0: any free port).
	NATSPort int
	// Progress receives one line per step and the evaluation table (nil: nowhere).
	Progress io.Writer
	// Fallbacks for missing models (nil: none).
	Fallbacks *Fallbacks
	// Backend overrides the compute backend (tests share one).
	Backend backends.Backend
	// Ensemble overrides the reward ensemble (tests).
	Ensemble rewardworker.Scorer
	// InitPolicy overrides the initial policy bytes (tests).
	InitPolicy []byte
	// Sample and Update replace the rollout workers' sampling and the learner's update
	// (nil: the model's; benchmarks simulate compute with them, see pkg/bench).
	Sample rolloutworker.Sampler
	Update func(*trainer.Trainer, []trainer.Group) (trainer.StepStats, error)
	// OnStep is called after every learned step, besides the progress line.
	OnStep func(learner.StepRecord)
	// SkipEval skips the final evaluation.
	SkipEval bool
	Log      zerolog.Logger
}

// Result summarises a finished run.
type Result struct {
	RunID string
	Dir   string
	Steps int64
	// Eval and InitialEval are the oracle's scores of the final and the initial policy.
	Eval        *evaluate.Result
	InitialEval *evaluate.Result
	// Accounting is the learner's record.
	Accounting learner.Accounting
	Rollout    []rolloutworker.Stats
	Scored     []int64
	Status     coordinator.Status
}

// Cluster is a running laptop-mode run.
type Cluster struct {
	o       Options
	cfg     config.Config
	dir     string
	log     zerolog.Logger
	nats    *natsd.Server
	node    *runstate.Node
	st      store.Store
	backend backends.Backend
	cb      *vq.Codebook
	ens     rewardworker.Scorer
	// metrics is every role's registry, served by the coordinator's status API at /metrics.
	metrics *prometheus.Registry

	Coordinator *coordinator.Coordinator
	Learner     *learner.Learner

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu             sync.Mutex
	conns          []*nats.Conn
	rolloutWorkers []*rolloutworker.Worker
	rewardWorkers  []*rewardworker.Worker
	errs           []error
	learnErr       chan error
	learnerDeps    learner.Deps       // how a restarted learner is built (RestartLearner)
	learnCancel    context.CancelFunc // stops the running learner
	learnDone      chan struct{}      // closed when the running learner's Run returned
}

// Start brings every role up and returns while the run proceeds.
func Start(ctx context.Context, o Options) (c *Cluster, err error) {
	cfg := o.Config
	if cfg.RunID == "" {
		cfg.RunID = "local-" + time.Now().UTC().Format("20060102-150405")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if o.RolloutWorkers < 1 || o.RewardWorkers < 1 {
		return nil, fmt.Errorf("laptop: %d rollout and %d reward workers, want at least 1 of each", o.RolloutWorkers, o.RewardWorkers)
	}
	if o.Out == "" {
		o.Out = "runs"
	}
	if o.HTTPAddr == "" {
		o.HTTPAddr = "127.0.0.1:0"
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if cfg.Store == "" {
		cfg.Store = o.Out
	}
	dir := filepath.Join(o.Out, cfg.RunID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("laptop: %w", err)
	}
	c = &Cluster{o: o, cfg: cfg, dir: dir, log: o.Log.With().Str("run", cfg.RunID).Logger(), learnErr: make(chan error, 1)}
	// The failure paths below return nil for c: stop what was started through a copy.
	cl := c
	defer func() {
		if err != nil {
			cl.Stop()
		}
	}()
	ps, err := prompts.ReadPool(cfg.Prompts, cfg.PromptRepeats)
	if err != nil {
		return nil, fmt.Errorf("laptop: %w", err)
	}
	if c.cb, err = vq.Load(cfg.Codebook); err != nil {
		return nil, fmt.Errorf("laptop: %w", err)
	}
	c.backend = o.Backend
	if c.backend == nil {
		if c.backend, err = mlx.NewBackend(cfg.Backend); err != nil {
			return nil, fmt.Errorf("laptop: %w", err)
		}
	}
	init := o.InitPolicy
	if init == nil {
		if init, err = initPolicy(c.backend, cfg, c.cb, o.Fallbacks, c.log); err != nil {
			return nil, fmt.Errorf("laptop: %w", err)
		}
		if _, statErr := os.Stat(cfg.PolicyInit); o.Fallbacks != nil && errors.Is(statErr, fs.ErrNotExist) {
			if _, err := plainPlansWithout(&cfg, init, c.log); err != nil {
				return nil, fmt.Errorf("laptop: %w", err)
			}
			c.cfg = cfg
		}
	}
	if y, err := cfg.Effective().Redacted().YAML(); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "config.yaml"), y, 0o644)
	}
	c.ens = o.Ensemble
	if c.ens == nil {
		fb := o.Fallbacks
		if fb != nil && fb.Dir == "" {
			f := *fb
			f.Dir = o.Out
			fb = &f
		}
		if c.ens, err = ensemble(ctx, c.backend, cfg, fb, c.log); err != nil {
			return nil, fmt.Errorf("laptop: %w", err)
		}
	}
	st, closeStore, err := startup.OpenStore(ctx, cfg.Store, c.log)
	if err != nil {
		return nil, fmt.Errorf("laptop: %w", err)
	}
	_ = closeStore // local and S3 stores hold nothing that outlives the process
	c.st = st

	if c.nats, err = natsd.Start(natsd.Options{Port: o.NATSPort}); err != nil {
		return nil, fmt.Errorf("laptop: %w", err)
	}
	if c.node, err = runstate.Open(runstate.NodeConfig{ID: "coordinator-0", RaftAddr: "127.0.0.1:0",
		DataDir: filepath.Join(dir, "raft"), Bootstrap: true}, c.log.Level(max(zerolog.ErrorLevel, c.log.GetLevel()))); err != nil {
		return nil, fmt.Errorf("laptop: %w", err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = c.node.WaitLeader(wctx)
	wcancel()
	if err != nil {
		return nil, fmt.Errorf("laptop: raft leader: %w", err)
	}
	c.ctx, c.cancel = context.WithCancel(ctx)
	c.metrics = prometheus.NewRegistry()
	c.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	js, err := c.connect("coordinator")
	if err != nil {
		return nil, err
	}
	if c.Coordinator, err = coordinator.New(c.ctx, coordinator.Deps{JS: js, Node: c.node, Prompts: ps, HTTPAddr: o.HTTPAddr, Store: st, Metrics: c.metrics, Log: c.log}, cfg); err != nil {
		return nil, err
	}
	if err := c.Coordinator.Listen(); err != nil {
		return nil, err
	}
	c.goRun("coordinator", c.Coordinator.Run)

	ljs, err := c.connect("learner")
	if err != nil {
		return nil, err
	}
	started := time.Now()
	c.learnerDeps = learner.Deps{JS: ljs, Backend: c.backend, Store: st, Init: init,
		Codebook: c.cb, RunState: c.runState, Metrics: c.metrics, Update: o.Update, Log: c.log,
		OnStep: func(r learner.StepRecord) {
			elapsed := time.Since(started)
			done := r.Step + 1
			eta := time.Duration(float64(elapsed) / float64(done) * float64(int64(cfg.Steps)-done))
			if b := cfg.TimeBudget.D(); b > 0 {
				eta = max(min(eta, b-elapsed), 0)
			}
			fmt.Fprintf(o.Progress, "step %d/%d  reward %.3f  loss %+.4f  kl %.4f  ratio %.4f  zero-std %.2f  %5.1fs  %s elapsed, ETA %s\n",
				done, cfg.Steps, r.Stats.RewardMean, r.Stats.Loss, r.Stats.KL, r.Stats.RatioMean, r.Stats.ZeroStdRatio,
				r.StepSeconds, elapsed.Round(time.Second), eta.Round(time.Second))
			if o.OnStep != nil {
				o.OnStep(r)
			}
		}}
	if c.Learner, err = learner.New(ctx, c.learnerDeps, cfg); err != nil {
		return nil, err
	}
	c.runLearner()
	for range o.RolloutWorkers {
		if _, err := c.AddRolloutWorker(); err != nil {
			return nil, err
		}
	}
	for range o.RewardWorkers {
		if _, err := c.AddRewardWorker(); err != nil {
			return nil, err
		}
	}
	bound := fmt.Sprintf("%d steps", cfg.Steps)
	if b := cfg.TimeBudget.D(); b > 0 {
		bound += fmt.Sprintf(" (at most %v)", b)
	}
	fmt.Fprintf(o.Progress, "run %s: %s of %d prompts x %d samples, %d rollout and %d reward workers, status http://%s/v1/status\n",
		cfg.RunID, bound, cfg.PromptsPerStep, cfg.GroupSize, o.RolloutWorkers, o.RewardWorkers, c.Coordinator.Addr())
	return c, nil
}

func (c *Cluster) connect(name string) (jetstream.JetStream, error) {
	nc, js, err := bus.Connect(c.ctx, c.nats.URL(), bus.ConnectOptions{Name: name})
	if err != nil {
		return nil, fmt.Errorf("laptop: %w", err)
	}
	c.mu.Lock()
	c.conns = append(c.conns, nc)
	c.mu.Unlock()
	return js, nil
}

func (c *Cluster) goRun(name string, f func(context.Context) error) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := f(c.ctx); err != nil {
			c.log.Error().Err(err).Str("role", name).Msg("role failed")
			c.mu.Lock()
			c.errs = append(c.errs, fmt.Errorf("%s: %w", name, err))
			c.mu.Unlock()
			c.cancel()
		}
	}()
}

func (c *Cluster) runState() ([]byte, error) {
	var b bytesBuffer
	if err := runstate.EncodeSnapshot(&b, c.node.State()); err != nil {
		return nil, err
	}
	return b.data, nil
}

type bytesBuffer struct{ data []byte }

func (b *bytesBuffer) Write(p []byte) (int, error) { b.data = append(b.data, p...); return len(p), nil }

// runLearner runs c.Learner until the run ends or RestartLearner stops it; only the learner that
// ends the run reports to Wait.
func (c *Cluster) runLearner() {
	lctx, cancel := context.WithCancel(c.ctx)
	done := make(chan struct{})
	c.mu.Lock()
	c.learnCancel, c.learnDone = cancel, done
	l := c.Learner
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(done)
		err := l.Run(lctx)
		if lctx.Err() != nil && c.ctx.Err() == nil {
			return // stopped by RestartLearner
		}
		c.learnErr <- err
	}()
}

// RestartLearner stops the learner wherever it is (mid-step included: what it had not
// checkpointed is lost, as when a learner process dies) and starts a new one with the same
// dependencies, which resumes from the newest checkpoint.
func (c *Cluster) RestartLearner(ctx context.Context) error {
	c.mu.Lock()
	cancel, done := c.learnCancel, c.learnDone
	c.mu.Unlock()
	cancel()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	// A learner that had already ended the run left its result for Wait; the new one's
	// replaces it (else the new one could never hand over its own, and Stop would wait for it).
	select {
	case <-c.learnErr:
	default:
	}
	l, err := learner.New(ctx, c.learnerDeps, c.cfg)
	if err != nil {
		return fmt.Errorf("restart learner: %w", err)
	}
	c.mu.Lock()
	c.Learner = l
	c.mu.Unlock()
	c.runLearner()
	return nil
}

// AddRolloutWorker starts one more rollout worker (workers may join at any time).
func (c *Cluster) AddRolloutWorker() (*rolloutworker.Worker, error) {
	c.mu.Lock()
	id := fmt.Sprintf("rollout-%d", len(c.rolloutWorkers))
	c.mu.Unlock()
	js, err := c.connect(id)
	if err != nil {
		return nil, err
	}
	w, err := rolloutworker.New(c.ctx, rolloutworker.Deps{ID: id, JS: js, Backend: c.backend, Store: c.st, Codebook: c.cb, Metrics: c.metrics, Sample: c.o.Sample, Log: c.log}, c.cfg)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.rolloutWorkers = append(c.rolloutWorkers, w)
	c.mu.Unlock()
	c.goRun(id, w.Run)
	return w, nil
}

// AddRewardWorker starts one more reward worker.
func (c *Cluster) AddRewardWorker() (*rewardworker.Worker, error) {
	c.mu.Lock()
	id := fmt.Sprintf("reward-%d", len(c.rewardWorkers))
	c.mu.Unlock()
	js, err := c.connect(id)
	if err != nil {
		return nil, err
	}
	w, err := rewardworker.New(c.ctx, rewardworker.Deps{ID: id, JS: js, Ensemble: c.ens, Codebook: c.cb, Metrics: c.metrics, Log: c.log}, c.cfg)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.rewardWorkers = append(c.rewardWorkers, w)
	c.mu.Unlock()
	c.goRun(id, w.Run)
	return w, nil
}

// JetStream returns a new client connection's JetStream context (tests publish through it).
func (c *Cluster) JetStream() (jetstream.JetStream, error) { return c.connect("client") }

// Config is the run's configuration (run id filled in).
func (c *Cluster) Config() config.Config { return c.cfg }

// Dir is the run's output directory.
func (c *Cluster) Dir() string { return c.dir }

// Wait blocks until the learner has finished every step (nil), a role fails, or ctx ends.
func (c *Cluster) Wait(ctx context.Context) error {
	select {
	case err := <-c.learnErr:
		c.learnErr <- err
		if err != nil {
			return fmt.Errorf("learner: %w", err)
		}
		// The coordinator applies the last step_done shortly after the learner returns.
		select {
		case <-c.Coordinator.Done():
		case <-time.After(30 * time.Second):
			return errors.New("coordinator did not see the run finish")
		case <-ctx.Done():
			return ctx.Err()
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		return errors.Join(c.errs...)
	case <-c.ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.errs) > 0 {
			return errors.Join(c.errs...)
		}
		return c.ctx.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Result collects the run's outcome (call after Wait).
func (c *Cluster) Result() Result {
	r := Result{RunID: c.cfg.RunID, Dir: c.dir, Accounting: c.Learner.Accounting(), Steps: c.Learner.NextStep()}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	r.Status = c.Coordinator.Status(sctx)
	cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.rolloutWorkers {
		r.Rollout = append(r.Rollout, w.Stats())
	}
	for _, w := range c.rewardWorkers {
		r.Scored = append(r.Scored, w.Scored())
	}
	return r
}

// Stop shuts every role down and releases the server, raft node and connections.
func (c *Cluster) Stop() {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
	c.mu.Lock()
	for _, nc := range c.conns {
		nc.Close()
	}
	c.conns = nil
	c.mu.Unlock()
	if c.node != nil {
		if err := c.node.Shutdown(); err != nil {
			c.log.Warn().Err(err).Msg("raft shutdown")
		}
		c.node = nil
	}
	if c.nats != nil {
		c.nats.Shutdown()
		c.nats = nil
	}
}

// Run runs a whole laptop run: start, wait for the last step, stop, evaluate.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	c, err := Start(ctx, o)
	if err != nil {
		return Result{}, err
	}
	werr := c.Wait(ctx)
	res := c.Result()
	c.Stop()
	if werr != nil {
		return res, werr
	}
	cfg := c.cfg
	if res.Steps < int64(cfg.Steps) {
		fmt.Fprintf(o.Progress, "the time budget of %v ended the run after %d of %d steps\n", cfg.TimeBudget.D(), res.Steps, cfg.Steps)
	}
	if !o.SkipEval && cfg.Eval.LimitPerType > 0 {
		ps, err := prompts.ReadFile(cfg.Eval.Prompts)
		if err != nil {
			return res, fmt.Errorf("eval: %w", err)
		}
		fmt.Fprintf(o.Progress, "evaluating the initial and final policy (%d prompts per task type, G=%d)...\n", cfg.Eval.LimitPerType, cfg.Eval.G)
		eo := evaluate.Options{LimitPerType: cfg.Eval.LimitPerType, G: cfg.Eval.G, Seed: cfg.Seed, Temperature: cfg.Sampling.Temperature,
			CFGWeight: cfg.Sampling.CFGWeight, NoPlan: cfg.Sampling.MaxPlanTokens == 0, ExclusiveCells: cfg.Sampling.ExclusiveCells}
		// The trainer's frozen reference is the policy the run started from. The two
		// evaluations share nothing but the read-only codebook, so they run side by side.
		var initial, ev evaluate.Result
		var ierr, ferr error
		var ewg sync.WaitGroup
		ewg.Add(2)
		go func() {
			defer ewg.Done()
			initial, ierr = evaluate.Run(c.Learner.Trainer().Reference(), c.cb, ps, eo)
		}()
		go func() {
			defer ewg.Done()
			ev, ferr = evaluate.Run(c.Learner.Trainer().Policy(), c.cb, ps, eo)
		}()
		ewg.Wait()
		if err := errors.Join(ierr, ferr); err != nil {
			return res, err
		}
		res.Eval, res.InitialEval = &ev, &initial
		if b, err := json.MarshalIndent(map[string]evaluate.Result{"initial": initial, "final": ev}, "", "  "); err == nil {
			// Through the store, next to the metrics, where the dashboard and the report read
			// it (the run's directory when the store is the output directory, the default).
			b = append(b, '\n')
			if err := c.st.Put(ctx, runfiles.EvalKey(c.cfg.RunID), bytes.NewReader(b), int64(len(b))); err != nil {
				c.log.Warn().Err(err).Msg("eval.json not written")
			}
		}
		PrintEval(o.Progress, &initial, ev)
	}
	fmt.Fprintf(o.Progress, "run %s written to %s\n", res.RunID, res.Dir)
	return res, nil
}

// Compile-time check that the ensemble type fits.
var _ rewardworker.Scorer = (*reward.Ensemble)(nil)
