package pretrain

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/prompts"
)

// tinyConfig is a policy small enough to pretrain for a few steps in a test.
func tinyConfig(t *testing.T) Config {
	t.Helper()
	c := DefaultConfig()
	c.DModel, c.Heads, c.Layers, c.FF, c.Batch, c.Warmup, c.Shards, c.TextLen = 16, 2, 1, 32, 4, 1, 2, 36
	c.Steps, c.Seed, c.SaveEvery = 3, 2, 2
	c.Prompts, c.Codebook = "../../data/prompts/train.jsonl", "../../models/codebook.vq"
	c.Out = filepath.Join(t.TempDir(), "tiny.safetensors")
	return c
}

// Pretrain a tiny policy for a few steps on the real prompts and codebook: the checkpoint and its
// config are written (and the intermediate pair of --save-every), progress is told of every step,
// and the checkpoint loads as the policy the summary describes.
func TestRunWritesTheCheckpointAndItsConfig(t *testing.T) {
	c := tinyConfig(t)
	backend, err := mlx.NewBackend("")
	if err != nil {
		t.Fatal(err)
	}
	var steps []int
	sum, err := Run(context.Background(), backend, c, func(p Progress) {
		if p.Steps != c.Steps || (p.Step > 0 && !(p.LossEMA > 0)) {
			t.Errorf("progress %+v", p)
		}
		steps = append(steps, p.Step)
	}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Steps != 3 || sum.Config.DModel != 16 || sum.Params == 0 || !sum.Config.CellBag || sum.Config.TextLen != 36 ||
		len(sum.Config.CellTokens) != sum.Config.ImageTokens || !(sum.FinalLoss > 0) {
		t.Fatalf("summary %+v", sum)
	}
	if !reflect.DeepEqual(steps, []int{0, 1, 2, 3}) {
		t.Fatalf("progress steps %v", steps)
	}
	for _, p := range []string{c.Out, ConfigPath(c.Out), stepPath(c.Out, 2), ConfigPath(stepPath(c.Out, 2))} {
		if _, err := os.Stat(p); err != nil {
			t.Fatal(err)
		}
	}
	m, err := model.LoadFile(backend, c.Out)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m.Config, sum.Config) {
		t.Fatalf("checkpoint config %+v, summary %+v", m.Config, sum.Config)
	}
	saved, err := model.LoadConfig(ConfigPath(c.Out))
	if err != nil || !reflect.DeepEqual(saved, sum.Config) {
		t.Fatalf("saved config %+v (%v), summary %+v", saved, err, sum.Config)
	}
}

// configs/pretrain.yaml documents every setting at its default: loading it gives exactly the
// defaults, so the file and the code cannot drift apart.
func TestPretrainYAMLIsTheDefaults(t *testing.T) {
	c := DefaultConfig()
	if err := ReadConfig("../../configs/pretrain.yaml", &c); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, DefaultConfig()) {
		t.Fatalf("configs/pretrain.yaml:\n%+v\ndefaults:\n%+v", c, DefaultConfig())
	}
}

// Every pretraining config the repository ships (configs/pretrain*.yaml) loads and validates: the
// docs tell users to rebuild bases from them.
func TestShippedPretrainConfigs(t *testing.T) {
	paths, err := filepath.Glob("../../configs/pretrain*.yaml")
	if err != nil || len(paths) < 2 {
		t.Fatalf("pretraining configs: %v (%d found)", err, len(paths))
	}
	for _, p := range paths {
		c := DefaultConfig()
		if err := ReadConfig(p, &c); err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// A file overrides only the keys it names, and a typo is an error rather than a silent default.
func TestReadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c := DefaultConfig()
	if err := ReadConfig(write("ok.yaml", "steps: 7\nplan_order: raster\n"), &c); err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Steps, want.PlanOrder = 7, "raster"
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("read %+v, want %+v", c, want)
	}
	if err := ReadConfig(write("typo.yaml", "stepz: 7\n"), &c); err == nil || !strings.Contains(err.Error(), "typo.yaml") {
		t.Fatalf("unknown key: %v", err)
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatal("a failed read changed the config")
	}
}

func TestConfigValidate(t *testing.T) {
	for name, bad := range map[string]func(*Config){
		"steps":      func(c *Config) { c.Steps = 0 },
		"lr":         func(c *Config) { c.LR = 0 },
		"warmup":     func(c *Config) { c.Warmup = -1 },
		"min_lr":     func(c *Config) { c.MinLRFrac = 2 },
		"cell_bag":   func(c *Config) { c.TieCells = false },
		"shards":     func(c *Config) { c.Shards = -1 },
		"out":        func(c *Config) { c.Out = "base.bin" },
		"plan_order": func(c *Config) { c.PlanOrder = "random" },
	} {
		c := DefaultConfig()
		bad(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: %+v accepted", name, c)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

// The shipped recipe variants are the shipped recipe with some task types repeated and another
// output, nothing else changed (docs/learner.md compares the bases they build):
// configs/pretrain-relations.yaml repeats the relation types, configs/pretrain-relations-knowledge.yaml
// knowledge as well.
func TestPretrainRecipeVariantsYAML(t *testing.T) {
	relations := map[string]int{prompts.Spatial: 3, prompts.NonSpatial: 3, prompts.Complex: 3}
	withKnowledge := map[string]int{prompts.Spatial: 3, prompts.NonSpatial: 3, prompts.Complex: 3, prompts.Knowledge: 3}
	for _, v := range []struct {
		file, out string
		repeats   map[string]int
	}{
		{"pretrain-relations.yaml", "models/base-relations.safetensors", relations},
		{"pretrain-relations-knowledge.yaml", "models/base-relations-knowledge.safetensors", withKnowledge},
	} {
		c := DefaultConfig()
		if err := ReadConfig("../../configs/"+v.file, &c); err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("configs/%s: %v", v.file, err)
		}
		want := DefaultConfig()
		want.Out = v.out
		want.TypeRepeats = v.repeats
		if !reflect.DeepEqual(c, want) {
			t.Fatalf("configs/%s:\n%+v\nwant:\n%+v", v.file, c, want)
		}
	}
}
