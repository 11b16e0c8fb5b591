package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestShippedLaptopConfig(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "configs", "laptop.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.PromptsPerStep != 8 || c.GroupSize != 8 || c.Steps != 360 || c.Staleness != 1 || !c.Sampling.ExclusiveCells || c.Wire.AckWait.D() != time.Minute {
		t.Errorf("laptop config: %+v", c)
	}
	if c.TasksPerStep() != 4 {
		t.Errorf("tasks per step %d, want 4", c.TasksPerStep())
	}
}

// The laptop run is the baseline (configs/ladder/laptop-baseline.yaml, the run every ladder row
// changes one setting of) with exactly the settings docs/learner.md measured on top of it.
func TestLaptopConfigIsTheBaselinePlusItsSettings(t *testing.T) {
	laptop, err := Load(filepath.Join("..", "..", "configs", "laptop.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	base, err := Load(filepath.Join("..", "..", "configs", "ladder", "laptop-baseline.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if base.Staleness != 0 || base.Sampling.ExclusiveCells || base.PromptRepeats != nil || base.Steps != 240 {
		t.Fatalf("baseline config changed: %+v", base)
	}
	base.Sampling.ExclusiveCells = true
	base.PromptRepeats = map[string]int{"spatial": 0, "non": 0, "complex": 0}
	base.Staleness = 1
	base.Steps = 360
	if !reflect.DeepEqual(base, laptop) {
		t.Errorf("configs/laptop.yaml is not the baseline plus its three settings:\nlaptop   %+v\nbaseline %+v", laptop, base)
	}
}

func TestDefaultsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestBadConfigsNameTheField(t *testing.T) {
	cases := map[string]string{
		"group_size: 1\n":                           "group_size 1",
		"prompts_per_step: 0\n":                     "prompts_per_step 0",
		"run_id: \"a b\"\n":                         "run_id",
		"sampling: {temperature: 0}\n":              "sampling.temperature",
		"sampling: {cfg_weight: -1}\n":              "sampling.cfg_weight",
		"staleness: -1\n":                           "staleness -1",
		"redispatch_after: 0s\n":                    "redispatch_after",
		"wire: {ack_wait: 1ms}\n":                   "wire.ack_wait",
		"expert_urls: {detector: ftp://x}\n":        "expert_urls.detector",
		"steps: 0\nprompts_per_task: 0\n":           "prompts_per_task 0",
		"eval: {limit_per_type: 2, g: 0}\n":         "eval: g 0",
		"wire: {rollout_fetchers: 0}\n":             "wire.rollout_fetchers 0",
		"policy_init: \"\"\n":                       "policy_init",
		"experts: \"\"\n":                           "experts: empty",
		"checkpoint_every: -2\n":                    "checkpoint_every -2",
		"samples_every: -1\n":                       "samples_every -1",
		"sampling: {max_plan_tokens: -1}\n":         "sampling.max_plan_tokens",
		"wire: {heartbeat: 0s}\n":                   "wire.heartbeat",
		"wire: {max_deliver: 0}\n":                  "wire.max_deliver",
		"prompts: \"  \"\n":                         "prompts: empty",
		"sampling: {temperature: .nan}\n":           "sampling.temperature",
		"sampling: {cfg_weight: .inf}\n":            "sampling.cfg_weight",
		"group_size: 8\nprompts_per_step: 0":        "prompts_per_step 0",
		"retention: {keep_last: -1}\n":              "retention: keep_last -1",
		"retention: {keep_best: 2, metric: \"\"}\n": "retention: keep_last 5, keep_best 2, metric \"\"",
		"max_resample_rounds: -1\n":                 "max_resample_rounds -1",
		"time_budget: -5m\n":                        "time_budget -5m0s",
	}
	for y, want := range cases {
		c := Default()
		if err := Parse([]byte(y), &c); err != nil {
			t.Errorf("%q: parse: %v", y, err)
			continue
		}
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one naming %q", y, err, want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for y, want := range map[string]string{
		"group_sise: 8\n":           "group_sise",
		"redispatch_after: soon\n":  "duration \"soon\"",
		"steps: many\n":             "line 1: cannot unmarshal",
		"sampling: {temprature: 1}": "temprature",
	} {
		c := Default()
		err := Parse([]byte(y), &c)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one naming %q", y, err, want)
		}
	}
	c := Default()
	if err := Parse(nil, &c); err != nil {
		t.Errorf("empty document: %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestFlagsOverrideFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "run.yaml")
	if err := os.WriteFile(p, []byte("run_id: r1\nsteps: 7\ngroup_size: 4\nredispatch_after: 90\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.RedispatchAfter.D() != 90*time.Second {
		t.Errorf("redispatch_after 90 read as %v", c.RedispatchAfter.D())
	}
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	flagCfg := Default()
	flagCfg.Flags(fs)
	if err := fs.Parse([]string{"--steps", "2", "--redispatch-after", "3s"}); err != nil {
		t.Fatal(err)
	}
	if err := Overlay(fs, &c); err != nil {
		t.Fatal(err)
	}
	if c.Steps != 2 || c.GroupSize != 4 || c.RunID != "r1" || c.RedispatchAfter.D() != 3*time.Second {
		t.Errorf("after overlay: steps %d group %d run %q redispatch %v", c.Steps, c.GroupSize, c.RunID, c.RedispatchAfter.D())
	}
	y, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	var back Config
	if err := Parse(y, &back); err != nil || back.Steps != 2 || back.RedispatchAfter != c.RedispatchAfter {
		t.Errorf("YAML round trip: %v %+v", err, back)
	}
}

func TestShippedClusterConfig(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "configs", "cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.RunID != "cluster-1" || c.Staleness != 1 || c.GRPO.Optimizer.LR != 1e-3 || c.GRPO.SFTCoef != 1 || !c.Effective().GRPO.Loss.Clip {
		t.Errorf("cluster config: %+v", c)
	}
}

// The grpo section is typed: a file names only what it changes, a misspelt key or a bad value is
// an error at load naming the field, and Effective fills in what the trainer will run with.
func TestGRPOSectionTyped(t *testing.T) {
	var c Config
	c = Default()
	if err := Parse([]byte("grpo: {optimizer: {lr: 0.002}, sft_coef: 0.5}\n"), &c); err != nil {
		t.Fatal(err)
	}
	if c.GRPO.Optimizer.LR != 0.002 || c.GRPO.SFTCoef != 0.5 || c.GRPO.Loss.Beta != DefaultLossOptions().Beta || c.GRPO.MinSpread != DefaultMinSpread {
		t.Fatalf("grpo decoded over the defaults: %+v", c.GRPO)
	}
	c = Default()
	if err := Parse([]byte("grpo: {betta: 1}\n"), &c); err == nil || !strings.Contains(err.Error(), "betta") {
		t.Fatalf("misspelt grpo key: %v", err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"grpo: {optimizer: {lr: -1}}", "grpo.optimizer: lr"},
		{"grpo: {loss: {norm: tokens}}", "grpo.loss: norm"},
		{"grpo: {sft_coef: .nan}", "grpo.sft_coef"},
		{"grpo: {update_epochs: 3}", "grpo.update_epochs 3 > 1 needs grpo.loss.clip"},
		{"grpo: {adv_scale: mad}", "grpo.adv_scale"},
		{"grpo: {optimizer: {schedule: cosine, total_steps: 5, warmup_steps: 10}}", "cosine schedule"},
	} {
		c = Default()
		if err := Parse([]byte(tc.yaml+"\n"), &c); err != nil {
			t.Fatalf("%s: parse: %v", tc.yaml, err)
		}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.yaml, err, tc.want)
		}
	}
	c = Default()
	c.PromptsPerStep, c.GroupSize, c.Staleness = 8, 8, 1
	e := c.Effective()
	if e.GRPO.BatchSize != 64 || !e.GRPO.Loss.Clip || e.GRPO.UpdateEpochs != 1 || e.GRPO.AdvScale != AdvScaleStd || e.GRPO.Optimizer.Schedule != ScheduleConstant {
		t.Errorf("effective grpo %+v", e.GRPO)
	}
}

func TestKeepWeightsCoversStaleness(t *testing.T) {
	c := Default()
	c.RunID, c.Staleness, c.Retention.KeepWeights = "kw", 3, 4
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "retention.keep_weights 4") {
		t.Errorf("keep_weights 4 with staleness 3: %v", err)
	}
	c.Retention.KeepWeights = 0
	if err := c.Validate(); err != nil {
		t.Errorf("keep_weights 0 (all): %v", err)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://alice:pw@h:1/score": "http://redacted@h:1/score",
		"https://tok@h/x?y=1":       "https://redacted@h/x?y=1",
		"http://h:1/a@b":            "http://h:1/a@b",
		"http://h:1":                "http://h:1",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
	c := Default()
	c.RunID, c.ExpertURLs = "r", map[string]string{"hps": "ftp://u:pw@h"}
	if err := c.Validate(); err == nil || strings.Contains(err.Error(), "pw") {
		t.Errorf("bad expert URL error %v: want one without the password", err)
	}
	if r := c.Redacted(); r.ExpertURLs["hps"] != "ftp://redacted@h" || c.ExpertURLs["hps"] != "ftp://u:pw@h" {
		t.Errorf("Redacted %v, original %v", r.ExpertURLs, c.ExpertURLs)
	}
}

// --set reaches any key at any depth, reads the value as YAML, keeps every other value, and names
// a wrong key or value.
func TestSet(t *testing.T) {
	c := Default()
	c.GRPO.Loss.Beta = 0.07
	for _, a := range []string{"grpo.optimizer.lr=3e-4", "sampling.temperature=0.9", "redispatch_after=90s",
		"expert_urls.hps=http://h:1", "grpo.filter_zero_std=true", "steps = 7"} {
		if err := c.Set(a); err != nil {
			t.Fatalf("--set %s: %v", a, err)
		}
	}
	if c.GRPO.Optimizer.LR != 3e-4 || c.Sampling.Temperature != 0.9 || c.RedispatchAfter.D() != 90*time.Second ||
		c.ExpertURLs["hps"] != "http://h:1" || !c.GRPO.FilterZeroStd || c.Steps != 7 {
		t.Fatalf("after --set: %+v", c)
	}
	if c.GRPO.Loss.Beta != 0.07 || c.Sampling.CFGWeight != Default().Sampling.CFGWeight {
		t.Error("--set changed a value it did not name")
	}
	for bad, want := range map[string]string{
		"grpo.optimizer.lrr=1": "lrr",
		"steps=many":           "steps",
		"grpo..lr=1":           "empty key",
		"nothing":              "key.path=value",
	} {
		if err := c.Set(bad); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--set %s: %v, want an error naming %q", bad, err, want)
		}
	}
}
