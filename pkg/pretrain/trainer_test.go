package pretrain

import (
	"bytes"
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/model"
)

// tinyPolicyConfig is pkg/model's test policy: every learning aid on, small enough to train a few
// steps in a test.
func tinyPolicyConfig() model.Config {
	return model.Config{TextVocab: 24, ImageVocab: 12, TextLen: 12, ImageTokens: 5, DModel: 16, Heads: 2, Layers: 2, FF: 32,
		Special: model.Specials{Pad: 0, BOS: 1, EOS: 2, Plan: 3, ImgStart: 4, Uncond: 5}, CellTokens: []int32{16, 17, 18, 19, 20}, SinusoidalPositions: true, TiedTextHead: true,
		PhraseBag: true, PhraseSeparators: []int32{22}, CellBag: true,
		CodeWords: [][]int32{nil, {6, 7}, {8}, nil, {9, 10, 11}, {12}, {13}, {14}, {15}, {16}, {17}, {18, 19}}}
}

func tinyPolicy(t testing.TB, seed uint64) *model.Model {
	t.Helper()
	b, err := mlx.NewBackend("")
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(b, tinyPolicyConfig(), seed)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var tinyPrompts = [][]int32{{6, 7, 8}, {9, 10}, {11, 12, 13, 14, 15}}

func tinyBatch(t *testing.T, m *model.Model) model.Batch {
	t.Helper()
	var b model.Batch
	for i, p := range tinyPrompts {
		seq, err := m.Config.Sequence(p, []int32{int32(16 + i), 17}, []int{i, 1, 2, 3, 4})
		if err != nil {
			t.Fatal(err)
		}
		tm, im := m.Config.Masks(seq, false)
		b.Tokens, b.TextMask, b.ImageMask = append(b.Tokens, seq), append(b.TextMask, tm), append(b.ImageMask, im)
	}
	return b
}

// unevenBatch has plans of different lengths, so the shards hold different numbers of masked
// text tokens and a mean of shard means would differ from the batch mean.
func unevenBatch(t *testing.T, m *model.Model) model.Batch {
	t.Helper()
	var b model.Batch
	plans := [][]int32{{16}, {16, 17, 18, 19}, {18, 17}, {20, 21, 22, 16, 17, 18}, {19}}
	for i, p := range plans {
		seq, err := m.Config.Sequence(tinyPrompts[i%len(tinyPrompts)], p, []int{i, 1, 2, 3, 4})
		if err != nil {
			t.Fatal(err)
		}
		tm, im := m.Config.Masks(seq, false)
		b.Tokens, b.TextMask, b.ImageMask = append(b.Tokens, seq), append(b.TextMask, tm), append(b.ImageMask, im)
	}
	return b
}

func policyWeights(m *model.Model) map[string][]float32 {
	out := map[string][]float32{}
	for v := range m.Ctx.IterVariables() {
		if model.IsPolicyVariable(v) {
			out[v.ScopeAndName()] = tensors.MustCopyFlatData[float32](v.MustValue())
		}
	}
	return out
}

func saveBytes(t *testing.T, m *model.Model, opts model.SaveOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := m.Save(&buf, opts); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A sharded step is the same Adam update as one pass over the whole batch: same losses, same
// weights after several steps (up to float rounding), for even and uneven splits.
func TestShardedStepEqualsWholeBatchStep(t *testing.T) {
	for _, shards := range []int{2, 3, 8} { // 8 > the batch's 5 rows: empty shards add nothing
		whole, sharded := tinyPolicy(t, 9), tinyPolicy(t, 9)
		tw, err := NewTrainer(whole, TrainerOptions{LearningRate: 1e-2})
		if err != nil {
			t.Fatal(err)
		}
		ts, err := NewTrainer(sharded, TrainerOptions{LearningRate: 1e-2, Shards: shards})
		if err != nil {
			t.Fatal(err)
		}
		batch := unevenBatch(t, whole)
		for step := 0; step < 3; step++ {
			a, err := tw.Step(batch)
			if err != nil {
				t.Fatal(err)
			}
			b, err := ts.Step(batch)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(a.TextNLL-b.TextNLL) > 1e-4 || math.Abs(a.ImageNLL-b.ImageNLL) > 1e-4 || a.LearningRate != b.LearningRate {
				t.Fatalf("%d shards, step %d: whole %+v, sharded %+v", shards, step, a, b)
			}
		}
		ww, ws := policyWeights(whole), policyWeights(sharded)
		if len(ww) == 0 || len(ww) != len(ws) {
			t.Fatalf("%d shards: %d vs %d weight tensors", shards, len(ww), len(ws))
		}
		moved := false
		init := policyWeights(tinyPolicy(t, 9))
		for name, a := range ww {
			if strings.HasSuffix(name, "/attn/key/dense/biases") {
				// A key bias adds the same score to every key of a query, which softmax
				// ignores: its gradient is rounding noise, which Adam scales up to full steps.
				continue
			}
			b := ws[name]
			for i := range a {
				if math.Abs(float64(a[i]-b[i])) > 1e-4 {
					t.Fatalf("%d shards: %s[%d] = %g, whole batch %g", shards, name, i, b[i], a[i])
				}
				if a[i] != init[name][i] {
					moved = true
				}
			}
		}
		if !moved {
			t.Fatal("no weight changed: the comparison would pass vacuously")
		}
	}
}

func TestTrainerRejectsNegativeShards(t *testing.T) {
	if _, err := NewTrainer(tinyPolicy(t, 1), TrainerOptions{LearningRate: 1e-2, Shards: -1}); err == nil {
		t.Fatal("shards -1 accepted")
	}
}

// With optimizer state, training resumes exactly: a step after reload equals a step without it.
func TestCheckpointOptimizerResume(t *testing.T) {
	m := tinyPolicy(t, 5)
	tr, err := NewTrainer(m, TrainerOptions{LearningRate: 1e-2})
	if err != nil {
		t.Fatal(err)
	}
	batch := tinyBatch(t, m)
	first, err := tr.Step(batch)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Step(batch); err != nil {
		t.Fatal(err)
	}
	ck := saveBytes(t, m, model.SaveOptions{Optimizer: true})
	want, err := tr.Step(batch)
	if err != nil {
		t.Fatal(err)
	}
	if !(want.Loss < first.Loss) {
		t.Fatalf("loss did not decrease: %g -> %g", first.Loss, want.Loss)
	}
	m2, err := model.Load(m.Backend, ck)
	if err != nil {
		t.Fatal(err)
	}
	tr2, err := NewTrainer(m2, TrainerOptions{LearningRate: 1e-2})
	if err != nil {
		t.Fatal(err)
	}
	got, err := tr2.Step(batch)
	if err != nil {
		t.Fatal(err)
	}
	if got.Loss != want.Loss {
		t.Fatalf("resumed loss %v, want %v", got.Loss, want.Loss)
	}
	if !bytes.Equal(saveBytes(t, m2, model.SaveOptions{Optimizer: true}), saveBytes(t, m, model.SaveOptions{Optimizer: true})) {
		t.Fatal("state after the resumed step differs")
	}
}

// Optimizer checkpoints hold scalars (step counters, learning rate), which have always been
// written with "shape":null; they must still be, and must load back as scalars.
func TestOptimizerCheckpointScalars(t *testing.T) {
	m := tinyPolicy(t, 7)
	tr, err := NewTrainer(m, TrainerOptions{LearningRate: 1e-2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Step(tinyBatch(t, m)); err != nil {
		t.Fatal(err)
	}
	b := saveBytes(t, m, model.SaveOptions{Optimizer: true})
	n := binary.LittleEndian.Uint64(b[:8])
	if !bytes.Contains(b[8:8+n], []byte(`"shape":null`)) {
		t.Fatal("no scalar written with a null shape")
	}
	ck, err := model.ParseCheckpoint(b)
	if err != nil {
		t.Fatal(err)
	}
	scalars := 0
	for _, tt := range ck.Tensors {
		if tt.Shape().IsScalar() {
			scalars++
		}
	}
	if scalars == 0 {
		t.Fatal("no scalar tensors parsed back")
	}
}
