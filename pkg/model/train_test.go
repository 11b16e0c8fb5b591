package model

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
)

// unevenBatch has plans of different lengths, so the shards hold different numbers of masked
// text tokens and a mean of shard means would differ from the batch mean.
func unevenBatch(t *testing.T, m *Model) Batch {
	t.Helper()
	var b Batch
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

func policyWeights(m *Model) map[string][]float32 {
	out := map[string][]float32{}
	for v := range m.Ctx.IterVariables() {
		if isPolicyVar(v) {
			out[v.ScopeAndName()] = tensors.MustCopyFlatData[float32](v.MustValue())
		}
	}
	return out
}

// A sharded step is the same Adam update as one pass over the whole batch: same losses, same
// weights after several steps (up to float rounding), for even and uneven splits.
func TestShardedStepEqualsWholeBatchStep(t *testing.T) {
	for _, shards := range []int{2, 3, 8} { // 8 > the batch's 5 rows: empty shards add nothing
		whole, sharded := tinyModel(t, 9), tinyModel(t, 9)
		tw, err := whole.NewTrainer(1e-2, 0)
		if err != nil {
			t.Fatal(err)
		}
		ts, err := sharded.NewTrainerWith(TrainerOptions{LearningRate: 1e-2, Shards: shards})
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
		init := policyWeights(tinyModel(t, 9))
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
	if _, err := tinyModel(t, 1).NewTrainerWith(TrainerOptions{LearningRate: 1e-2, Shards: -1}); err == nil {
		t.Fatal("shards -1 accepted")
	}
}

// The host-side bag weights (used by the KV-cache sampler one position at a time) equal the
// graph's (used by scoring and training) at every position, including a cell named twice, cells
// no phrase names (weight on eos) and the unconditional context (no eos: no weight).
func TestBagWeightsHostMatchesGraph(t *testing.T) {
	m := tinyModel(t, 1)
	c := m.Config
	plan := []int32{6, 16, 22, 17, 22, 9, 16}
	seq, err := c.Sequence([]int32{11}, plan, []int{1, 2, 3, 4, 5})
	if err != nil {
		t.Fatal(err)
	}
	seqs := [][]int32{seq, c.UncondSequence([]int{1, 2, 3, 4, 5})}
	exec, err := graph.NewExec(m.Backend, func(tokens *graph.Node) *graph.Node { return m.bagWeightsGraph(tokens) })
	if err != nil {
		t.Fatal(err)
	}
	tok, err := m.tokensTensor(seqs)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Exec(tok)
	if err != nil {
		t.Fatal(err)
	}
	got := tensors.MustCopyFlatData[float32](out[0])
	T := c.SeqLen()
	want := make([]float32, T)
	for n, s := range seqs {
		for pos := 0; pos < T; pos++ {
			c.bagWeights(s, pos, want)
			row := got[(n*T+pos)*T : (n*T+pos+1)*T]
			if !slices.Equal(row, want) {
				t.Fatalf("sequence %d position %d:\ngraph %v\nhost  %v", n, pos, row, want)
			}
		}
	}
	// Spot checks of the cell bag: code 0 (cell word 16, named twice) averages both phrases,
	// code 2 (18, never named) reads the eos.
	c.bagWeights(seq, c.TextLen, want)
	planStart := PlanPos(1) + 1
	if want[planStart] == 0 || want[planStart+6] == 0 || want[planStart+3] != 0 {
		t.Fatalf("cell 16's weights %v", want[:c.TextLen])
	}
	c.bagWeights(seq, c.TextLen+2, want)
	if want[planStart+len(plan)] != 1 {
		t.Fatalf("unnamed cell's weights %v, want 1 on eos at %d", want[:c.TextLen], planStart+len(plan))
	}
}
