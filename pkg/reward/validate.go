package reward

import (
	"errors"
	"fmt"
	"math"
)

// ValidateRaw checks one raw output against the query it answers: the field of the expected kind is
// present, every number is finite and in range (box scores and coordinates and answer
// probabilities in [0, 1], boxes not inverted, Yes+No > 0), and there is exactly one answer per
// question. Both the ensemble (for every backend) and the remote client (for every reply) call it,
// so no invalid value ever reaches a rule.
func ValidateRaw(out Output, q Query, r Raw) error {
	switch out {
	case OutputBoxes:
		if r.Answers != nil || r.Score != nil {
			return errors.New("boxes output carries answers or a score")
		}
		for i, b := range r.Boxes {
			if b.Label == "" {
				return fmt.Errorf("box %d: empty label", i)
			}
			if err := unit(b.Score); err != nil {
				return fmt.Errorf("box %d (%s): score %w", i, b.Label, err)
			}
			for k, v := range b.Box {
				if err := unit(v); err != nil {
					return fmt.Errorf("box %d (%s): coordinate %d %w", i, b.Label, k, err)
				}
			}
			if b.Box[0] > b.Box[2] || b.Box[1] > b.Box[3] {
				return fmt.Errorf("box %d (%s): inverted box %v", i, b.Label, b.Box)
			}
		}
	case OutputAnswers:
		if r.Boxes != nil || r.Score != nil {
			return errors.New("answers output carries boxes or a score")
		}
		if len(r.Answers) != len(q.Questions) {
			return fmt.Errorf("%d answers for %d questions", len(r.Answers), len(q.Questions))
		}
		for i, a := range r.Answers {
			if err := unit(a.Yes); err != nil {
				return fmt.Errorf("answer %d: yes %w", i, err)
			}
			if err := unit(a.No); err != nil {
				return fmt.Errorf("answer %d: no %w", i, err)
			}
			if a.Yes+a.No <= 0 {
				return fmt.Errorf("answer %d: yes + no = 0", i)
			}
		}
	case OutputScore:
		if r.Boxes != nil || r.Answers != nil {
			return errors.New("score output carries boxes or answers")
		}
		if r.Score == nil {
			return errors.New("missing score")
		}
		if s := *r.Score; math.IsNaN(s) || math.IsInf(s, 0) {
			return fmt.Errorf("score is %v", s)
		}
	default:
		return fmt.Errorf("unknown output kind %q", out)
	}
	return nil
}

// unit checks that v is a finite number in [0, 1].
func unit(v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("is %v", v)
	}
	if v < 0 || v > 1 {
		return fmt.Errorf("%v outside [0, 1]", v)
	}
	return nil
}

// checkReward validates a rule's result.
func checkReward(v float64) error {
	if err := unit(v); err != nil {
		return fmt.Errorf("reward %w", err)
	}
	return nil
}
