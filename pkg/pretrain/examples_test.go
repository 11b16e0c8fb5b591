package pretrain

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// shipped loads the committed codebook, base policy config and a prompt file.
func shipped(t *testing.T, promptFile string) (model.Config, *vq.Codebook, []prompts.Prompt) {
	t.Helper()
	root, _ := filepath.Abs("../..")
	if _, err := os.Stat(filepath.Join(root, "models", "base.json")); err != nil {
		t.Skip("shipped models not found")
	}
	mcfg, err := model.LoadConfig(filepath.Join(root, "models", "base.json"))
	if err != nil {
		t.Fatal(err)
	}
	cb, err := vq.Load(filepath.Join(root, "models", "codebook.vq"))
	if err != nil {
		t.Fatal(err)
	}
	ps, err := prompts.ReadFile(filepath.Join(root, "data", "prompts", promptFile))
	if err != nil {
		t.Fatal(err)
	}
	return mcfg, cb, ps
}

func TestExamplesDeterministicAndWellFormed(t *testing.T) {
	mcfg, cb, ps := shipped(t, "train.jsonl")
	mix := DefaultMix()
	mix.Batch = 40
	e, err := NewExamples(mix, mcfg, tokenizer.New(), cb, ps)
	if err != nil {
		t.Fatal(err)
	}
	if e.Prompts() != len(ps) {
		t.Fatalf("%d prompts, want %d", e.Prompts(), len(ps))
	}
	a, err := e.Batch(3)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := e.Batch(3)
	c, _ := e.Batch(4)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same step, different batch")
	}
	if reflect.DeepEqual(a.Tokens, c.Tokens) {
		t.Fatal("different steps, same batch")
	}
	if len(a.Tokens) != mix.Batch {
		t.Fatalf("%d examples, want %d", len(a.Tokens), mix.Batch)
	}
	uncond := 0
	for i, seq := range a.Tokens {
		if len(seq) != mcfg.SeqLen() || len(a.TextMask[i]) != mcfg.TextLen || len(a.ImageMask[i]) != mcfg.ImageTokens {
			t.Fatalf("example %d: %d tokens, masks %d/%d (want %d, %d, %d)", i, len(seq), len(a.TextMask[i]), len(a.ImageMask[i]), mcfg.SeqLen(), mcfg.TextLen, mcfg.ImageTokens)
		}
		if seq[1] == mcfg.Special.Uncond {
			uncond++
		}
	}
	// UncondFrac 0.1 of 40: the mix has CFG's unconditional rows, and not too many.
	if uncond < 1 || uncond > 12 {
		t.Fatalf("%d unconditional rows of %d", uncond, mix.Batch)
	}
	// Another seed draws other examples.
	mix.Seed++
	other, _ := NewExamples(mix, mcfg, tokenizer.New(), cb, ps)
	d, _ := other.Batch(3)
	if reflect.DeepEqual(a.Tokens, d.Tokens) {
		t.Fatal("different seeds, same batch")
	}
}

// The anchor must be given the pretraining prompts: held-out prompts have no training scene, and
// that is an error naming the cause, not a silent empty batch.
func TestExamplesRefuseHeldOutPrompts(t *testing.T) {
	mcfg, cb, ps := shipped(t, "eval.jsonl")
	e, err := NewExamples(DefaultMix(), mcfg, tokenizer.New(), cb, ps)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Batch(0); err == nil || !strings.Contains(err.Error(), "held-out") {
		t.Fatalf("batch of held-out prompts: %v", err)
	}
}

func TestMixValidate(t *testing.T) {
	for _, m := range []Mix{
		{Batch: 0, PlanOrder: "prompt"},
		{Batch: 1, NoPlanFrac: 0.6, UncondFrac: 0.6, PlanOrder: "prompt"},
		{Batch: 1, NoPlanFrac: -0.1, PlanOrder: "prompt"},
		{Batch: 1, PlanOrder: "random"},
	} {
		if err := m.Validate(); err == nil {
			t.Fatalf("%+v accepted", m)
		}
	}
	if err := DefaultMix().Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := NewExamples(DefaultMix(), model.Config{}, tokenizer.New(), nil, nil); err == nil {
		t.Fatal("no codebook accepted")
	}
}

// TypeRepeats draws from the pool a file would give that went on with the repeated types'
// prompts again, round after round (how the shipped base's mix was first made).
func TestTypeRepeatsPool(t *testing.T) {
	mcfg, cb, ps := shipped(t, "train.jsonl")
	mix := DefaultMix()
	mix.TypeRepeats = map[string]int{prompts.Spatial: 3, prompts.NonSpatial: 2}
	var file []prompts.Prompt
	file = append(file, ps...)
	for round := 1; round < 3; round++ {
		for _, p := range ps {
			if p.TaskType == prompts.Spatial || (round < 2 && p.TaskType == prompts.NonSpatial) {
				file = append(file, p)
			}
		}
	}
	repeated, err := NewExamples(mix, mcfg, tokenizer.New(), cb, ps)
	if err != nil {
		t.Fatal(err)
	}
	plain := mix
	plain.TypeRepeats = nil
	concatenated, err := NewExamples(plain, mcfg, tokenizer.New(), cb, file)
	if err != nil {
		t.Fatal(err)
	}
	if repeated.Prompts() != len(file) {
		t.Fatalf("pool of %d prompts, want %d", repeated.Prompts(), len(file))
	}
	a, err := repeated.Batch(7)
	if err != nil {
		t.Fatal(err)
	}
	b, err := concatenated.Batch(7)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatal("type_repeats draws other examples than the concatenated file")
	}
	for _, bad := range []map[string]int{{"spacial": 2}, {prompts.Spatial: 0}, {prompts.Spatial: maxTypeRepeats + 1}} {
		m := DefaultMix()
		m.TypeRepeats = bad
		if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "type_repeats") {
			t.Errorf("type_repeats %v: err %v, want one naming type_repeats", bad, err)
		}
	}
}
