package trainer_test

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/trainer"
)

// OptionsFor takes the config's grpo section and the run's sampling settings and staleness.
func TestOptionsFor(t *testing.T) {
	c := config.Default()
	c.GRPO.Loss.Beta, c.GRPO.FilterZeroStd = 0.05, true
	o, err := trainer.OptionsFor(c)
	if err != nil {
		t.Fatal(err)
	}
	if o.Loss.Beta != 0.05 || !o.FilterZeroStd || o.BatchSize < c.PromptsPerStep*c.GroupSize || o.CFGWeight != c.Sampling.CFGWeight ||
		o.ImageLogp != c.Sampling.ImageLogp {
		t.Errorf("options %+v", o)
	}
	shipped, err := config.Load(filepath.Join("..", "..", "configs", "cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trainer.OptionsFor(shipped); err != nil {
		t.Errorf("configs/cluster.yaml: %v", err)
	}
	c = config.Default()
	c.Staleness = 2
	if o, err := trainer.OptionsFor(c); err != nil || !o.Loss.Clip || o.MaxStaleness != 2 {
		t.Errorf("staleness 2: clip %v max %d err %v", o.Loss.Clip, o.MaxStaleness, err)
	}
	c.GRPO.Optimizer.LR = -1
	if _, err := trainer.OptionsFor(c); err == nil || !strings.Contains(err.Error(), "lr") {
		t.Errorf("negative lr: %v", err)
	}
}

// A run's recorded config (config.Config.Effective) names every trainer setting in force, and
// reading it back gives the same trainer options.
func TestEffectiveConfigRecordsEveryTrainerSetting(t *testing.T) {
	c := config.Default()
	if err := config.Parse([]byte("grpo: {optimizer: {lr: 0.0003}}\n"), &c); err != nil {
		t.Fatal(err)
	}
	y, err := c.Effective().YAML()
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
	a, err := trainer.OptionsFor(c)
	if err != nil {
		t.Fatal(err)
	}
	b, err := trainer.OptionsFor(back)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a.WithDefaults(), b.WithDefaults()) {
		t.Fatalf("options differ after the round trip:\n%+v\n%+v", a.WithDefaults(), b.WithDefaults())
	}
}
