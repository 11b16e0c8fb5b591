package tokenizer

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/plan"
	"github.com/bicot-rl/bicot/pkg/promptgen"
	"github.com/bicot-rl/bicot/pkg/scene"
)

func TestVocabStable(t *testing.T) {
	a, b := New(), New()
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two vocabularies differ")
	}
	if a.Size() != NumSpecial+len(a.Words()) {
		t.Fatalf("size %d", a.Size())
	}
	for id, name := range []string{"<pad>", "<bos>", "<eos>", "<unk>", "<plan>", "<img_start>", "<img_end>", "<uncond>"} {
		if got, ok := a.Token(id); !ok || got != name || !a.IsSpecial(id) {
			t.Fatalf("special %d is %q", id, got)
		}
	}
	if a.BOS() != BOS || a.EOS() != EOS || a.Pad() != Pad || a.Unk() != Unk || a.Plan() != Plan ||
		a.ImgStart() != ImgStart || a.ImgEnd() != ImgEnd || a.Uncond() != Uncond {
		t.Fatal("special id methods")
	}
	seen := map[int]bool{}
	for _, w := range a.Words() {
		id, ok := a.ID(w)
		if !ok || id < NumSpecial || seen[id] {
			t.Fatalf("word %q id %d", w, id)
		}
		seen[id] = true
		if tok, _ := a.Token(id); tok != w {
			t.Fatalf("Token(%d) = %q, want %q", id, tok, w)
		}
	}
	if _, ok := a.ID("<bos>"); ok {
		t.Fatal("special name encodes as a word")
	}
	if _, ok := a.Token(a.Size()); ok {
		t.Fatal("id past the end has a token")
	}
}

func TestUnknownWords(t *testing.T) {
	v := New()
	_, err := v.Encode("a pink circle")
	if err == nil || !strings.Contains(err.Error(), `unknown word "pink"`) {
		t.Fatalf("err %v", err)
	}
	ids := v.EncodeLoose("A pink circle!")
	if len(ids) != 4 || ids[1] != Unk || ids[3] != Unk {
		t.Fatalf("%v", ids)
	}
	if got := v.Decode(ids); got != "a <unk> circle <unk>" {
		t.Fatalf("decode %q", got)
	}
}

func TestPunctuationAndCase(t *testing.T) {
	v := New()
	ids, err := v.Encode("Large RED solid circle a1,small blue striped square c2.")
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 12 {
		t.Fatalf("%d ids", len(ids))
	}
	comma, _ := v.ID(",")
	if ids[5] != comma {
		t.Fatalf("comma not its own token: %v", ids)
	}
	if got := v.Decode(ids); got != "large red solid circle a1, small blue striped square c2." {
		t.Fatalf("decode %q", got)
	}
	// Specials are left out of decoded text; out-of-range ids show as unknown.
	wrapped := append(append([]int{BOS}, ids[:5]...), Plan, EOS, Pad, -1, v.Size())
	if got := v.Decode(wrapped); got != "large red solid circle a1 <unk> <unk>" {
		t.Fatalf("decode %q", got)
	}
}

// Every benchmark prompt and the plan of a scene for it encode without an unknown word, decode
// back to the same words, and fit the policy's text budget with its three special tokens.
func TestCoversBenchmark(t *testing.T) {
	v := New()
	train, err := promptgen.GenerateSplit(promptgen.Train, promptgen.DefaultSeed, promptgen.DefaultTrainPerType)
	if err != nil {
		t.Fatal(err)
	}
	eval, err := promptgen.GenerateSplit(promptgen.Eval, promptgen.DefaultSeed, promptgen.DefaultEvalPerType)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	cfg := scene.DefaultConfig()
	for _, p := range append(train, eval...) {
		sc, err := p.Spec.Sample(cfg, rng)
		if err != nil {
			t.Fatal(err)
		}
		pl := plan.Canonical(sc)
		var total int
		for _, text := range []string{p.Prompt, pl} {
			ids, err := v.Encode(text)
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(ids, Unk) {
				t.Fatalf("%q encodes with unk", text)
			}
			if got := v.Decode(ids); got != text {
				t.Fatalf("decode(encode(%q)) = %q", text, got)
			}
			total += len(ids)
		}
		if total+3 > 48 {
			t.Fatalf("%q + %q: %d tokens + 3 specials > 48", p.Prompt, pl, total)
		}
	}
	for _, w := range append(promptgen.Words(), plan.Words()...) {
		if _, ok := v.ID(w); !ok {
			t.Fatalf("generator word %q missing", w)
		}
	}
}
