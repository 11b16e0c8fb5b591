package reward

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// Ensemble scores batches with several experts at once.
type Ensemble struct {
	experts []Expert
	metrics *Metrics // nil: not instrumented
}

// NewEnsemble checks the experts (unique non-empty names, a backend and rule of matching output
// kinds, finite non-negative weights, non-negative timeouts) and returns an ensemble.
func NewEnsemble(experts ...Expert) (*Ensemble, error) {
	if len(experts) == 0 {
		return nil, errors.New("ensemble: no experts")
	}
	seen := map[string]bool{}
	for i, e := range experts {
		switch {
		case e.Name == "":
			return nil, fmt.Errorf("ensemble: expert %d has no name", i)
		case seen[e.Name]:
			return nil, fmt.Errorf("ensemble: expert name %q used twice", e.Name)
		case e.Backend == nil || e.Rule == nil:
			return nil, fmt.Errorf("ensemble: expert %q needs a backend and a rule", e.Name)
		case e.Backend.Output() != e.Rule.Output():
			return nil, fmt.Errorf("ensemble: expert %q: backend produces %q but rule needs %q", e.Name, e.Backend.Output(), e.Rule.Output())
		case math.IsNaN(e.Weight) || math.IsInf(e.Weight, 0) || e.Weight < 0:
			return nil, fmt.Errorf("ensemble: expert %q: weight %v must be finite and >= 0", e.Name, e.Weight)
		case e.Timeout < 0:
			return nil, fmt.Errorf("ensemble: expert %q: negative timeout %v", e.Name, e.Timeout)
		}
		seen[e.Name] = true
	}
	return &Ensemble{experts: append([]Expert(nil), experts...)}, nil
}

// Experts returns the experts' names in order.
func (e *Ensemble) Experts() []string {
	names := make([]string, len(e.experts))
	for i, x := range e.experts {
		names[i] = x.Name
	}
	return names
}

// Score runs every expert on the batch concurrently and returns one Scores per item. Any expert's
// failure (backend error, timeout, invalid raw output, reward outside [0, 1]) fails the batch with
// an error naming the expert and, where it concerns one, the sample index: a reward is never
// silently replaced by zero.
func (e *Ensemble) Score(ctx context.Context, items []Item) ([]Scores, error) {
	for i, it := range items {
		if it.Image == nil {
			return nil, fmt.Errorf("ensemble: sample %d has no image", i)
		}
	}
	rewards := make([][]float64, len(e.experts))
	errs := make([]error, len(e.experts))
	var wg sync.WaitGroup
	for k := range e.experts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			rewards[k], errs[k] = e.runExpert(ctx, e.experts[k], items)
			e.metrics.observe(e.experts[k].Name, time.Since(start).Seconds(), rewards[k], errs[k])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out := make([]Scores, len(items))
	for i := range items {
		s := Scores{PerExpert: make(map[string]float64, len(e.experts))}
		for k, x := range e.experts {
			r := rewards[k][i]
			s.PerExpert[x.Name] = r
			s.Total += x.Weight * r
		}
		out[i] = s
	}
	return out, nil
}

func (e *Ensemble) runExpert(ctx context.Context, x Expert, items []Item) ([]float64, error) {
	if x.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, x.Timeout)
		defer cancel()
	}
	rewards := make([]float64, len(items))
	var qs []Query
	var idx []int
	for i, it := range items {
		if v, ok := x.Rule.Shortcut(it.Prompt); ok {
			rewards[i] = v
			continue
		}
		qs = append(qs, Query{Prompt: it.Prompt, Image: it.Image, Questions: x.Rule.Questions(it.Prompt)})
		idx = append(idx, i)
	}
	if len(qs) == 0 {
		return rewards, nil
	}
	raws, err := x.Backend.Infer(ctx, qs)
	if err != nil {
		return nil, fmt.Errorf("expert %q: %w", x.Name, err)
	}
	if len(raws) != len(qs) {
		return nil, fmt.Errorf("expert %q: backend returned %d results for %d queries", x.Name, len(raws), len(qs))
	}
	out := x.Backend.Output()
	for j, raw := range raws {
		i := idx[j]
		if err := ValidateRaw(out, qs[j], raw); err != nil {
			return nil, fmt.Errorf("expert %q: sample %d: invalid output: %w", x.Name, i, err)
		}
		r, err := x.Rule.Reward(items[i].Prompt, raw)
		if err != nil {
			return nil, fmt.Errorf("expert %q: sample %d: %w", x.Name, i, err)
		}
		if err := checkReward(r); err != nil {
			return nil, fmt.Errorf("expert %q: sample %d: %w", x.Name, i, err)
		}
		rewards[i] = r
	}
	return rewards, nil
}
