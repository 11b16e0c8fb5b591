package reward

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/bicot-rl/bicot/pkg/prompts"
)

// DetectorRule is the reference's grounding-detector reward (GroundingDINO in T2I-R1).
//
//   - No nouns: 1 (nothing to find).
//   - task_type "spatial": 0.2 for each of spatial_info's obj1 and obj2 detected; when both are,
//     the most confident box of each is compared and half of a soft position score is added, so the
//     maximum is 0.9 as in the reference. The position score (see PositionScore) looks at the
//     box-centre offset along the relation's axis: 1 when obj1 lies on the asked side of obj2 and
//     that axis dominates, divided down by the boxes' IoU when they overlap more than IoUThreshold,
//     0 otherwise.
//   - task_type "numeracy": for each numeracy_info entry, the detections of obj_name after
//     non-maximum suppression at NMSIoU give 1 when their count equals num, 0.2 when the object is
//     detected with another count, 0 when it is absent; the entries are averaged.
//   - every other task type: the fraction of nouns detected.
//
// Two extensions, both on in DefaultDetectorRule and off in ReferenceDetectorRule, because the
// reference rule can be gamed by exactly the images RL finds first (docs/experts.md):
//
//   - AllRelations: the spatial branch applies to every prompt that carries spatial_info (the
//     reference data gives it to non-spatial, complex and knowledge prompts too), not only to
//     task_type "spatial", so a relation is checked wherever the prompt states one.
//   - ExtraFactor: the reward is multiplied by ExtraFactor for every object detected (after
//     label-agnostic NMS) beyond the number the prompt asks for (the nouns, or the sum of
//     numeracy_info counts), so drawing more objects than asked never pays.
//
// A noun is detected when a box with its label has a score above BoxThreshold. Labels and nouns
// are compared after lower-casing and removing a plural ending ("circles" finds "circle").
type DetectorRule struct {
	BoxThreshold float64 // reference 0.3
	NMSIoU       float64 // reference 0.5
	IoUThreshold float64 // reference 0.1: overlap above it softens the position score
	// NearDistance and FarDistance (fractions of the image side) decide "next to" and "far from",
	// which the reference checks against a pixel threshold its normalised boxes never reach; ours
	// scale softly: next to = min(1, Near/d), far from = min(1, d/Far), d the larger centre offset.
	NearDistance float64
	FarDistance  float64
	// AllRelations applies the relation check to every prompt with spatial_info.
	AllRelations bool
	// ExtraFactor in (0, 1] multiplies the reward once per extra object; 0 (or 1) is off.
	ExtraFactor float64
}

// ReferenceDetectorRule returns the reference rule and thresholds; the distances fit a 4x4 grid
// (adjacent cells are 0.25 apart, "far" cells at least 0.5).
func ReferenceDetectorRule() DetectorRule {
	return DetectorRule{BoxThreshold: 0.3, NMSIoU: 0.5, IoUThreshold: 0.1, NearDistance: 0.3, FarDistance: 0.45}
}

// DefaultExtraFactor is DefaultDetectorRule's price of an extra object: one extra keeps a fifth
// of the reward, about where the oracle puts an otherwise right image with an extra (0.1).
const DefaultExtraFactor = 0.2

// DefaultDetectorRule is the reference rule with relations checked wherever the prompt states
// one and a price on extra objects.
func DefaultDetectorRule() DetectorRule {
	r := ReferenceDetectorRule()
	r.AllRelations, r.ExtraFactor = true, DefaultExtraFactor
	return r
}

// expected is the number of objects the prompt asks for.
func expected(p prompts.Prompt) int {
	if len(p.NumeracyInfo) > 0 {
		n := 0
		counted := map[string]bool{}
		for _, ni := range p.NumeracyInfo {
			n += ni.Num
			counted[NormNoun(ni.ObjName)] = true
		}
		for _, noun := range p.Nouns {
			if !counted[NormNoun(noun)] {
				n++
			}
		}
		return n
	}
	return len(p.Nouns)
}

// extraPenalty is ExtraFactor^(objects detected - objects asked for), 1 when none are extra.
func (r DetectorRule) extraPenalty(p prompts.Prompt, kept []Box) float64 {
	if r.ExtraFactor <= 0 || r.ExtraFactor >= 1 {
		return 1
	}
	extra := len(NMS(kept, r.NMSIoU)) - expected(p)
	if extra <= 0 {
		return 1
	}
	return math.Pow(r.ExtraFactor, float64(extra))
}

// Output implements Rule.
func (DetectorRule) Output() Output { return OutputBoxes }

// Questions implements Rule.
func (DetectorRule) Questions(prompts.Prompt) []string { return nil }

// Shortcut implements Rule: prompts without nouns score 1 without a detection.
func (r DetectorRule) Shortcut(p prompts.Prompt) (float64, bool) {
	if len(p.Nouns) == 0 {
		return 1, true
	}
	return 0, false
}

// Reward implements Rule.
func (r DetectorRule) Reward(p prompts.Prompt, raw Raw) (float64, error) {
	if v, ok := r.Shortcut(p); ok {
		return v, nil
	}
	var kept []Box
	for _, b := range raw.Boxes {
		if b.Score > r.BoxThreshold {
			kept = append(kept, b)
		}
	}
	v, err := r.base(p, kept)
	if err != nil {
		return 0, err
	}
	return v * r.extraPenalty(p, kept), nil
}

func (r DetectorRule) base(p prompts.Prompt, kept []Box) (float64, error) {
	switch {
	case p.TaskType == prompts.Spatial || (r.AllRelations && p.SpatialInfo != nil && p.TaskType != prompts.Numeracy):
		if p.SpatialInfo == nil {
			return 0, fmt.Errorf("spatial prompt %q has no spatial_info", p.Prompt)
		}
		return r.spatial(*p.SpatialInfo, kept)
	case p.TaskType == prompts.Numeracy:
		if len(p.NumeracyInfo) == 0 {
			return 0, fmt.Errorf("numeracy prompt %q has no numeracy_info", p.Prompt)
		}
		return r.numeracy(p.NumeracyInfo, kept), nil
	}
	found := 0
	for _, n := range p.Nouns {
		if len(withLabel(kept, n)) > 0 {
			found++
		}
	}
	return float64(found) / float64(len(p.Nouns)), nil
}

func (r DetectorRule) spatial(si prompts.SpatialInfo, kept []Box) (float64, error) {
	b1, b2 := withLabel(kept, si.Obj1), withLabel(kept, si.Obj2)
	score := 0.0
	if len(b1) > 0 {
		score += 0.2
	}
	if len(b2) > 0 {
		score += 0.2
	}
	if len(b1) == 0 || len(b2) == 0 {
		return score, nil
	}
	sortByScore(b1)
	sortByScore(b2)
	var pos float64
	var err error
	if NormNoun(si.Obj1) == NormNoun(si.Obj2) {
		// Both phrases name the same thing: the reference would compare a box with itself. Compare
		// the two most confident boxes instead, in the better order.
		if len(b1) < 2 {
			return score, nil
		}
		p1, err1 := r.PositionScore(si.Locality, b1[0], b1[1])
		p2, err2 := r.PositionScore(si.Locality, b1[1], b1[0])
		if err1 != nil {
			return 0, err1
		}
		if err2 != nil {
			return 0, err2
		}
		pos = max(p1, p2)
	} else {
		pos, err = r.PositionScore(si.Locality, b1[0], b2[0])
		if err != nil {
			return 0, err
		}
	}
	return score + pos/2, nil
}

// PositionScore is the soft score in [0, 1] for "a <locality> b".
func (r DetectorRule) PositionScore(locality string, a, b Box) (float64, error) {
	ax, ay := a.Centre()
	bx, by := b.Centre()
	// Offsets of b's centre from a's, as in the reference.
	dx, dy := bx-ax, by-ay
	iou := IoU(a, b)
	axis := func(along, across float64) float64 {
		if along <= 0 || math.Abs(along) <= math.Abs(across) {
			return 0
		}
		if iou >= r.IoUThreshold && iou > 0 {
			return r.IoUThreshold / iou
		}
		return 1
	}
	d := max(math.Abs(dx), math.Abs(dy))
	switch strings.ToLower(strings.TrimSpace(locality)) {
	case "left of", "on the left of", "to the left of":
		return axis(dx, dy), nil
	case "right of", "on the right of", "to the right of":
		return axis(-dx, dy), nil
	case "above", "on top of", "on the top of", "top of":
		// The reference drops plain "above" into its fall-through (score 0); we score it.
		return axis(dy, dx), nil
	case "below", "on the bottom of", "under", "beneath":
		return axis(-dy, dx), nil
	case "next to", "near", "on side of", "beside":
		if d <= r.NearDistance {
			return 1, nil
		}
		return r.NearDistance / d, nil
	case "far from", "away from":
		if d >= r.FarDistance {
			return 1, nil
		}
		return d / r.FarDistance, nil
	}
	return 0, fmt.Errorf("unknown locality %q", locality)
}

func (r DetectorRule) numeracy(info []prompts.NumeracyInfo, kept []Box) float64 {
	score := 0.0
	w := 1 / float64(len(info))
	for _, ni := range info {
		boxes := withLabel(kept, ni.ObjName)
		if len(boxes) == 0 {
			continue
		}
		if len(NMS(boxes, r.NMSIoU)) == ni.Num {
			score += w
		} else {
			score += 0.2 * w
		}
	}
	return score
}

// VQARule is the reference's VQA reward (GIT in T2I-R1): 0 for spatial and numeracy prompts; for
// others, ask "{phrase}?" for each attr_noun (or each noun when the prompt has no attr_nouns) and
// average P(yes)/(P(yes)+P(no)); 1 when there is nothing to ask.
//
// Hard averages decisions instead of probabilities: a question counts 1 when P(yes) > P(no), else
// 0. GRPO ranks the samples within a group, and a soft probability that wobbles between equally
// right images turns the model's noise into advantages; decided answers tie where the images are
// equally right (docs/experts.md has the measurement).
type VQARule struct {
	Hard bool
}

// Output implements Rule.
func (VQARule) Output() Output { return OutputAnswers }

func (VQARule) phrases(p prompts.Prompt) []string {
	if len(p.AttrNouns) > 0 {
		return p.AttrNouns
	}
	return p.Nouns
}

// Shortcut implements Rule.
func (r VQARule) Shortcut(p prompts.Prompt) (float64, bool) {
	if p.TaskType == prompts.Spatial || p.TaskType == prompts.Numeracy {
		return 0, true
	}
	if len(r.phrases(p)) == 0 {
		return 1, true
	}
	return 0, false
}

// Questions implements Rule.
func (r VQARule) Questions(p prompts.Prompt) []string {
	ph := r.phrases(p)
	qs := make([]string, len(ph))
	for i, s := range ph {
		qs[i] = s + "?"
	}
	return qs
}

// Reward implements Rule.
func (r VQARule) Reward(p prompts.Prompt, raw Raw) (float64, error) {
	if v, ok := r.Shortcut(p); ok {
		return v, nil
	}
	if len(raw.Answers) == 0 {
		return 0, fmt.Errorf("no answers for prompt %q", p.Prompt)
	}
	s := 0.0
	for _, a := range raw.Answers {
		switch {
		case !r.Hard:
			s += a.Yes / (a.Yes + a.No)
		case a.Yes > a.No:
			s++
		}
	}
	return s / float64(len(raw.Answers)), nil
}

// ORMQuestion is the reference's outcome-reward-model question.
const ORMQuestion = "Does this image accurately represent the prompt? yes/no"

// ORMRule is the reference's outcome reward model: the backend answers ORMQuestion about the
// image and the prompt; the reward is P(yes)/(P(yes)+P(no)).
type ORMRule struct{}

// Output implements Rule.
func (ORMRule) Output() Output { return OutputAnswers }

// Shortcut implements Rule.
func (ORMRule) Shortcut(prompts.Prompt) (float64, bool) { return 0, false }

// Questions implements Rule.
func (ORMRule) Questions(prompts.Prompt) []string { return []string{ORMQuestion} }

// Reward implements Rule.
func (ORMRule) Reward(p prompts.Prompt, raw Raw) (float64, error) {
	if len(raw.Answers) != 1 {
		return 0, fmt.Errorf("orm: %d answers, want 1", len(raw.Answers))
	}
	a := raw.Answers[0]
	return a.Yes / (a.Yes + a.No), nil
}

// HPSRule maps a preference score to [0, 1] with a logistic squash, sigmoid((s - Offset) / Scale),
// so that it can enter an equal-weight sum with the other experts' rewards; the reference adds the
// raw HPS v2.1 score (about 0.2-0.35) instead. The built-in preference model emits scores already
// standardised (mean 0, standard deviation 1 over faithful and worse renders), so Offset 0 and
// Scale 1 fit it; for HPS v2.1 behind the remote protocol, Offset 0.27 and Scale 0.03 spread its
// usual range over (0.2, 0.9).
type HPSRule struct {
	Offset float64
	Scale  float64
}

// DefaultHPSRule fits the built-in preference model's standardised scores.
func DefaultHPSRule() HPSRule { return HPSRule{Offset: 0, Scale: 1} }

// Output implements Rule.
func (HPSRule) Output() Output { return OutputScore }

// Shortcut implements Rule.
func (HPSRule) Shortcut(prompts.Prompt) (float64, bool) { return 0, false }

// Questions implements Rule.
func (HPSRule) Questions(prompts.Prompt) []string { return nil }

// Reward implements Rule.
func (r HPSRule) Reward(p prompts.Prompt, raw Raw) (float64, error) {
	if raw.Score == nil {
		return 0, fmt.Errorf("hps: missing score")
	}
	if !(r.Scale > 0) {
		return 0, fmt.Errorf("hps: scale %v must be > 0", r.Scale)
	}
	return 1 / (1 + math.Exp(-(*raw.Score-r.Offset)/r.Scale)), nil
}

// NormNoun lower-cases a noun phrase and strips a plural ending, so that detector labels and
// prompt nouns compare equal across "circle"/"circles", "cross"/"crosses".
func NormNoun(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	switch {
	case strings.HasSuffix(s, "sses"), strings.HasSuffix(s, "xes"), strings.HasSuffix(s, "ches"), strings.HasSuffix(s, "shes"):
		return s[:len(s)-2]
	case strings.HasSuffix(s, "ss"), strings.HasSuffix(s, "us"), strings.HasSuffix(s, "is"):
		return s
	case strings.HasSuffix(s, "s") && len(s) > 3:
		return s[:len(s)-1]
	}
	return s
}

func withLabel(boxes []Box, noun string) []Box {
	n := NormNoun(noun)
	var out []Box
	for _, b := range boxes {
		if NormNoun(b.Label) == n {
			out = append(out, b)
		}
	}
	return out
}

func sortByScore(bs []Box) {
	sort.SliceStable(bs, func(i, j int) bool { return bs[i].Score > bs[j].Score })
}

// IoU is the intersection over union of two boxes.
func IoU(a, b Box) float64 {
	w := min(a.Box[2], b.Box[2]) - max(a.Box[0], b.Box[0])
	h := min(a.Box[3], b.Box[3]) - max(a.Box[1], b.Box[1])
	if w <= 0 || h <= 0 {
		return 0
	}
	inter := w * h
	union := (a.Box[2]-a.Box[0])*(a.Box[3]-a.Box[1]) + (b.Box[2]-b.Box[0])*(b.Box[3]-b.Box[1]) - inter
	if union <= 0 {
		return 0
	}
	return inter / union
}

// NMS keeps boxes greedily by decreasing score, dropping any whose IoU with a kept one exceeds iou.
func NMS(boxes []Box, iou float64) []Box {
	bs := append([]Box(nil), boxes...)
	sortByScore(bs)
	var keep []Box
	for _, b := range bs {
		ok := true
		for _, k := range keep {
			if IoU(b, k) > iou {
				ok = false
				break
			}
		}
		if ok {
			keep = append(keep, b)
		}
	}
	return keep
}
