package oracle

import (
	"fmt"
	"image"

	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/scene"
)

// PartialCredit is the most an image that does not exactly satisfy its prompt can score. Strict
// correctness (GenEval's rule) keeps constraint-only gains from counting: an image with the asked
// objects plus extra ones is wrong, however many constraints it meets.
const PartialCredit = 0.1

// Checks is the per-check breakdown of one score, the numbers an evaluation report prints.
type Checks struct {
	// Requested is the number of objects the spec asks for; Found the number of things in the image
	// (recognised objects plus unknown cells); Unknown the unknown cells among them.
	Requested int `json:"requested"`
	Found     int `json:"found"`
	Unknown   int `json:"unknown"`
	// Shapes is how many requested objects have an object of the right shape (the noun is there,
	// as a detector would see it); Bound how many have an object with every requested attribute,
	// each image object used at most once (a maximum matching).
	Shapes int `json:"shapes"`
	Bound  int `json:"bound"`
	// Extra counts image objects (unknown ones included) outside that matching; Missing the
	// requested objects outside it.
	Extra   int `json:"extra"`
	Missing int `json:"missing"`
	// CountOK: the image holds exactly as many objects as requested.
	CountOK bool `json:"count_ok"`
	// Relations is the number of relations asked; RelationsHeld how many hold between some pair of
	// image objects that fit their two sides.
	Relations     int `json:"relations"`
	RelationsHeld int `json:"relations_held"`
	// Exact: no unknown cells and the recognised scene satisfies the spec (scene.Spec.Satisfied:
	// the requested objects, nothing else, every relation holding under one assignment).
	Exact bool `json:"exact"`
}

// Result is the oracle's verdict on one image for one prompt.
type Result struct {
	TaskType string  `json:"task_type"`
	Score    float64 `json:"score"`
	Checks   Checks  `json:"checks"`
}

// Score parses img and scores it against the prompt's spec.
func (p *Parser) Score(pr prompts.Prompt, img image.Image) (Result, error) {
	parsed, err := p.Parse(img)
	if err != nil {
		return Result{}, err
	}
	return ScoreParsed(pr, parsed)
}

// Score parses img with a parser for cfg and scores it against the prompt's spec.
func Score(cfg scene.Config, pr prompts.Prompt, img image.Image) (Result, error) {
	p, err := NewParser(cfg)
	if err != nil {
		return Result{}, err
	}
	return p.Score(pr, img)
}

// ScoreScene scores a scene known exactly (no unknown cells), for instance a planned layout.
func ScoreScene(pr prompts.Prompt, sc scene.Scene) (Result, error) {
	parsed := Parsed{Objects: make([]Detection, len(sc.Objects))}
	for i, o := range sc.Objects {
		parsed.Objects[i] = Detection{Object: o}
	}
	return ScoreParsed(pr, parsed)
}

// ScoreParsed scores a parsed image against the prompt's spec. The score is 1 when the image is
// exactly what the spec asks for; otherwise PartialCredit times the mean of the bound fraction and
// (when relations are asked) the held-relation fraction, scaled by Requested/(Requested+Extra) so
// that extra objects always cost. A prompt without a valid spec is an error: the oracle judges only
// prompts of the scene world.
func ScoreParsed(pr prompts.Prompt, parsed Parsed) (Result, error) {
	if pr.Spec == nil {
		return Result{}, fmt.Errorf("oracle score %q: prompt has no spec", pr.Prompt)
	}
	spec := *pr.Spec
	if err := spec.Validate(); err != nil {
		return Result{}, fmt.Errorf("oracle score %q: %w", pr.Prompt, err)
	}
	sc := parsed.Scene()
	ch := Checks{
		Requested: spec.Total(),
		Found:     parsed.Count(),
		Unknown:   len(parsed.Unknown),
		Relations: len(spec.Relations),
	}
	ch.Bound = matching(spec.Objects, sc.Objects)
	ch.Shapes = matching(shapesOnly(spec.Objects), sc.Objects)
	ch.Extra = ch.Found - ch.Bound
	ch.Missing = ch.Requested - ch.Bound
	ch.CountOK = ch.Found == ch.Requested
	for _, r := range spec.Relations {
		if relationHolds(spec, r, sc.Objects) {
			ch.RelationsHeld++
		}
	}
	ch.Exact = ch.Unknown == 0 && spec.Satisfied(sc)
	res := Result{TaskType: pr.TaskType, Checks: ch}
	if ch.Exact {
		res.Score = 1
		return res, nil
	}
	res.Score = PartialCredit * ch.Part()
	return res, nil
}

// Part is the fraction of the prompt an image meets, in [0, 1]: the mean of the bound fraction
// and (when relations are asked) the held-relation fraction, scaled by Requested/(Requested+Extra)
// so that extra objects always cost. An inexact image scores PartialCredit times it.
func (ch Checks) Part() float64 {
	if ch.Requested <= 0 {
		return 0
	}
	part := float64(ch.Bound) / float64(ch.Requested)
	if ch.Relations > 0 {
		part = (part + float64(ch.RelationsHeld)/float64(ch.Relations)) / 2
	}
	return part * float64(ch.Requested) / float64(ch.Requested+ch.Extra)
}

// WithPartialCredit is the result's score with partial credit pc in place of PartialCredit: 1 for
// an exact image, pc times Checks.Part otherwise. The evaluation keeps PartialCredit (strict
// correctness); a reward may want a denser signal from the same verdict.
func (r Result) WithPartialCredit(pc float64) float64 {
	if r.Checks.Exact {
		return 1
	}
	return pc * r.Checks.Part()
}

// shapesOnly drops every constraint but the shape.
func shapesOnly(groups []scene.ObjSpec) []scene.ObjSpec {
	out := make([]scene.ObjSpec, len(groups))
	for i, g := range groups {
		out[i] = scene.ObjSpec{Shape: g.Shape, Count: g.Count}
	}
	return out
}

// matching is the size of a maximum matching between requested objects (each group expanded to
// Count slots) and image objects that fit them (augmenting paths; at most 4 slots).
func matching(groups []scene.ObjSpec, objs []scene.Object) int {
	var slots []scene.ObjSpec
	for _, g := range groups {
		for range g.Count {
			slots = append(slots, g)
		}
	}
	owner := make([]int, len(objs)) // slot holding each object, -1 if none
	for i := range owner {
		owner[i] = -1
	}
	var augment func(s int, seen []bool) bool
	augment = func(s int, seen []bool) bool {
		for o, obj := range objs {
			if seen[o] || !slots[s].Matches(obj) {
				continue
			}
			seen[o] = true
			if owner[o] < 0 || augment(owner[o], seen) {
				owner[o] = s
				return true
			}
		}
		return false
	}
	n := 0
	for s := range slots {
		if augment(s, make([]bool, len(objs))) {
			n++
		}
	}
	return n
}

// relationHolds reports whether some pair of distinct image objects fitting the relation's two
// sides stands in the relation. It is deliberately lenient (each relation on its own, not under one
// joint assignment): it only shapes partial credit, and Exact is judged by Spec.Satisfied.
func relationHolds(spec scene.Spec, r scene.RelSpec, objs []scene.Object) bool {
	for i, a := range objs {
		if !spec.Objects[r.A].Matches(a) {
			continue
		}
		for j, b := range objs {
			if i != j && spec.Objects[r.B].Matches(b) && r.Rel.Holds(a, b) {
				return true
			}
		}
	}
	return false
}
