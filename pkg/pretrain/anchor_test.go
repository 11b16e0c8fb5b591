package pretrain

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/prompts"
)

// The run's anchor_type_repeats reach the anchor's pool: the relation types' pretraining prompts
// are in it that many times, and an unknown type name is refused naming the setting.
func TestAnchorTypeRepeats(t *testing.T) {
	mcfg, cb, ps := shipped(t, "train.jsonl")
	relations := 0
	for _, p := range ps {
		switch p.TaskType {
		case prompts.Spatial, prompts.NonSpatial, prompts.Complex:
			relations++
		}
	}
	c := config.Default()
	c.PretrainPrompts = filepath.Join("..", "..", "data", "prompts", "train.jsonl")
	plain, err := Anchor(c, mcfg, cb)
	if err != nil {
		t.Fatal(err)
	}
	if plain.Prompts() != len(ps) {
		t.Fatalf("anchor pool without repeats: %d prompts, want the file's %d", plain.Prompts(), len(ps))
	}
	c.AnchorTypeRepeats = map[string]int{prompts.Spatial: 3, prompts.NonSpatial: 3, prompts.Complex: 3}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	rel, err := Anchor(c, mcfg, cb)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(ps) + 2*relations; rel.Prompts() != want {
		t.Fatalf("anchor pool with the relation types x3: %d prompts, want %d", rel.Prompts(), want)
	}
	c.AnchorTypeRepeats = map[string]int{"spacial": 3}
	if _, err := Anchor(c, mcfg, cb); err == nil || !strings.Contains(err.Error(), "anchor_type_repeats") {
		t.Fatalf("unknown task type: err %v, want one naming anchor_type_repeats", err)
	}
}
