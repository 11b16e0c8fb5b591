package model

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/tensorfile"
)

func tinyConfig() Config {
	return Config{TextVocab: 24, ImageVocab: 12, TextLen: 12, ImageTokens: 5, DModel: 16, Heads: 2, Layers: 2, FF: 32,
		Special: Specials{Pad: 0, BOS: 1, EOS: 2, Plan: 3, ImgStart: 4, Uncond: 5}, CellTokens: []int32{16, 17, 18, 19, 20}, SinusoidalPositions: true, TiedTextHead: true,
		PhraseBag: true, PhraseSeparators: []int32{22}, CellBag: true,
		CodeWords: [][]int32{nil, {6, 7}, {8}, nil, {9, 10, 11}, {12}, {13}, {14}, {15}, {16}, {17}, {18, 19}}}
}

func tinyModel(t testing.TB, seed uint64) *Model {
	t.Helper()
	b, err := mlx.NewBackend("")
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(b, tinyConfig(), seed)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var tinyPrompts = [][]int32{{6, 7, 8}, {9, 10}, {11, 12, 13, 14, 15}}

// With untrained weights plans rarely end early; a larger scale makes eos likely enough that
// the masks after eos get exercised.
func checkAgreement(t *testing.T, m *Model, req SampleRequest) {
	t.Helper()
	samples, err := m.Sample(req)
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) != len(req.Prompts)*req.G {
		t.Fatalf("%d samples", len(samples))
	}
	seqs := make([][]int32, len(samples))
	for i, s := range samples {
		seqs[i] = s.Tokens
	}
	so := ScoreOptions{CFGWeight: req.CFGWeight, Temperature: req.Temperature, ExclusiveCells: req.ExclusiveCells}
	if req.ConditionalLogp {
		so.CFGWeight = 0 // drawn with guidance, recorded (and so scored) without
	}
	text, image, err := m.Score(seqs, so)
	if err != nil {
		t.Fatal(err)
	}
	nText := 0
	for i, s := range samples {
		for p := range s.TextLogp {
			if s.TextMask[p] == 0 {
				if s.TextLogp[p] != 0 {
					t.Fatalf("sample %d: logp %g at unsampled text position %d", i, s.TextLogp[p], p)
				}
				continue
			}
			nText++
			if d := math.Abs(float64(s.TextLogp[p] - text[i][p])); d > 1e-4 {
				t.Errorf("sample %d text position %d: sampled logp %g, scored %g", i, p, s.TextLogp[p], text[i][p])
			}
		}
		for p := range s.ImageLogp {
			if d := math.Abs(float64(s.ImageLogp[p] - image[i][p])); d > 1e-4 {
				t.Errorf("sample %d image token %d: sampled logp %g, scored %g", i, p, s.ImageLogp[p], image[i][p])
			}
		}
		// The layout holds: [plan] after the prompt, an eos before img_start, pads after eos.
		p := PlanPos(len(req.Prompts[s.Prompt]))
		if s.Tokens[p] != m.Config.Special.Plan || s.Tokens[m.Config.TextLen] != m.Config.Special.ImgStart {
			t.Fatalf("sample %d: bad layout %v", i, s.Tokens)
		}
		eos := slices.Index(s.Tokens[p:], m.Config.Special.EOS)
		if eos < 0 {
			t.Fatalf("sample %d: no eos in %v", i, s.Tokens)
		}
		for q := p + eos + 1; q < m.Config.TextLen; q++ {
			if s.Tokens[q] != m.Config.Special.Pad || s.TextMask[q] != 0 {
				t.Fatalf("sample %d: position %d after eos is %d (mask %g)", i, q, s.Tokens[q], s.TextMask[q])
			}
		}
		if !slices.Equal(s.Plan, s.Tokens[p+1:p+eos]) {
			t.Fatalf("sample %d: plan %v vs tokens %v", i, s.Plan, s.Tokens)
		}
	}
	if !req.NoPlan && nText == 0 {
		t.Fatal("no text token was sampled")
	}
}

func TestSampleLogProbsMatchScoring(t *testing.T) {
	m := tinyModel(t, 1)
	for _, tc := range []struct {
		name string
		req  SampleRequest
	}{
		{"plain", SampleRequest{G: 3, Seed: 1}},
		{"cfg", SampleRequest{G: 3, Seed: 2, CFGWeight: 3}},
		{"cfg+temperature", SampleRequest{G: 2, Seed: 3, CFGWeight: 5, Temperature: 0.7}},
		{"noplan+cfg", SampleRequest{G: 2, Seed: 4, CFGWeight: 2, NoPlan: true}},
		{"cfg, conditional logp", SampleRequest{G: 3, Seed: 2, CFGWeight: 3, ConditionalLogp: true}},
		{"cfg+temperature, conditional logp", SampleRequest{G: 2, Seed: 3, CFGWeight: 5, Temperature: 0.7, ConditionalLogp: true}},
		{"maxplan", SampleRequest{G: 2, Seed: 5, MaxPlanTokens: 2}},
		{"exclusive cells", SampleRequest{G: 4, Seed: 6, ExclusiveCells: true}},
		{"exclusive cells+cfg+temperature, conditional logp", SampleRequest{G: 3, Seed: 7, CFGWeight: 3, Temperature: 0.8, ConditionalLogp: true, ExclusiveCells: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Prompts = tinyPrompts
			checkAgreement(t, m, tc.req)
		})
	}
}

// ExclusiveCells never names a cell twice in a plan, where plain sampling does; the model without
// cell words refuses it; and scoring without the mask disagrees with what was drawn with it (the
// agreement test above is not vacuous).
func TestExclusiveCells(t *testing.T) {
	m := tinyModel(t, 1)
	repeats := func(req SampleRequest) int {
		t.Helper()
		ss, err := m.Sample(req)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, s := range ss {
			seen := map[int32]bool{}
			for _, w := range s.Plan {
				if slices.Contains(m.Config.CellTokens, w) {
					if seen[w] {
						n++
					}
					seen[w] = true
				}
			}
		}
		return n
	}
	req := SampleRequest{Prompts: tinyPrompts, G: 16, Seed: 9}
	if n := repeats(req); n == 0 {
		t.Fatal("plain sampling named no cell twice: the check below would prove nothing")
	}
	req.ExclusiveCells = true
	if n := repeats(req); n != 0 {
		t.Fatalf("exclusive cells: %d cells named twice", n)
	}
	ss, err := m.Sample(req)
	if err != nil {
		t.Fatal(err)
	}
	seqs := make([][]int32, len(ss))
	for i, s := range ss {
		seqs[i] = s.Tokens
	}
	plain, _, err := m.Score(seqs, ScoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	differ := 0
	for i, s := range ss {
		for p := range s.TextLogp {
			if s.TextMask[p] != 0 && math.Abs(float64(s.TextLogp[p]-plain[i][p])) > 1e-4 {
				differ++
			}
		}
	}
	if differ == 0 {
		t.Fatal("masked and unmasked plan log-probs agree everywhere")
	}
	cfg := tinyConfig()
	cfg.CellTokens, cfg.CellBag = nil, false
	b, err := mlx.NewBackend("")
	if err != nil {
		t.Fatal(err)
	}
	bare, err := New(b, cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bare.Sample(req); err == nil || !strings.Contains(err.Error(), "cell_tokens") {
		t.Fatalf("model without cell words: %v, want an error naming cell_tokens", err)
	}
}

// The KV-cache path and the full forward pass sample the same tokens with the same log-probs.
func TestKVCacheMatchesFullForward(t *testing.T) {
	m := tinyModel(t, 2)
	req := SampleRequest{Prompts: tinyPrompts, G: 2, Seed: 9, CFGWeight: 2}
	a, err := m.Sample(req)
	if err != nil {
		t.Fatal(err)
	}
	req.FullForward = true
	b, err := m.Sample(req)
	if err != nil {
		t.Fatal(err)
	}
	for i := range a {
		if !slices.Equal(a[i].Tokens, b[i].Tokens) {
			t.Fatalf("sample %d: kv %v vs full %v", i, a[i].Tokens, b[i].Tokens)
		}
		for p := range a[i].ImageLogp {
			if d := math.Abs(float64(a[i].ImageLogp[p] - b[i].ImageLogp[p])); d > 1e-4 {
				t.Fatalf("sample %d image %d: %g vs %g", i, p, a[i].ImageLogp[p], b[i].ImageLogp[p])
			}
		}
	}
}

// A sample depends on (seed, step, prompt id, sample index) only, not on the batch it is in.
func TestSampleDeterministicAcrossBatches(t *testing.T) {
	m := tinyModel(t, 3)
	base := SampleRequest{Prompts: tinyPrompts, PromptIDs: []uint64{10, 11, 12}, G: 3, Seed: 7, Step: 4, CFGWeight: 2}
	all, err := m.Sample(base)
	if err != nil {
		t.Fatal(err)
	}
	// Prompt 12 alone, with a smaller group, and prompt 11 in a different order with other company.
	alone, err := m.Sample(SampleRequest{Prompts: tinyPrompts[2:], PromptIDs: []uint64{12}, G: 2, Seed: 7, Step: 4, CFGWeight: 2})
	if err != nil {
		t.Fatal(err)
	}
	mixed, err := m.Sample(SampleRequest{Prompts: [][]int32{tinyPrompts[0], tinyPrompts[1]}, PromptIDs: []uint64{99, 11}, G: 3, Seed: 7, Step: 4, CFGWeight: 2})
	if err != nil {
		t.Fatal(err)
	}
	same := func(x, y Sample) {
		t.Helper()
		if !slices.Equal(x.Tokens, y.Tokens) {
			t.Fatalf("tokens differ:\n%v\n%v", x.Tokens, y.Tokens)
		}
		for p := range x.ImageLogp {
			if d := math.Abs(float64(x.ImageLogp[p] - y.ImageLogp[p])); d > 1e-5 {
				t.Fatalf("image logp %d differs by %g", p, d)
			}
		}
	}
	same(all[6], alone[0])
	same(all[7], alone[1])
	for j := 0; j < 3; j++ {
		same(all[3+j], mixed[3+j])
	}
	// A different step or seed changes the draws.
	other, err := m.Sample(SampleRequest{Prompts: tinyPrompts[2:], PromptIDs: []uint64{12}, G: 1, Seed: 7, Step: 5, CFGWeight: 2})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(other[0].Tokens, all[6].Tokens) {
		t.Fatal("step did not change the sample")
	}
}

// Recording the conditional log-probs must not change what is drawn: the same tokens as with the
// guided record, only different logp_old.
func TestConditionalLogpDrawsTheSameTokens(t *testing.T) {
	m := tinyModel(t, 1)
	req := SampleRequest{Prompts: tinyPrompts, G: 3, Seed: 5, CFGWeight: 3}
	guided, err := m.Sample(req)
	if err != nil {
		t.Fatal(err)
	}
	req.ConditionalLogp = true
	cond, err := m.Sample(req)
	if err != nil {
		t.Fatal(err)
	}
	differ := 0
	for i := range guided {
		if !slices.Equal(guided[i].Tokens, cond[i].Tokens) {
			t.Fatalf("sample %d: tokens differ", i)
		}
		if !slices.Equal(guided[i].TextLogp, cond[i].TextLogp) {
			t.Fatalf("sample %d: text log-probs differ", i)
		}
		for p := range guided[i].ImageLogp {
			if guided[i].ImageLogp[p] != cond[i].ImageLogp[p] {
				differ++
			}
		}
	}
	if differ == 0 {
		t.Fatal("conditional image log-probs equal the guided ones everywhere")
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

// A checkpoint whose config claims a model far larger than its tensors is refused before the
// model is built (a rollout worker loads whatever checkpoint a policy announcement names).
func TestLoadRefusesAnOversizedConfig(t *testing.T) {
	m := tinyModel(t, 1)
	var buf bytes.Buffer
	if err := m.Save(&buf, SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	// The config is JSON inside the header's JSON: its quotes are escaped.
	f, err := tensorfile.Parse(buf.Bytes(), tensorfile.Options{Checksum: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg := m.Config
	cfg.Layers = 90_000_000
	cj, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.Metadata["config"] = string(cj)
	b, err := tensorfile.Encode(f, tensorfile.Options{Checksum: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseCheckpoint(b); err != nil {
		t.Fatalf("the edited checkpoint does not parse: %v", err)
	}
	backend, err := mlx.NewBackend("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(backend, b); err == nil || !strings.Contains(err.Error(), "implies") {
		t.Fatalf("Load: %v, want a refusal naming the implied size", err)
	}
}
