package learner_test

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/learner"
)

// TestTrainerOptions passes the config's grpo section through and refuses unknown keys.
func TestTrainerOptions(t *testing.T) {
	c := config.Default()
	c.GRPO = map[string]any{"loss": map[string]any{"beta": 0.05}, "filter_zero_std": true}
	o, err := learner.TrainerOptions(c)
	if err != nil {
		t.Fatal(err)
	}
	if o.Loss.Beta != 0.05 || !o.FilterZeroStd || o.BatchSize < c.PromptsPerStep*c.GroupSize || o.CFGWeight != c.Sampling.CFGWeight {
		t.Errorf("options %+v", o)
	}
	c.GRPO = map[string]any{"betta": 1}
	if _, err := learner.TrainerOptions(c); err == nil {
		t.Error("unknown grpo key accepted")
	}
	shipped, err := config.Load(filepath.Join("..", "..", "configs", "cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := learner.TrainerOptions(shipped); err != nil {
		t.Errorf("configs/cluster.yaml: %v", err)
	}
	c.GRPO = nil
	c.Staleness = 2
	if o, err := learner.TrainerOptions(c); err != nil || !o.Loss.Clip || o.MaxStaleness != 2 {
		t.Errorf("staleness 2: clip %v max %d err %v", o.Loss.Clip, o.MaxStaleness, err)
	}
}

// A run's recorded config names every trainer setting in force, and reading it back gives the
// same trainer options.
func TestEffectiveConfigRecordsEveryTrainerSetting(t *testing.T) {
	c := config.Default()
	if err := config.Parse([]byte("grpo: {optimizer: {lr: 0.0003}}\n"), &c); err != nil {
		t.Fatal(err)
	}
	eff, err := learner.EffectiveConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	y, err := eff.YAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"lr: 0.0003", "beta: 0.01", "min_spread:", "adv_scale: std", "image_logp: conditional", "norm: token", "level: both"} {
		if !strings.Contains(string(y), want) {
			t.Errorf("recorded config lacks %q:\n%s", want, y)
		}
	}
	var back config.Config
	if err := config.Parse(y, &back); err != nil {
		t.Fatal(err)
	}
	a, err := learner.TrainerOptions(c)
	if err != nil {
		t.Fatal(err)
	}
	b, err := learner.TrainerOptions(back)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a.WithDefaults(), b.WithDefaults()) {
		t.Fatalf("options differ after the round trip:\n%+v\n%+v", a.WithDefaults(), b.WithDefaults())
	}
}
