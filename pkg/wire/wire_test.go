package wire_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/wire"
)

func TestEncodePrompt(t *testing.T) {
	vocab := tokenizer.New()
	ids, err := wire.EncodePrompt(vocab, "a red circle")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := vocab.Encode("a red circle")
	if len(ids) != len(want) || len(ids) == 0 {
		t.Fatalf("ids %v, want %v", ids, want)
	}
	for i := range ids {
		if int(ids[i]) != want[i] {
			t.Fatalf("ids %v, want %v", ids, want)
		}
	}
	if _, err := wire.EncodePrompt(vocab, "a zorgly circle"); err == nil {
		t.Error("an unknown word was encoded; it must be an error, never unk")
	}
}

// FromSample carries the plan after [plan] up to and including a sampled end-of-text, and the
// image codes with their log-probs; a sample without [plan] or with the wrong code count is refused.
func TestFromSample(t *testing.T) {
	cfg := model.Config{TextLen: 8, ImageTokens: 3, Special: model.Specials{Plan: 3, EOS: 2}}
	s := model.Sample{
		Tokens:    []int32{1, 10, 11, 3, 20, 21, 2, 0},
		TextMask:  []float32{0, 0, 0, 0, 1, 1, 1, 0},
		TextLogp:  []float32{0, 0, 0, 0, -0.5, -0.25, -0.125, 0},
		Codes:     []int{4, 5, 6},
		ImageLogp: []float32{-1, -2, -3},
	}
	var out bus.Sample
	if err := wire.FromSample(cfg, s, &out); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(out.PlanTokens, []int32{20, 21, 2}) || !slices.Equal(out.PlanLogp, []float32{-0.5, -0.25, -0.125}) || out.PlanLen != 3 {
		t.Errorf("plan %v %v len %d", out.PlanTokens, out.PlanLogp, out.PlanLen)
	}
	if !slices.Equal(out.ImageTokens, []int32{4, 5, 6}) || !slices.Equal(out.ImageLogp, []float32{-1, -2, -3}) {
		t.Errorf("image %v %v", out.ImageTokens, out.ImageLogp)
	}
	noPlan := s
	noPlan.Tokens = []int32{1, 10, 11, 12, 20, 21, 2, 0}
	if err := wire.FromSample(cfg, noPlan, &out); err == nil || !strings.Contains(err.Error(), "[plan]") {
		t.Errorf("sample without [plan]: %v", err)
	}
	short := s
	short.Codes = []int{4, 5}
	if err := wire.FromSample(cfg, short, &out); err == nil || !strings.Contains(err.Error(), "codes") {
		t.Errorf("sample with 2 codes: %v", err)
	}
}

// SampleRequest carries every sampling setting into the model's request.
func TestSampleRequest(t *testing.T) {
	got := wire.SampleRequest(bus.SamplingParams{Temperature: 0.7, CFGWeight: 3, MaxPlanTokens: 24,
		ImageLogp: config.ImageLogpConditional, ExclusiveCells: true})
	want := model.SampleRequest{Temperature: 0.7, CFGWeight: 3, MaxPlanTokens: 24, ConditionalLogp: true, ExclusiveCells: true}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("request %+v, want %+v", got, want)
	}
	got = wire.SampleRequest(bus.SamplingParams{Temperature: 1, ImageLogp: config.ImageLogpGuided})
	want = model.SampleRequest{Temperature: 1, NoPlan: true}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("no plan, guided log-probs: request %+v, want %+v", got, want)
	}
}
