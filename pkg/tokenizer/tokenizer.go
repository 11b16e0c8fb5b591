// Package tokenizer is the word-level text vocabulary shared by prompts and plans of the scene
// world. The policy places these ids first in its joint text+image vocabulary.
//
// The vocabulary is built from the prompt generators' and the plan's word lists (promptgen.Words,
// plan.Words), never from a data file, so it is the same on every machine and covers every text
// those packages can produce. Ids: the eight special tokens first (Pad=0 ... Uncond=7), then the
// words in sorted order.
//
// Text handling: text is lower-cased and split at white space; every character that is not a
// letter, digit, apostrophe or hyphen is a word of its own, so "circle, square." is
// ["circle" "," "square" "."]. Comma and full stop are in the vocabulary (plans separate objects
// with commas); other punctuation is unknown. Unknown words: Encode fails naming the first one,
// EncodeLoose maps each to Unk.
package tokenizer

import (
	"fmt"
	"slices"
	"strings"

	"github.com/bicot-rl/bicot/pkg/plan"
	"github.com/bicot-rl/bicot/pkg/promptgen"
)

// Special token ids.
const (
	Pad      = 0 // padding, masked everywhere
	BOS      = 1 // start of a sequence
	EOS      = 2 // end of the plan text
	Unk      = 3 // a word outside the vocabulary (EncodeLoose only)
	Plan     = 4 // separator between the prompt and the plan
	ImgStart = 5 // start of the image tokens
	ImgEnd   = 6 // end of the image tokens
	Uncond   = 7 // the unconditional context for classifier-free guidance
	// NumSpecial is the number of special tokens; words start at this id.
	NumSpecial = 8
)

// specialNames are how Decode and Token show special tokens.
var specialNames = [NumSpecial]string{"<pad>", "<bos>", "<eos>", "<unk>", "<plan>", "<img_start>", "<img_end>", "<uncond>"}

// Vocab maps words to ids and back. It is immutable and safe for concurrent use.
type Vocab struct {
	words []string // by id; specials included
	ids   map[string]int
}

// New builds the vocabulary.
func New() *Vocab {
	words := append(promptgen.Words(), plan.Words()...)
	slices.Sort(words)
	words = slices.Compact(words)
	v := &Vocab{words: append(specialNames[:], words...), ids: make(map[string]int, len(words))}
	for i, w := range words {
		v.ids[w] = NumSpecial + i
	}
	return v
}

// Size is the number of ids, specials included.
func (v *Vocab) Size() int { return len(v.words) }

// Pad returns the padding id. The special-id methods serve callers that hold a *Vocab; they
// return the package constants.
func (v *Vocab) Pad() int { return Pad }

// BOS returns the start-of-sequence id.
func (v *Vocab) BOS() int { return BOS }

// EOS returns the end-of-text id.
func (v *Vocab) EOS() int { return EOS }

// Unk returns the unknown-word id.
func (v *Vocab) Unk() int { return Unk }

// Plan returns the id separating prompt and plan.
func (v *Vocab) Plan() int { return Plan }

// ImgStart returns the image-start id.
func (v *Vocab) ImgStart() int { return ImgStart }

// ImgEnd returns the image-end id.
func (v *Vocab) ImgEnd() int { return ImgEnd }

// Uncond returns the unconditional-context id used for classifier-free guidance.
func (v *Vocab) Uncond() int { return Uncond }

// IsSpecial reports whether id is one of the special tokens.
func (v *Vocab) IsSpecial(id int) bool { return id >= 0 && id < NumSpecial }

// Split lower-cases text and splits it into words as the vocabulary sees them.
func Split(text string) []string { return plan.Fields(text) }

// ID returns a word's id (the word as Split produces it).
func (v *Vocab) ID(word string) (int, bool) {
	id, ok := v.ids[word]
	return id, ok
}

// Token returns the word or special name ("<bos>") of an id, and false for an id out of range.
func (v *Vocab) Token(id int) (string, bool) {
	if id < 0 || id >= len(v.words) {
		return "", false
	}
	return v.words[id], true
}

// Encode returns the ids of text's words; it fails on the first word outside the vocabulary,
// naming it.
func (v *Vocab) Encode(text string) ([]int, error) {
	ws := Split(text)
	ids := make([]int, len(ws))
	for i, w := range ws {
		id, ok := v.ids[w]
		if !ok {
			return nil, fmt.Errorf("tokenize %q: unknown word %q", text, w)
		}
		ids[i] = id
	}
	return ids, nil
}

// EncodeLoose returns the ids of text's words, Unk for each word outside the vocabulary.
func (v *Vocab) EncodeLoose(text string) []int {
	ws := Split(text)
	ids := make([]int, len(ws))
	for i, w := range ws {
		id, ok := v.ids[w]
		if !ok {
			id = Unk
		}
		ids[i] = id
	}
	return ids
}

// Decode renders ids as text: words separated by spaces, with comma and full stop attached to the
// word before. Special tokens are left out except Unk, shown as "<unk>"; ids out of range show as
// "<unk>" too. For any text Encode accepts, Decode(Encode(text)) equals the text's words rejoined
// this way, and encodes back to the same ids.
func (v *Vocab) Decode(ids []int) string {
	var b strings.Builder
	for _, id := range ids {
		var w string
		switch {
		case id < 0 || id >= len(v.words) || id == Unk:
			w = specialNames[Unk]
		case id < NumSpecial:
			continue
		default:
			w = v.words[id]
		}
		if b.Len() > 0 && w != "," && w != "." {
			b.WriteByte(' ')
		}
		b.WriteString(w)
	}
	return b.String()
}

// Words returns the vocabulary's words (no specials) in id order.
func (v *Vocab) Words() []string { return slices.Clone(v.words[NumSpecial:]) }
