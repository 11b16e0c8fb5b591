package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/learner"
	"github.com/bicot-rl/bicot/pkg/local"
	"github.com/bicot-rl/bicot/pkg/mlx"
)

// SimOptions shape a run with simulated compute.
type SimOptions struct {
	// Root is the repository (RepoRoot): the shipped policy, codebook and prompts.
	Root string
	// Out holds the run (a temporary directory).
	Out string
	// RolloutWorkers and RewardWorkers are started as separate workers, each with its own NATS
	// connection, as separate processes would be.
	RolloutWorkers, RewardWorkers int
	// PromptsPerStep (P) prompts of GroupSize samples, one prompt per rollout task.
	PromptsPerStep, GroupSize int
	// Warmup steps are run but not measured; Steps are measured after them, and one more ends the
	// run unmeasured.
	Warmup, Steps int
	Staleness     int
	Compute       Compute
}

// SimResult is what a run with simulated compute measured over its measured steps.
type SimResult struct {
	Steps   int
	Samples int
	Wall    time.Duration
	// SamplesPerSecond is the learned samples per second of wall time.
	SamplesPerSecond float64
	// LearnerBusy is the fraction of the wall time the learner spent in its update.
	LearnerBusy float64
	// LearnerWait is the mean time per step the learner waited for its groups.
	LearnerWait time.Duration
	// Records are the measured steps' records.
	Records []learner.StepRecord
	// CoresBusy is the process's CPU time (every role, the NATS server, the store) per second of
	// the measured wall time: on a machine of n cores, n means the measurement was CPU-bound.
	CoresBusy float64
	// CPUPerSample is that CPU time per learned sample.
	CPUPerSample time.Duration
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Config is the run configuration of o: the laptop defaults with the shipped files, one prompt per
// task, checkpoints every 10 steps, no evaluation.
func (o SimOptions) Config() config.Config {
	cfg := config.Default()
	cfg.RunID = fmt.Sprintf("bench-%d", time.Now().UnixNano())
	cfg.Prompts = filepath.Join(o.Root, "data/prompts/rl.jsonl")
	cfg.PretrainPrompts = filepath.Join(o.Root, "data/prompts/train.jsonl")
	cfg.PolicyInit = filepath.Join(o.Root, "models/base.safetensors")
	cfg.Codebook = filepath.Join(o.Root, "models/codebook.vq")
	cfg.Experts = filepath.Join(o.Root, "models/experts")
	cfg.Eval.Prompts = filepath.Join(o.Root, "data/prompts/eval.jsonl")
	cfg.PromptsPerStep, cfg.GroupSize, cfg.PromptsPerTask = o.PromptsPerStep, o.GroupSize, 1
	cfg.Steps = o.Warmup + o.Steps + 1 // the last step also keeps its samples (runfiles): not measured
	cfg.Staleness = o.Staleness
	cfg.SamplesEvery = 0
	cfg.MetricsAddr = ""
	cfg.Wire.Heartbeat = config.Duration(2 * time.Second)
	return cfg
}

// RunSimulated runs a whole laptop-mode run (embedded NATS, a raft coordinator, the local store,
// the learner and the workers, all real) whose model compute is o.Compute's sleeps, and measures
// the steps after the warm-up.
func RunSimulated(ctx context.Context, o SimOptions) (SimResult, error) {
	if o.Warmup < 1 || o.Steps < 1 {
		return SimResult{}, fmt.Errorf("simulated run: %d warm-up and %d measured steps, want >= 1 each", o.Warmup, o.Steps)
	}
	backend, err := mlx.NewBackend("")
	if err != nil {
		return SimResult{}, err
	}
	defer backend.Finalize()
	var (
		mu      sync.Mutex
		records []learner.StepRecord
		ends    []time.Time
		cpu     []time.Duration
	)
	cfg := o.Config()
	c, err := local.Start(ctx, local.Options{Config: cfg, RolloutWorkers: o.RolloutWorkers, RewardWorkers: o.RewardWorkers,
		Out: o.Out, Backend: backend, Ensemble: Scorer{Compute: o.Compute}, Sample: o.Compute.Sampler(), Update: o.Compute.Update,
		SkipEval: true, Log: zerolog.Nop(),
		OnStep: func(r learner.StepRecord) {
			mu.Lock()
			records = append(records, r)
			ends, cpu = append(ends, time.Now()), append(cpu, cpuTime())
			mu.Unlock()
		}})
	if err != nil {
		return SimResult{}, fmt.Errorf("simulated run: %w", err)
	}
	werr := c.Wait(ctx)
	c.Stop()
	_ = os.RemoveAll(c.Dir())
	if werr != nil {
		return SimResult{}, fmt.Errorf("simulated run: %w", werr)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(records) != cfg.Steps {
		return SimResult{}, fmt.Errorf("simulated run: %d steps recorded, want %d", len(records), cfg.Steps)
	}
	r := SimResult{Steps: o.Steps, Wall: ends[o.Warmup+o.Steps-1].Sub(ends[o.Warmup-1])}
	var train, wait float64
	for _, rec := range records[o.Warmup : o.Warmup+o.Steps] {
		r.Samples += rec.Samples
		train += rec.TrainSeconds
		wait += rec.WaitSeconds
	}
	r.Records = records[o.Warmup : o.Warmup+o.Steps]
	used := cpu[o.Warmup+o.Steps-1] - cpu[o.Warmup-1]
	r.CoresBusy = used.Seconds() / r.Wall.Seconds()
	r.CPUPerSample = used / time.Duration(max(1, r.Samples))
	r.SamplesPerSecond = float64(r.Samples) / r.Wall.Seconds()
	r.LearnerBusy = train / r.Wall.Seconds()
	r.LearnerWait = time.Duration(wait / float64(o.Steps) * float64(time.Second))
	return r, nil
}
