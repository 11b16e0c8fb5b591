package config

import (
	"os"
	"path/filepath"
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
	if c.PromptsPerStep != 8 || c.GroupSize != 8 || c.Steps != 240 || c.Staleness != 0 || c.Wire.AckWait.D() != time.Minute {
		t.Errorf("laptop config: %+v", c)
	}
	if c.TasksPerStep() != 4 {
		t.Errorf("tasks per step %d, want 4", c.TasksPerStep())
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
	if c.RunID != "cluster-1" || c.Staleness != 1 || c.GRPO == nil {
		t.Errorf("cluster config: %+v", c)
	}
}
