package promptgen

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"

	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/scene"
)

// Split names a benchmark file.
type Split string

// The splits: Train prompts never ask for a held-out combination, Eval prompts always do, and RL
// prompts ask for one as Eval prompts do, with texts that no Eval prompt has (GenerateRL).
//
// Train is what the base policy is pretrained on; RL is what reinforcement learning samples from.
// That is T2I-R1's arrangement: its base never saw the benchmark's prompts, and RL trains on
// prompts of the benchmark's own distribution (T2I-CompBench's training prompts), text only, and
// is measured on other prompts of that distribution. An RL run on Train prompts has nothing to
// learn that the base lacks: every binding there was pretrained (docs/learner.md measures it).
const (
	Train Split = "train"
	Eval  Split = "eval"
	RL    Split = "rl"
)

// Default sizes and seed of the committed files data/prompts/{train,eval,rl}.jsonl.
const (
	DefaultSeed         = 1
	DefaultTrainPerType = 600
	DefaultEvalPerType  = 120
	DefaultRLPerType    = 400
)

// stream derives a PCG stream from a split and a name, so that each task type's draws are
// independent of how many prompts the other types needed.
func stream(seed uint64, split Split, name string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(string(split) + "/" + name))
	return rand.New(rand.NewPCG(seed, h.Sum64()))
}

// rlStaleDraws is how many draws in a row may bring no new RL prompt text before a task type is
// declared exhausted: some types have few held-out prompts beyond those of the eval split (object
// prompts none at all), and those types then contribute what there is.
const rlStaleDraws = 5000

// GenerateRL draws up to perType prompts of every task type that ask for a held-out combination,
// each text distinct and absent from exclude (the eval split's prompts), shuffled across task
// types. A type whose held-out prompts are used up by exclude contributes fewer, or none. The
// result depends only on (seed, perType, exclude's texts).
func GenerateRL(seed uint64, perType int, exclude []prompts.Prompt) ([]prompts.Prompt, error) {
	if perType < 1 {
		return nil, fmt.Errorf("promptgen: %d prompts per task type, want >= 1", perType)
	}
	taken := map[string]bool{}
	for _, p := range exclude {
		taken[p.Prompt] = true
	}
	var out []prompts.Prompt
	for _, tt := range prompts.TaskTypes {
		rng := stream(seed, RL, tt)
		n, stale := 0, 0
		for n < perType && stale < rlStaleDraws {
			p, err := Generate(tt, rng)
			if err != nil {
				return nil, err
			}
			if !HeldOutSpec(*p.Spec) || taken[p.Prompt] {
				stale++
				continue
			}
			stale = 0
			taken[p.Prompt] = true
			out = append(out, p)
			n++
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("promptgen: rl split: every held-out prompt is excluded")
	}
	order := stream(seed, RL, "order")
	order.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out, nil
}

// maxDrawsPerPrompt bounds rejection sampling; the rarest case (eval object prompts) needs about
// five draws per accepted prompt.
const maxDrawsPerPrompt = 1000

// distinctTries is how many draws an eval prompt gets to find a text not yet in the split before
// a repeat is accepted (some task types have fewer distinct held-out prompts than requested).
const distinctTries = 200

// GenerateSplit draws perType prompts of every task type (prompts.TaskTypes) for the split.
// Train prompts are filtered to ask for no held-out combination and to admit a TrainingScene on
// the default grid; they are shuffled across task types. Eval prompts each ask for at least one
// held-out combination, are distinct where the type allows, and stay grouped by task type. The
// result depends only on (split, seed, perType).
func GenerateSplit(split Split, seed uint64, perType int) ([]prompts.Prompt, error) {
	if split != Train && split != Eval {
		return nil, fmt.Errorf("promptgen: unknown split %q", split)
	}
	if perType < 1 {
		return nil, fmt.Errorf("promptgen: %d prompts per task type, want >= 1", perType)
	}
	cfg := scene.DefaultConfig()
	var out []prompts.Prompt
	for _, tt := range prompts.TaskTypes {
		rng := stream(seed, split, tt)
		check := stream(seed, split, tt+"/scene")
		seen := map[string]bool{}
		var got []prompts.Prompt
		draws, sinceNew := 0, 0
		for len(got) < perType {
			draws++
			if draws > perType*maxDrawsPerPrompt {
				return nil, fmt.Errorf("promptgen: %s %s: only %d of %d prompts after %d draws", split, tt, len(got), perType, draws-1)
			}
			p, err := Generate(tt, rng)
			if err != nil {
				return nil, err
			}
			held := HeldOutSpec(*p.Spec)
			if split == Train {
				if held {
					continue
				}
				if _, err := CleanScene(p, cfg, check); err != nil {
					continue
				}
			} else {
				if !held {
					continue
				}
				if seen[p.Prompt] && sinceNew < distinctTries {
					sinceNew++
					continue
				}
			}
			sinceNew = 0
			seen[p.Prompt] = true
			got = append(got, p)
		}
		out = append(out, got...)
	}
	if split == Train {
		order := stream(seed, split, "order")
		order.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	}
	return out, nil
}

// TrainingScene draws the scene pretraining pairs with a training prompt: one that satisfies
// p.Spec, with the attributes and cells the spec leaves open drawn uniformly from rng. It fails for
// a prompt without a spec and for one that asks for a held-out combination.
//
// "Held out" means never asked for: no training prompt requests a held-out combination, but an
// open attribute may form one in the picture ("a cross" may be drawn purple, and its plan then
// says so). That is the split of T2I-CompBench, where a model has seen purple things and crosses,
// maybe purple crosses, but never a prompt binding the two. Hiding the combinations from the
// pictures as well would leave codes (a purple cross is one VQ code) that the base policy never
// saw as a target, so no policy could ever draw them and no reward could teach it to.
func TrainingScene(p prompts.Prompt, cfg scene.Config, rng *rand.Rand) (scene.Scene, error) {
	if p.Spec == nil {
		return scene.Scene{}, fmt.Errorf("training scene for %q: prompt has no spec", p.Prompt)
	}
	if err := cfg.Validate(); err != nil {
		return scene.Scene{}, fmt.Errorf("training scene for %q: %w", p.Prompt, err)
	}
	if err := p.Spec.Validate(); err != nil {
		return scene.Scene{}, fmt.Errorf("training scene for %q: %w", p.Prompt, err)
	}
	if why := SpecHeldOut(*p.Spec); why != "" {
		return scene.Scene{}, fmt.Errorf("training scene for %q: prompt asks for held-out %s", p.Prompt, why)
	}
	sc, err := p.Spec.Sample(cfg, rng)
	if err != nil {
		return scene.Scene{}, fmt.Errorf("training scene for %q: %w", p.Prompt, err)
	}
	return sc, nil
}

// CleanScene draws a scene that satisfies p.Spec and shows no held-out combination at all: the
// attributes the spec leaves open (and the cells) are drawn from rng among those that form no
// held-out pair, and layouts with a held-out relation between any two objects are redrawn. The
// train split keeps only prompts that have such a scene. It fails for a prompt without a spec, a
// spec that asks for a held-out combination, and one whose relations cannot be met otherwise.
func CleanScene(p prompts.Prompt, cfg scene.Config, rng *rand.Rand) (scene.Scene, error) {
	if p.Spec == nil {
		return scene.Scene{}, fmt.Errorf("training scene for %q: prompt has no spec", p.Prompt)
	}
	if err := cfg.Validate(); err != nil {
		return scene.Scene{}, fmt.Errorf("training scene for %q: %w", p.Prompt, err)
	}
	sp := *p.Spec
	if err := sp.Validate(); err != nil {
		return scene.Scene{}, fmt.Errorf("training scene for %q: %w", p.Prompt, err)
	}
	if why := SpecHeldOut(sp); why != "" {
		return scene.Scene{}, fmt.Errorf("training scene for %q: prompt asks for held-out %s", p.Prompt, why)
	}
	if sp.Total() > cfg.Cells() {
		return scene.Scene{}, fmt.Errorf("training scene for %q: %d objects on %d cells", p.Prompt, sp.Total(), cfg.Cells())
	}
	for range 50 {
		objs, err := drawObjects(sp, rng)
		if err != nil {
			return scene.Scene{}, fmt.Errorf("training scene for %q: %w", p.Prompt, err)
		}
		if objs == nil {
			continue
		}
		for range 100 {
			cells := rng.Perm(cfg.Cells())
			sc := scene.Scene{Objects: make([]scene.Object, len(objs))}
			for i, o := range objs {
				o.Row, o.Col = cells[i]/cfg.Grid, cells[i]%cfg.Grid
				sc.Objects[i] = o
			}
			if sp.Satisfied(sc) && !HeldOutScene(sc) {
				return sc, nil
			}
		}
	}
	return scene.Scene{}, fmt.Errorf("training scene for %q: no layout on a %dx%d grid meets the spec without a held-out relation", p.Prompt, cfg.Grid, cfg.Grid)
}

// drawObjects fills each spec group's open attributes with values that form no held-out pair. It
// returns nil objects (no error) when the drawn shapes happen to form a held-out pair, for the
// caller to draw again.
func drawObjects(sp scene.Spec, rng *rand.Rand) ([]scene.Object, error) {
	var objs []scene.Object
	for gi, g := range sp.Objects {
		for range g.Count {
			var shapes []scene.Shape
			for _, s := range scene.Shapes {
				if (g.Shape == "" || g.Shape == s) && objHeldOut(g.Colour, g.Texture, g.Size, s) == "" {
					shapes = append(shapes, s)
				}
			}
			if len(shapes) == 0 {
				return nil, fmt.Errorf("spec object %d: every shape forms a held-out pair with its attributes", gi)
			}
			o := scene.Object{Shape: pickOne(rng, shapes)}
			o.Colour = pickAllowed(rng, g.Colour, scene.Colours, func(c scene.Colour) bool { return HeldOutColourShape(c, o.Shape) })
			o.Texture = pickAllowed(rng, g.Texture, scene.Textures, func(t scene.Texture) bool { return HeldOutTextureShape(t, o.Shape) })
			o.Size = pickAllowed(rng, g.Size, scene.Sizes, func(z scene.Size) bool { return HeldOutSizeShape(z, o.Shape) })
			if o.Colour == "" || o.Texture == "" || o.Size == "" {
				return nil, errors.New("an attribute has no value outside the held-out pairs")
			}
			objs = append(objs, o)
		}
	}
	for i, a := range objs {
		for _, b := range objs[i+1:] {
			if HeldOutPair(a.Shape, b.Shape) {
				return nil, nil
			}
		}
	}
	return objs, nil
}

// pickAllowed returns fixed when set, else a random value of all that held does not reject ("" if
// none is left).
func pickAllowed[T ~string](rng *rand.Rand, fixed T, all []T, held func(T) bool) T {
	if fixed != "" {
		return fixed
	}
	var ok []T
	for _, v := range all {
		if !held(v) {
			ok = append(ok, v)
		}
	}
	if len(ok) == 0 {
		return ""
	}
	return pickOne(rng, ok)
}
