package experts

import (
	"fmt"
	"time"

	"github.com/gomlx/gomlx/backends"

	"github.com/bicot-rl/bicot/pkg/reward"
)

// DefaultTimeout bounds one expert's work on one batch in the default ensemble.
const DefaultTimeout = 60 * time.Second

// Set is the four built-in experts, loaded.
type Set struct {
	Models map[string]*Model
}

// Load loads every built-in expert from dir (models/experts by default) onto backend.
func Load(backend backends.Backend, dir string) (*Set, error) {
	s := &Set{Models: map[string]*Model{}}
	for _, name := range Names {
		m, err := LoadModel(backend, dir, name)
		if err != nil {
			return nil, err
		}
		s.Models[name] = m
	}
	return s, nil
}

// Backends returns the set's models as reward backends keyed by expert name.
func (s *Set) Backends() map[string]reward.Backend {
	out := make(map[string]reward.Backend, len(s.Models))
	for k, m := range s.Models {
		out[k] = m
	}
	return out
}

// Rule returns the reference rule of a built-in expert's role.
func Rule(name string) (reward.Rule, error) {
	switch name {
	case Detector:
		return reward.ReferenceDetectorRule(), nil
	case VQA:
		return reward.VQARule{}, nil
	case HPS:
		return reward.DefaultHPSRule(), nil
	case ORM:
		return reward.ORMRule{}, nil
	case Oracle:
		return ScoreRule{}, nil
	}
	return nil, fmt.Errorf("unknown expert %q (want one of %v or %s)", name, Names, Oracle)
}

// Ensemble builds the reference ensemble over backends keyed by expert name (detector, vqa, hps,
// orm; all four required): the reference rule of each role, equal weights of 1 and timeout per
// expert (0: DefaultTimeout). Mix local and remote backends freely.
func Ensemble(bs map[string]reward.Backend, timeout time.Duration) (*reward.Ensemble, error) {
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	var xs []reward.Expert
	for _, name := range Names {
		b, ok := bs[name]
		if !ok {
			return nil, fmt.Errorf("ensemble: no backend for expert %q", name)
		}
		rule, err := Rule(name)
		if err != nil {
			return nil, err
		}
		xs = append(xs, reward.Expert{Name: name, Backend: b, Rule: rule, Weight: 1, Timeout: timeout})
	}
	if len(bs) != len(Names) {
		return nil, fmt.Errorf("ensemble: %d backends, want exactly %v", len(bs), Names)
	}
	return reward.NewEnsemble(xs...)
}

// LocalEnsemble loads the built-in experts from dir and returns the reference ensemble over them
// (T2I-R1's rules and equal weights; runs use NewEnsembleFromConfig and its defaults).
func LocalEnsemble(backend backends.Backend, dir string) (*reward.Ensemble, *Set, error) {
	s, err := Load(backend, dir)
	if err != nil {
		return nil, nil, err
	}
	e, err := Ensemble(s.Backends(), 0)
	if err != nil {
		return nil, nil, err
	}
	return e, s, nil
}

// RemoteEnsemble returns the reference ensemble over expert servers: urls maps each expert name to
// its server's base URL; cfg supplies timeouts, retries and batching (its URL and Output are set
// per expert).
func RemoteEnsemble(urls map[string]string, cfg reward.RemoteConfig) (*reward.Ensemble, error) {
	bs := map[string]reward.Backend{}
	for name, url := range urls {
		rule, err := Rule(name)
		if err != nil {
			return nil, err
		}
		c := cfg
		c.URL, c.Output = url, rule.Output()
		b, err := reward.NewRemoteBackend(c)
		if err != nil {
			return nil, fmt.Errorf("expert %s: %w", name, err)
		}
		bs[name] = b
	}
	return Ensemble(bs, 0)
}
