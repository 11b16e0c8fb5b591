package experts

import (
	"hash/fnv"
	"strings"
	"unicode"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/bicot-rl/bicot/pkg/scene"
)

// Text encoding. Words of the scene world (attribute values, their plurals, relation and count
// words, the glue of prompts) get fixed ids; any other word falls into one of hashBuckets ids by an
// FNV hash, so that knowledge prompts ("the color of grass") and foreign text still encode
// deterministically. Id 0 pads.
const (
	MaxWords    = 20
	hashBuckets = 64
)

var glueWords = []string{
	"a", "an", "the", "and", "of", "with", "to", "on", "is", "in", "one", "two", "three", "four",
	"left", "right", "above", "below", "next", "far", "from", "top", "bottom", "near", "under",
	"color", "colour", "shape", "image", "photo", "picture",
}

// vocab maps known words to ids >= 1.
type vocab map[string]int32

func newVocab() vocab {
	v := vocab{}
	add := func(w string) {
		if _, ok := v[w]; !ok {
			v[w] = int32(len(v) + 1)
		}
	}
	for _, s := range scene.Shapes {
		add(string(s))
		if s == scene.Cross {
			add(string(s) + "es")
		} else {
			add(string(s) + "s")
		}
	}
	for _, c := range scene.Colours {
		add(string(c))
	}
	for _, s := range scene.Sizes {
		add(string(s))
	}
	for _, t := range scene.Textures {
		add(string(t))
	}
	for _, w := range glueWords {
		add(w)
	}
	return v
}

// size is the number of ids, padding and hash buckets included.
func (v vocab) size() int { return len(v) + 1 + hashBuckets }

// words splits text into lower-case words.
func words(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return !unicode.IsLetter(r) })
}

// encode writes the first MaxWords word ids of s into dst (len MaxWords), zero-padded.
func (v vocab) encode(s string, dst []int32) {
	clear(dst)
	for i, w := range words(s) {
		if i == MaxWords {
			break
		}
		id, ok := v[w]
		if !ok {
			h := fnv.New32a()
			_, _ = h.Write([]byte(w))
			id = int32(len(v)+1) + int32(h.Sum32()%hashBuckets)
		}
		dst[i] = id
	}
}

// questionAttrs encodes the attribute words of a question ("small striped red circle?") as a
// multi-hot vector; plurals count as their shape.
func questionAttrs(q string, dst []float32) {
	clear(dst)
	for _, w := range words(q) {
		if i := attrIndex(w); i >= 0 {
			dst[i] = 1
		}
	}
}

func attrIndex(w string) int {
	for i, s := range scene.Shapes {
		if w == string(s) || w == string(s)+"s" || w == string(s)+"es" {
			return i
		}
	}
	if i := scene.Index(scene.Colours, scene.Colour(w)); i >= 0 {
		return 5 + i
	}
	if i := scene.Index(scene.Sizes, scene.Size(w)); i >= 0 {
		return 11 + i
	}
	if i := scene.Index(scene.Textures, scene.Texture(w)); i >= 0 {
		return 13 + i
	}
	return -1
}

// encodeWindows writes, for each of the first MaxWords words of s, the ids of the wordWindow
// words centred on it (dst [MaxWords*wordWindow], 0 outside the text) and 1 in mask [MaxWords]
// for every real word.
func (v vocab) encodeWindows(s string, dst []int32, mask []float32) {
	var ids [MaxWords]int32
	v.encode(s, ids[:])
	clear(dst)
	clear(mask)
	half := wordWindow / 2
	for i := range MaxWords {
		if ids[i] == 0 {
			continue
		}
		mask[i] = 1
		for k := -half; k <= half; k++ {
			if j := i + k; j >= 0 && j < MaxWords {
				dst[i*wordWindow+k+half] = ids[j]
			}
		}
	}
}

// textBatch encodes texts padded to n rows as the pair models' word-window and mask inputs.
func (v vocab) textBatch(texts []string, n int) (windows, mask *tensors.Tensor) {
	w := make([]int32, n*MaxWords*wordWindow)
	m := make([]float32, n*MaxWords)
	for i, s := range texts {
		v.encodeWindows(s, w[i*MaxWords*wordWindow:(i+1)*MaxWords*wordWindow], m[i*MaxWords:(i+1)*MaxWords])
	}
	return textTensors(w, m, n)
}

func textTensors(w []int32, m []float32, n int) (windows, mask *tensors.Tensor) {
	return tensors.FromFlatDataAndDimensions(w, n, MaxWords, wordWindow), tensors.FromFlatDataAndDimensions(m, n, MaxWords)
}
