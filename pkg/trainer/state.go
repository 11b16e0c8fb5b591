package trainer

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/gomlx/gomlx/backends"

	"github.com/bicot-rl/bicot/pkg/model"
)

// StateFormat names the layout of Trainer.Save.
const StateFormat = "bicot-learner/1"

// Weights returns the policy's weights as a model checkpoint (no optimizer state): what rollout
// workers load (model.Load) for the version Version().
func (t *Trainer) Weights() ([]byte, error) {
	var b bytes.Buffer
	if err := t.policy.Save(&b, model.SaveOptions{}); err != nil {
		return nil, fmt.Errorf("learner weights: %w", err)
	}
	return b.Bytes(), nil
}

// stateHeader describes the parts of a saved trainer state.
type stateHeader struct {
	Format  string  `json:"format"`
	Version int64   `json:"version"`
	Steps   int64   `json:"steps"`
	Options Options `json:"options"`
	// Policy is a model checkpoint with optimizer state; Reference one without.
	PolicyBytes    int    `json:"policy_bytes"`
	ReferenceBytes int    `json:"reference_bytes"`
	SHA256         string `json:"sha256"` // of policy and reference bytes together
}

// Save writes the full trainer state: the policy's weights with the optimizer state (Adam
// moments, step counters, schedule), the frozen reference's weights, the version and the
// options. Restore of these bytes continues training exactly: the next Step gives bit-identical
// weights to those the saving trainer's next Step gives.
//
// Layout: an 8-byte little-endian header length, a JSON header (stateHeader), the policy
// checkpoint, the reference checkpoint.
func (t *Trainer) Save() ([]byte, error) {
	var pol, ref bytes.Buffer
	if err := t.policy.Save(&pol, model.SaveOptions{Optimizer: true}); err != nil {
		return nil, fmt.Errorf("save learner state: policy: %w", err)
	}
	if err := t.ref.Save(&ref, model.SaveOptions{}); err != nil {
		return nil, fmt.Errorf("save learner state: reference: %w", err)
	}
	h := sha256.New()
	h.Write(pol.Bytes())
	h.Write(ref.Bytes())
	hb, err := json.Marshal(stateHeader{
		Format: StateFormat, Version: t.version, Steps: t.steps, Options: t.opts,
		PolicyBytes: pol.Len(), ReferenceBytes: ref.Len(), SHA256: hex.EncodeToString(h.Sum(nil)),
	})
	if err != nil {
		return nil, fmt.Errorf("save learner state: %w", err)
	}
	out := make([]byte, 8, 8+len(hb)+pol.Len()+ref.Len())
	binary.LittleEndian.PutUint64(out, uint64(len(hb)))
	out = append(out, hb...)
	out = append(out, pol.Bytes()...)
	return append(out, ref.Bytes()...), nil
}

// parsedState is a verified saved state.
type parsedState struct {
	header         stateHeader
	policy, refere []byte
}

func parseState(b []byte) (parsedState, error) {
	if len(b) < 8 {
		return parsedState{}, fmt.Errorf("learner state: %d bytes, too short", len(b))
	}
	n := binary.LittleEndian.Uint64(b[:8])
	if n > uint64(len(b)-8) {
		return parsedState{}, fmt.Errorf("learner state: header length %d exceeds %d bytes (truncated or not a learner state)", n, len(b))
	}
	var h stateHeader
	if err := json.Unmarshal(b[8:8+n], &h); err != nil {
		return parsedState{}, fmt.Errorf("learner state: header: %w", err)
	}
	if h.Format != StateFormat {
		return parsedState{}, fmt.Errorf("learner state: format %q, want %q", h.Format, StateFormat)
	}
	rest := b[8+n:]
	if h.PolicyBytes < 0 || h.ReferenceBytes < 0 || h.PolicyBytes+h.ReferenceBytes != len(rest) {
		return parsedState{}, fmt.Errorf("learner state: header says %d + %d bytes of checkpoints, %d follow (truncated?)", h.PolicyBytes, h.ReferenceBytes, len(rest))
	}
	sum := sha256.Sum256(rest)
	if got := hex.EncodeToString(sum[:]); got != h.SHA256 {
		return parsedState{}, fmt.Errorf("learner state: checksum %s, header says %s (corrupt)", got, h.SHA256)
	}
	if h.Version < 0 || h.Steps < 0 {
		return parsedState{}, fmt.Errorf("learner state: negative version %d or steps %d", h.Version, h.Steps)
	}
	return parsedState{header: h, policy: rest[:h.PolicyBytes], refere: rest[h.PolicyBytes:]}, nil
}

// Restore replaces the trainer's policy weights, optimizer state, reference weights and version
// with a saved state. The trainer's options stay (the caller's configuration wins; changing the
// optimizer or loss between save and restore gives a valid but no longer bit-identical
// continuation). The state must be of a policy with the same config.
func (t *Trainer) Restore(b []byte) error {
	ps, err := parseState(b)
	if err != nil {
		return err
	}
	// Check both parts before changing anything, so a bad state leaves the trainer as it was.
	for _, part := range []struct {
		name string
		b    []byte
	}{{"policy", ps.policy}, {"reference", ps.refere}} {
		ck, err := model.ParseCheckpoint(part.b)
		if err != nil {
			return fmt.Errorf("learner state: %s: %w", part.name, err)
		}
		if !ck.Config.Equal(t.policy.Config) {
			return fmt.Errorf("learner state: %s config %+v differs from the trainer's %+v", part.name, ck.Config, t.policy.Config)
		}
	}
	if err := t.policy.LoadWeights(ps.policy); err != nil {
		return fmt.Errorf("learner state: policy: %w", err)
	}
	if err := t.ref.LoadWeights(ps.refere); err != nil {
		return fmt.Errorf("learner state: reference: %w", err)
	}
	t.version, t.steps = ps.header.Version, ps.header.Steps
	return nil
}

// Load creates a trainer from a saved state on backend, with the saved options unless opts is
// given.
func Load(backend backends.Backend, b []byte, opts *Options) (*Trainer, error) {
	ps, err := parseState(b)
	if err != nil {
		return nil, err
	}
	policy, err := model.Load(backend, ps.policy)
	if err != nil {
		return nil, fmt.Errorf("learner state: policy: %w", err)
	}
	ref, err := model.Load(backend, ps.refere)
	if err != nil {
		return nil, fmt.Errorf("learner state: reference: %w", err)
	}
	o := ps.header.Options
	if opts != nil {
		o = *opts
	}
	t, err := NewTrainerWithReference(policy, ref, o)
	if err != nil {
		return nil, fmt.Errorf("learner state: %w", err)
	}
	t.version, t.steps = ps.header.Version, ps.header.Steps
	return t, nil
}
