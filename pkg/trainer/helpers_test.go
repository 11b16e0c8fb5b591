package trainer

import (
	"math"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/tensors"
	"go.uber.org/goleak"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tinyConfig is a policy small enough for many steps in a test, over the real tokenizer.
func tinyConfig() model.Config {
	return model.Config{
		TextVocab: tokenizer.New().Size(), ImageVocab: 6, TextLen: 12, ImageTokens: 4,
		DModel: 16, Heads: 2, Layers: 1, FF: 32,
		Special: model.Specials{Pad: tokenizer.Pad, BOS: tokenizer.BOS, EOS: tokenizer.EOS, Plan: tokenizer.Plan,
			ImgStart: tokenizer.ImgStart, Uncond: tokenizer.Uncond},
	}
}

func newPolicy(t testing.TB, cfg model.Config, seed uint64) *model.Model {
	t.Helper()
	b, err := mlx.NewBackend("")
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(b, cfg, seed)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var testPrompts = []string{"a red circle", "two blue squares", "a green triangle", "a blue circle"}

// rollout is what a rollout worker and a reward worker do together: sample G per prompt with the
// policy, put the samples on the wire format and score them with reward.
type rollout struct {
	step      int64
	version   int64
	g         int
	cfg       float64 // guidance weight
	condLogp  bool    // record the conditional image log-probs (Options.ImageLogp conditional)
	temp      float64
	maxPlan   int
	noPlan    bool
	exclusive bool // plans never name a cell twice (Options.ExclusiveCells)
	seed      uint64
	promptIDs []int // indices into testPrompts
	reward    func(s model.Sample) float64
}

func (r rollout) groups(t testing.TB, m *model.Model) []Group {
	t.Helper()
	vocab := tokenizer.New()
	var enc [][]int32
	var ids []uint64
	for _, pi := range r.promptIDs {
		p, err := wire.EncodePrompt(vocab, testPrompts[pi])
		if err != nil {
			t.Fatal(err)
		}
		enc = append(enc, p)
		ids = append(ids, uint64(pi))
	}
	samples, err := m.Sample(model.SampleRequest{Prompts: enc, PromptIDs: ids, G: r.g, Seed: r.seed, Step: uint64(r.step),
		CFGWeight: r.cfg, Temperature: r.temp, MaxPlanTokens: r.maxPlan, NoPlan: r.noPlan, ConditionalLogp: r.condLogp,
		ExclusiveCells: r.exclusive})
	if err != nil {
		t.Fatal(err)
	}
	var scored []bus.ScoredSample
	for _, s := range samples {
		pi := r.promptIDs[s.Prompt]
		ss := bus.ScoredSample{Sample: bus.Sample{V: bus.SchemaVersion, Run: "test", Step: r.step, PromptIndex: pi,
			SampleIndex: s.Index, G: r.g, PolicyVersion: r.version, Prompt: prompts.Prompt{Prompt: testPrompts[pi], TaskType: "color"}}}
		if err := wire.FromSample(m.Config, s, &ss.Sample); err != nil {
			t.Fatal(err)
		}
		if r.reward != nil {
			ss.Reward = r.reward(s)
		}
		ss.PerExpert = map[string]float64{"codes": ss.Reward, "half": ss.Reward / 2}
		scored = append(scored, ss)
	}
	gs, err := GroupsFromScored(scored)
	if err != nil {
		t.Fatal(err)
	}
	return gs
}

// targetReward is the fraction of image codes equal to target.
func targetReward(target int) func(model.Sample) float64 {
	return func(s model.Sample) float64 {
		n := 0
		for _, c := range s.Codes {
			if c == target {
				n++
			}
		}
		return float64(n) / float64(len(s.Codes))
	}
}

func mustTrainer(t testing.TB, m *model.Model, o Options) *Trainer {
	t.Helper()
	tr, err := NewTrainer(m, o)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// favourEOS raises the end-of-text logit of an untrained policy so that plans end at varied
// lengths (with random weights they almost never end before the cap).
func favourEOS(t testing.TB, m *model.Model, bias float32) {
	t.Helper()
	favourTokens(t, m, bias, m.Config.Special.EOS)
}

// favourTokens sets the text head's bias of the given words, making plans of them likely.
func favourTokens(t testing.TB, m *model.Model, bias float32, ids ...int32) {
	t.Helper()
	v := m.Ctx.GetVariableByScopeAndName("/"+model.Scope+"/text_head/dense", "biases")
	if v == nil {
		t.Fatal("text head bias not found")
	}
	b := tensors.MustCopyFlatData[float32](v.MustValue())
	for _, id := range ids {
		b[id] = bias
	}
	if err := v.SetValue(tensors.FromFlatDataAndDimensions(b, len(b))); err != nil {
		t.Fatal(err)
	}
}

func sqrt(x float64) float64 { return math.Sqrt(x) }
func abs(x float64) float64  { return math.Abs(x) }
func nan() float64           { return math.NaN() }
