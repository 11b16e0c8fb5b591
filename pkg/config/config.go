// Package config is the configuration of a training run, shared by every role (coordinator,
// rollout and reward workers, learner) and by laptop mode: a YAML file, overridden by flags, then
// validated as a whole so that a bad value fails at start-up with a message naming the field.
//
// Every process of a run should read the same file; the coordinator also records it in the
// replicated run state (InitRun), so the run's settings survive with it.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// Sampling are the rollout's sampling settings (bus.SamplingParams on the wire).
type Sampling struct {
	Temperature float64 `yaml:"temperature" json:"temperature"`
	// CFGWeight is the classifier-free guidance weight on image tokens; 0 turns guidance off.
	CFGWeight float64 `yaml:"cfg_weight" json:"cfg_weight"`
	// MaxPlanTokens bounds the semantic-level CoT (plan words); 0 samples no plan (the token-only
	// ablation).
	MaxPlanTokens int `yaml:"max_plan_tokens" json:"max_plan_tokens"`
	// AttachPNG makes rollout workers attach the decoded image to each sample.
	AttachPNG bool `yaml:"attach_png" json:"attach_png"`
	// ImageLogp is the distribution image tokens are trained under (and their logp_old recorded
	// under): "conditional" (default, as T2I-R1's code trains) or "guided" (the CFG mixture they
	// are drawn from). docs/learner.md has the measurements behind the default.
	ImageLogp string `yaml:"image_logp" json:"image_logp"`
	// ExclusiveCells draws a plan's cell words without naming a cell twice (two objects in one
	// cell make a plan that does not parse; model.SampleRequest.ExclusiveCells), and the learner
	// scores plan words under the same mask. Off by default; docs/learner.md, "Plans that put two
	// objects in one cell".
	ExclusiveCells bool `yaml:"exclusive_cells" json:"exclusive_cells"`
}

// Wire tunes the JetStream consumers of the run's pools.
type Wire struct {
	// AckWait: an unacked message comes back after this (long handlers send InProgress).
	AckWait Duration `yaml:"ack_wait" json:"ack_wait"`
	// MaxDeliver attempts before a message becomes a dead letter.
	MaxDeliver int `yaml:"max_deliver" json:"max_deliver"`
	// RolloutFetchers, RewardFetchers: messages one worker process handles at once.
	RolloutFetchers int `yaml:"rollout_fetchers" json:"rollout_fetchers"`
	RewardFetchers  int `yaml:"reward_fetchers" json:"reward_fetchers"`
	// Heartbeat: how often workers report to the coordinator.
	Heartbeat Duration `yaml:"heartbeat" json:"heartbeat"`
	// RetryDelay before a failed message is redelivered, doubled on each further delivery up to
	// AckWait.
	RetryDelay Duration `yaml:"retry_delay" json:"retry_delay"`
	// PollWait bounds one pull of a pool's consumer; an idle pull simply starts the next one.
	PollWait Duration `yaml:"poll_wait" json:"poll_wait"`
	// PolicyWait bounds how long a rollout worker waits for a task's policy version to be
	// announced before it hands the task back.
	PolicyWait Duration `yaml:"policy_wait" json:"policy_wait"`
	// DispatchTick is how often the coordinator checks what to dispatch and re-dispatch.
	DispatchTick Duration `yaml:"dispatch_tick" json:"dispatch_tick"`
	// ExpertOutageWait is how long a reward worker keeps retrying a sample whose remote expert
	// is unavailable (5xx, 429, unreachable) before handing it back: an outage shorter than this
	// costs its duration, not a dead letter and a re-dispatch.
	ExpertOutageWait Duration `yaml:"expert_outage_wait" json:"expert_outage_wait"`
	// RewardBatchWait, when > 0, lets a reward worker gather the samples its fetchers hold
	// (up to reward_fetchers) for this long into one ensemble call: remote experts get one
	// request per batch and built-in models one batched forward pass. 0 scores each sample on
	// its own, which keeps rewards bit-identical across runs whatever the timing (a batched
	// forward pass may round differently from a single one).
	RewardBatchWait Duration `yaml:"reward_batch_wait" json:"reward_batch_wait"`
	// ConnectWait: how long a process keeps trying its first NATS connection while no server
	// answers (started while NATS restarts); 0 tries once.
	ConnectWait Duration `yaml:"connect_wait" json:"connect_wait"`
}

// Retention keeps the newest KeepLast checkpoints and the KeepBest best by Metric (a manifest
// metric the learner records: reward_mean, kl); the rest are deleted after each checkpoint.
// KeepLast 0 keeps every checkpoint. KeepWeights is how many policy versions' weights stay in
// <run>/weights/ for rollout workers (the newest; at least staleness + 2, so every version a task
// may name is there); 0 keeps them all. Checkpoints hold their own copy of the weights.
type Retention struct {
	KeepWeights   int    `yaml:"keep_weights" json:"keep_weights"`
	KeepLast      int    `yaml:"keep_last" json:"keep_last"`
	KeepBest      int    `yaml:"keep_best" json:"keep_best"`
	Metric        string `yaml:"metric" json:"metric"`
	LowerIsBetter bool   `yaml:"lower_is_better" json:"lower_is_better"`
}

// Eval is the oracle evaluation laptop mode runs on the final policy.
type Eval struct {
	// Prompts is the evaluation prompt file; its prompts need a spec (the oracle's input).
	Prompts string `yaml:"prompts" json:"prompts"`
	// LimitPerType evaluates the first N prompts of each task type; 0 skips the evaluation.
	LimitPerType int `yaml:"limit_per_type" json:"limit_per_type"`
	// G samples per prompt.
	G int `yaml:"g" json:"g"`
}

// Config is one run.
type Config struct {
	// RunID names the run in subjects, streams and store keys (1-64 of [A-Za-z0-9_-]). Laptop mode
	// makes one up when empty; separate processes must all be given the same one.
	RunID string `yaml:"run_id" json:"run_id"`
	// Seed drives the prompt order and every sample's random stream.
	Seed uint64 `yaml:"seed" json:"seed"`
	// Prompts is the training prompt file in the reference JSONL format.
	Prompts string `yaml:"prompts" json:"prompts"`
	// PromptRepeats puts every prompt of a task type this many times into the pool the run hands
	// out (0 leaves the type out; a type it does not name stays once), so a run can spend its steps
	// on the types its policy can learn without a prompt file of its own. The copies follow the
	// file in rounds, as if it went on with those types' prompts again (prompts.ReadPool). A key
	// may name a form of a type's prompts ("knowledge/count": attribute, count or relation,
	// prompts.Form), which then decides for those prompts instead of the type's key.
	PromptRepeats map[string]int `yaml:"prompt_repeats,omitempty" json:"prompt_repeats,omitempty"`
	// PretrainPrompts are the prompts the base policy was pretrained on (data/prompts/train.jsonl
	// for the shipped base). The supervised anchor (grpo.sft_coef > 0) draws its examples from
	// them: scenes with no held-out combination, their plans and images.
	PretrainPrompts string `yaml:"pretrain_prompts" json:"pretrain_prompts"`
	// AnchorTypeRepeats puts the pretraining prompts of a task type this many times into the
	// pool the supervised anchor draws its examples from (a type it does not name stays once),
	// so the anchor can teach what the base saw too rarely - the relation types - while RL
	// trains (pretrain.Mix.TypeRepeats; docs/learner.md, "Teaching the relations in the anchor").
	AnchorTypeRepeats map[string]int `yaml:"anchor_type_repeats,omitempty" json:"anchor_type_repeats,omitempty"`
	// PromptsPerStep (P) prompts are learned per step, each with GroupSize (G) samples.
	PromptsPerStep int `yaml:"prompts_per_step" json:"prompts_per_step"`
	GroupSize      int `yaml:"group_size" json:"group_size"`
	// PromptsPerTask is how many prompts one BatchTask carries (the unit of rollout work).
	PromptsPerTask int `yaml:"prompts_per_task" json:"prompts_per_task"`
	// Steps to train; the run ends when the learner has finished this many.
	Steps int `yaml:"steps" json:"steps"`
	// TimeBudget, when set, also bounds the run by wall-clock time: the learner ends it with the
	// step after which one more step (as long as the last one) would pass the budget, counted
	// from the learner's start over every start of a resumed run. 0 leaves the run to Steps.
	TimeBudget Duration `yaml:"time_budget" json:"time_budget"`
	Sampling   Sampling `yaml:"sampling" json:"sampling"`
	// GRPO is the learner's BiCoT-GRPO hyper-parameters (grpo.go); a file's grpo section is
	// decoded over DefaultGRPO, so it names only what it changes.
	GRPO GRPO `yaml:"grpo" json:"grpo"`
	// Staleness k: step s may be sampled with a policy up to k versions behind; 0 is strictly
	// on-policy (step s waits for version s).
	Staleness int `yaml:"staleness" json:"staleness"`
	// CheckpointEvery N steps the learner writes a checkpoint (0: only at the end).
	CheckpointEvery int `yaml:"checkpoint_every" json:"checkpoint_every"`
	// SamplesEvery N steps (steps 0, N, 2N, ... and always the last) the learner keeps the step's
	// samples under <run>/samples/: their images, plans, rewards and advantages, for the dashboard
	// and the report. 0 keeps only the last step's.
	SamplesEvery int `yaml:"samples_every" json:"samples_every"`
	// Retention says which committed checkpoints the learner keeps after each new one.
	Retention Retention `yaml:"retention" json:"retention"`
	// MaxResampleRounds bounds how often a step left with fewer than P informative groups by
	// grpo.filter_zero_std asks for fresh prompts (DAPO's dynamic sampling); after that it trains
	// on the informative groups it has, and with none the learner gives up on the run.
	MaxResampleRounds int `yaml:"max_resample_rounds" json:"max_resample_rounds"`
	// Store is where checkpoints, weights and run artifacts go: a local directory (laptop mode's
	// default is the output directory) or s3://bucket/prefix?endpoint=...
	Store string `yaml:"store" json:"store"`
	// PolicyInit is the checkpoint the run starts from (version 0).
	PolicyInit string `yaml:"policy_init" json:"policy_init"`
	// Codebook decodes image tokens to pixels.
	Codebook string `yaml:"codebook" json:"codebook"`
	// Experts is the directory of the built-in expert weights; ExpertURLs, when set, names a
	// remote expert server per expert (detector, vqa, hps, orm) instead.
	Experts    string            `yaml:"experts" json:"experts"`
	ExpertURLs map[string]string `yaml:"expert_urls" json:"expert_urls,omitempty"`
	// ExpertConfig, when set, is a pkg/experts YAML file choosing built-in or remote backends,
	// weights and timeouts per expert (docs/experts.md); it takes precedence over the two above.
	ExpertConfig string `yaml:"expert_config" json:"expert_config,omitempty"`
	// RedispatchAfter: a group not scored this long after its dispatch is handed out again.
	RedispatchAfter Duration `yaml:"redispatch_after" json:"redispatch_after"`
	Wire            Wire     `yaml:"wire" json:"wire"`
	Eval            Eval     `yaml:"eval" json:"eval"`
	// Backend is the gomlx backend configuration ("" = pure Go, see pkg/mlx).
	Backend string `yaml:"backend" json:"backend"`
	// MetricsAddr is where a role's process serves Prometheus /metrics (rollout and reward workers,
	// the learner; the coordinator serves them on its status API). Port 0 picks a free port (logged);
	// "" serves none. Loopback by default: scraping from elsewhere means binding a real address.
	MetricsAddr string `yaml:"metrics_addr" json:"metrics_addr"`
}

// Duration is a time.Duration written as "30s" in YAML.
type Duration time.Duration

// D returns the duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML reads "90s", "5m" or a number of seconds.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: duration: %w", n.Line, err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		var secs float64
		if _, e2 := fmt.Sscan(s, &secs); e2 != nil {
			return fmt.Errorf("line %d: duration %q: want e.g. 30s or 5m", n.Line, s)
		}
		v = time.Duration(secs * float64(time.Second))
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// String implements pflag.Value.
func (d *Duration) String() string { return time.Duration(*d).String() }

// Set implements pflag.Value.
func (d *Duration) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Type implements pflag.Value.
func (d *Duration) Type() string { return "duration" }

// Default is the reference-shaped run: P prompts of G = 8 samples, strictly on-policy.
func Default() Config {
	return Config{
		Seed:              1,
		Prompts:           "data/prompts/train.jsonl",
		PretrainPrompts:   "data/prompts/train.jsonl",
		PromptsPerStep:    8,
		GroupSize:         8,
		PromptsPerTask:    2,
		Steps:             100,
		Sampling:          Sampling{Temperature: 1, CFGWeight: 3, MaxPlanTokens: 24, ImageLogp: ImageLogpConditional},
		GRPO:              DefaultGRPO(),
		CheckpointEvery:   10,
		SamplesEvery:      10,
		Retention:         Retention{KeepLast: 5, KeepBest: 1, Metric: "reward_mean", KeepWeights: 4},
		MaxResampleRounds: 8,
		PolicyInit:        "models/base.safetensors",
		Codebook:          "models/codebook.vq",
		Experts:           "models/experts",
		RedispatchAfter:   Duration(10 * time.Minute),
		Wire: Wire{AckWait: Duration(60 * time.Second), MaxDeliver: 5, RolloutFetchers: 1, RewardFetchers: 2,
			Heartbeat: Duration(5 * time.Second), RetryDelay: Duration(time.Second), PollWait: Duration(30 * time.Second),
			PolicyWait: Duration(10 * time.Minute), DispatchTick: Duration(200 * time.Millisecond),
			ExpertOutageWait: Duration(5 * time.Minute), ConnectWait: Duration(2 * time.Minute)},
		Eval:        Eval{Prompts: "data/prompts/eval.jsonl", LimitPerType: 4, G: 2},
		MetricsAddr: "127.0.0.1:0",
	}
}

// Load reads a YAML file over the defaults. Unknown keys are errors (a typo must not silently
// keep a default).
func Load(path string) (Config, error) {
	c := Default()
	if path == "" {
		return c, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("run config: %w", err)
	}
	if err := Parse(b, &c); err != nil {
		return Config{}, fmt.Errorf("run config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes YAML onto c (fields absent from the YAML keep their value).
func Parse(b []byte, c *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	return nil
}

// Flags registers the overridable settings on fs, writing into c. Call after Load, then parse.
func (c *Config) Flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.RunID, "run-id", c.RunID, "run id")
	fs.Uint64Var(&c.Seed, "seed", c.Seed, "run seed")
	fs.StringVar(&c.Prompts, "prompts", c.Prompts, "training prompt file (JSONL)")
	fs.StringVar(&c.PretrainPrompts, "pretrain-prompts", c.PretrainPrompts, "the base policy's pretraining prompt file (JSONL): the supervised anchor's examples (grpo.sft_coef)")
	fs.IntVar(&c.PromptsPerStep, "prompts-per-step", c.PromptsPerStep, "prompts learned per step (P)")
	fs.IntVar(&c.GroupSize, "group-size", c.GroupSize, "samples per prompt (G)")
	fs.IntVar(&c.PromptsPerTask, "prompts-per-task", c.PromptsPerTask, "prompts per rollout task")
	fs.IntVar(&c.Steps, "steps", c.Steps, "training steps")
	fs.Var(&c.TimeBudget, "time-budget", "end the run with the last step that fits in this much time (0: --steps alone)")
	fs.IntVar(&c.Staleness, "staleness", c.Staleness, "policy versions a sample may lag (0: on-policy)")
	fs.IntVar(&c.CheckpointEvery, "checkpoint-every", c.CheckpointEvery, "checkpoint every N steps")
	fs.IntVar(&c.SamplesEvery, "samples-every", c.SamplesEvery, "keep the samples (images, plans, rewards) of every N-th step and the last (0: the last only)")
	fs.IntVar(&c.Retention.KeepLast, "keep-last", c.Retention.KeepLast, "checkpoints kept, newest first (0: all)")
	fs.IntVar(&c.Retention.KeepBest, "keep-best", c.Retention.KeepBest, "checkpoints kept besides, best by retention.metric")
	fs.StringVar(&c.Store, "store", c.Store, "store: local directory or s3://bucket/prefix")
	fs.StringVar(&c.PolicyInit, "policy-init", c.PolicyInit, "initial policy checkpoint")
	fs.StringVar(&c.Codebook, "codebook", c.Codebook, "VQ codebook file")
	fs.StringVar(&c.Experts, "experts", c.Experts, "built-in expert weights directory")
	fs.StringVar(&c.ExpertConfig, "expert-config", c.ExpertConfig, "expert ensemble YAML (built-in or remote per expert)")
	fs.StringVar(&c.Backend, "backend", c.Backend, "gomlx backend configuration")
	fs.Var(&c.RedispatchAfter, "redispatch-after", "re-dispatch groups not scored after this long")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", c.MetricsAddr, "serve Prometheus /metrics of this process here (port 0: any free port; empty: none)")
}

// Validate reports every problem of the configuration at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.RunID != "" {
		if err := ValidateRunID(c.RunID); err != nil {
			bad("run_id: %v", err)
		}
	}
	if strings.TrimSpace(c.Prompts) == "" {
		bad("prompts: empty path")
	}
	// Task type names are checked where the prompts are read (prompts.ReadPool): the run config
	// is a leaf of the module.
	// A prompt pool may leave a type out; the anchor's pool keeps every type at least once.
	for _, r := range []struct {
		field string
		m     map[string]int
		min   int
	}{{"prompt_repeats", c.PromptRepeats, 0}, {"anchor_type_repeats", c.AnchorTypeRepeats, 1}} {
		for _, t := range slices.Sorted(maps.Keys(r.m)) {
			if n := r.m[t]; n < r.min || n > MaxPromptRepeats {
				bad("%s: %s %d, want %d to %d", r.field, t, n, r.min, MaxPromptRepeats)
			}
		}
	}
	if c.PromptsPerStep < 1 {
		bad("prompts_per_step %d: want >= 1", c.PromptsPerStep)
	}
	if c.GroupSize < 2 || c.GroupSize > MaxGroupSize {
		bad("group_size %d: want 2..%d (advantages compare samples within a group)", c.GroupSize, MaxGroupSize)
	}
	if c.PromptsPerTask < 1 || c.PromptsPerTask > MaxPromptsPerTask {
		bad("prompts_per_task %d: want 1..%d", c.PromptsPerTask, MaxPromptsPerTask)
	}
	if c.Steps < 1 {
		bad("steps %d: want >= 1", c.Steps)
	}
	if c.TimeBudget < 0 {
		bad("time_budget %v: want >= 0 (0: steps alone bound the run)", c.TimeBudget.D())
	}
	s := c.Sampling
	if !(s.Temperature > 0) || math.IsInf(s.Temperature, 0) {
		bad("sampling.temperature %v: want a finite value > 0", s.Temperature)
	}
	if !(s.CFGWeight >= 0) || math.IsInf(s.CFGWeight, 0) {
		bad("sampling.cfg_weight %v: want a finite value >= 0", s.CFGWeight)
	}
	if s.MaxPlanTokens < 0 {
		bad("sampling.max_plan_tokens %d: want >= 0", s.MaxPlanTokens)
	}
	if !ValidImageLogp(s.ImageLogp) {
		bad("sampling.image_logp %q: want %q or %q", s.ImageLogp, ImageLogpConditional, ImageLogpGuided)
	}
	if c.Staleness < 0 {
		bad("staleness %d: want >= 0", c.Staleness)
	}
	if c.CheckpointEvery < 0 {
		bad("checkpoint_every %d: want >= 0", c.CheckpointEvery)
	}
	if c.SamplesEvery < 0 {
		bad("samples_every %d: want >= 0", c.SamplesEvery)
	}
	if r := c.Retention; r.KeepLast < 0 || r.KeepBest < 0 || (r.KeepBest > 0 && r.Metric == "") {
		bad("retention: keep_last %d, keep_best %d, metric %q: want counts >= 0 and a metric when keep_best > 0", r.KeepLast, r.KeepBest, r.Metric)
	}
	if k := c.Retention.KeepWeights; k < 0 || (k > 0 && k < c.Staleness+2) {
		bad("retention.keep_weights %d: want 0 (all) or at least staleness + 2 = %d", k, c.Staleness+2)
	}
	if c.MaxResampleRounds < 0 {
		bad("max_resample_rounds %d: want >= 0", c.MaxResampleRounds)
	}
	if c.PolicyInit == "" {
		bad("policy_init: empty path")
	}
	if c.Codebook == "" {
		bad("codebook: empty path")
	}
	if c.Experts == "" && len(c.ExpertURLs) == 0 && c.ExpertConfig == "" {
		bad("experts: empty directory and no expert_urls")
	}
	for name, u := range c.ExpertURLs {
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			bad("expert_urls.%s %q: want an http(s) URL", name, RedactURL(u))
		}
	}
	if c.RedispatchAfter.D() <= 0 {
		bad("redispatch_after %v: want > 0", c.RedispatchAfter.D())
	}
	w := c.Wire
	if w.AckWait.D() < 100*time.Millisecond {
		bad("wire.ack_wait %v: want >= 100ms", w.AckWait.D())
	}
	if w.MaxDeliver < 1 {
		bad("wire.max_deliver %d: want >= 1", w.MaxDeliver)
	}
	if w.RolloutFetchers < 1 || w.RewardFetchers < 1 {
		bad("wire.rollout_fetchers %d, wire.reward_fetchers %d: want >= 1", w.RolloutFetchers, w.RewardFetchers)
	}
	if w.Heartbeat.D() <= 0 {
		bad("wire.heartbeat %v: want > 0", w.Heartbeat.D())
	}
	if w.RetryDelay.D() <= 0 {
		bad("wire.retry_delay %v: want > 0", w.RetryDelay.D())
	}
	if w.PollWait.D() < 100*time.Millisecond {
		bad("wire.poll_wait %v: want >= 100ms", w.PollWait.D())
	}
	if w.PolicyWait.D() <= 0 {
		bad("wire.policy_wait %v: want > 0", w.PolicyWait.D())
	}
	if w.DispatchTick.D() <= 0 {
		bad("wire.dispatch_tick %v: want > 0", w.DispatchTick.D())
	}
	if w.RewardBatchWait.D() < 0 || w.RewardBatchWait.D() > time.Second {
		bad("wire.reward_batch_wait %v: want 0 (off) to 1s", w.RewardBatchWait.D())
	}
	if w.ConnectWait.D() < 0 {
		bad("wire.connect_wait %v: want >= 0", w.ConnectWait.D())
	}
	if w.ExpertOutageWait.D() < 0 {
		bad("wire.expert_outage_wait %v: want >= 0", w.ExpertOutageWait.D())
	}
	if c.Eval.LimitPerType < 0 {
		bad("eval.limit_per_type %d: want >= 0", c.Eval.LimitPerType)
	}
	if c.Eval.LimitPerType > 0 && (c.Eval.G < 1 || c.Eval.Prompts == "") {
		bad("eval: g %d and prompts %q: want g >= 1 and a prompt file", c.Eval.G, c.Eval.Prompts)
	}
	if err := c.GRPO.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("run config: %w", err)
	}
	return nil
}

// TasksPerStep is the number of BatchTasks one step is split into.
func (c Config) TasksPerStep() int {
	return (c.PromptsPerStep + c.PromptsPerTask - 1) / c.PromptsPerTask
}

// YAML returns the configuration as YAML (what a run records next to its outputs).
func (c Config) YAML() ([]byte, error) { return yaml.Marshal(c) }

var runIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidateRunID reports whether id can name a run: 1-64 of [A-Za-z0-9_-], since it appears in
// subject tokens and stream names (which forbid '.', '*', '>' and spaces).
func ValidateRunID(id string) error {
	if !runIDPattern.MatchString(id) {
		return fmt.Errorf("run id %q: want 1-64 characters of [A-Za-z0-9_-]", id)
	}
	return nil
}

// The distributions image-token log-probs can be recorded and trained under.
const (
	ImageLogpGuided      = "guided"
	ImageLogpConditional = "conditional"
)

// ValidImageLogp reports whether s names an image log-prob distribution ("" means guided).
func ValidImageLogp(s string) bool {
	return s == "" || s == ImageLogpGuided || s == ImageLogpConditional
}

// Overlay copies the flags of Config.Flags that were set on fs onto cfg, so a file's values hold
// unless a flag names them.
func Overlay(fs *pflag.FlagSet, cfg *Config) error {
	scratch := pflag.NewFlagSet("config", pflag.ContinueOnError)
	tmp := *cfg
	tmp.Flags(scratch)
	var err error
	fs.Visit(func(fl *pflag.Flag) {
		if err != nil {
			return
		}
		if sf := scratch.Lookup(fl.Name); sf != nil {
			if e := sf.Value.Set(fl.Value.String()); e != nil {
				err = fmt.Errorf("flag --%s: %w", fl.Name, e)
			}
		}
	})
	if err != nil {
		return err
	}
	*cfg = tmp
	return nil
}

// Redacted is c as a run records and serves it (config.yaml, checkpoints, the replicated run
// state, the status API): the user information of expert URLs (basic-auth passwords, tokens) is
// replaced by "redacted". A resumed run gets the credentials from its config again.
func (c Config) Redacted() Config {
	if len(c.ExpertURLs) == 0 {
		return c
	}
	urls := make(map[string]string, len(c.ExpertURLs))
	for k, u := range c.ExpertURLs {
		urls[k] = RedactURL(u)
	}
	c.ExpertURLs = urls
	return c
}

// RedactURL replaces the user information of a URL (user:password@ or token@) by "redacted@".
func RedactURL(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	host := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		host = rest[:i]
	}
	at := strings.LastIndex(host, "@")
	if at < 0 {
		return u
	}
	return scheme + "://redacted@" + rest[at+1:]
}

// Bounds every message of a run is checked against, so a task or sample naming absurd sizes is
// refused before anyone allocates for it.
const (
	MaxGroupSize      = 1024 // G
	MaxPromptsPerTask = 1024 // prompts in one rollout task
)

// MaxPromptRepeats bounds Config.PromptRepeats: past it one type is the whole pool.
const MaxPromptRepeats = 100
