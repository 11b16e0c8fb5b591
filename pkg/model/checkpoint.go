package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"

	"github.com/bicot-rl/bicot/pkg/tensorfile"
)

// Checkpoints are safetensors files (pkg/tensorfile). The header's __metadata__ holds the format
// name, the model config (JSON) and the sha256 of the data section, so a checkpoint describes
// itself and corruption is caught. Tensor names are the gomlx variable paths without the leading
// "/" (e.g. "policy/layer_0/attn/query/dense/weights"); optimizer state, when saved, sits beside
// them (e.g. "AdamOptimizer/...", "optimizers/learning_rate").

// CheckpointFormat names the metadata layout of policy checkpoints.
const CheckpointFormat = "bicot-policy/1"

// SaveOptions select what a checkpoint holds.
type SaveOptions struct {
	// Optimizer adds every non-policy variable of the context (Adam moments, step counters,
	// learning rate), so that training resumes exactly.
	Optimizer bool
}

// fileDType is the safetensors name of the gomlx dtypes a checkpoint may hold.
func fileDType(d dtypes.DType) (tensorfile.DType, bool) {
	switch d {
	case dtypes.Float32:
		return tensorfile.F32, true
	case dtypes.Float64:
		return tensorfile.F64, true
	case dtypes.Int32:
		return tensorfile.I32, true
	case dtypes.Int64:
		return tensorfile.I64, true
	case dtypes.Uint64:
		return tensorfile.U64, true
	case dtypes.Uint32:
		return tensorfile.U32, true
	case dtypes.Uint8:
		return tensorfile.U8, true
	case dtypes.Int8:
		return tensorfile.I8, true
	}
	return "", false
}

// modelDType is the inverse of fileDType.
func modelDType(d tensorfile.DType) (dtypes.DType, bool) {
	switch d {
	case tensorfile.F32:
		return dtypes.Float32, true
	case tensorfile.F64:
		return dtypes.Float64, true
	case tensorfile.I32:
		return dtypes.Int32, true
	case tensorfile.I64:
		return dtypes.Int64, true
	case tensorfile.U64:
		return dtypes.Uint64, true
	case tensorfile.U32:
		return dtypes.Uint32, true
	case tensorfile.U8:
		return dtypes.Uint8, true
	case tensorfile.I8:
		return dtypes.Int8, true
	}
	return dtypes.InvalidDType, false
}

// Save writes the checkpoint.
func (m *Model) Save(w io.Writer, opts SaveOptions) error {
	f := &tensorfile.File{}
	for v := range m.Ctx.IterVariables() {
		if !IsPolicyVariable(v) && !opts.Optimizer {
			continue
		}
		t, err := v.Value()
		if err != nil {
			return fmt.Errorf("save checkpoint: variable %s: %w", v.ScopeAndName(), err)
		}
		dt, ok := fileDType(t.DType())
		if !ok {
			return fmt.Errorf("save checkpoint: variable %s: dtype %s has no safetensors name", v.ScopeAndName(), t.DType())
		}
		var data []byte
		if err := t.ConstBytes(func(b []byte) { data = bytes.Clone(b) }); err != nil {
			return fmt.Errorf("save checkpoint: variable %s: %w", v.ScopeAndName(), err)
		}
		// Scalars' dimensions are nil, written as "shape":null: kept so that optimizer checkpoints
		// keep the bytes they always had.
		f.Tensors = append(f.Tensors, tensorfile.Tensor{Name: strings.TrimPrefix(v.ScopeAndName(), "/"), DType: dt,
			Shape: t.Shape().Dimensions, Data: data})
	}
	cfg, err := json.Marshal(m.Config)
	if err != nil {
		return err
	}
	f.Metadata = map[string]string{
		"format":    CheckpointFormat,
		"config":    string(cfg),
		"optimizer": fmt.Sprint(opts.Optimizer),
	}
	if err := tensorfile.Write(w, f, tensorfile.Options{Checksum: true}); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	return nil
}

// SaveFile writes the checkpoint to path atomically (temporary file + rename).
func (m *Model) SaveFile(path string, opts SaveOptions) error {
	var buf bytes.Buffer
	if err := m.Save(&buf, opts); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("save checkpoint %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save checkpoint %s: %w", path, err)
	}
	return nil
}

// Checkpoint is a parsed, verified checkpoint.
type Checkpoint struct {
	Config    Config
	Optimizer bool
	Tensors   map[string]*tensors.Tensor
}

// ParseCheckpoint reads and verifies a checkpoint: header structure, checksum, dtypes and sizes.
func ParseCheckpoint(b []byte) (*Checkpoint, error) {
	f, err := tensorfile.Parse(b, tensorfile.Options{Checksum: true})
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	meta := f.Metadata
	if meta["format"] != CheckpointFormat {
		return nil, fmt.Errorf("checkpoint: format %q, want %q", meta["format"], CheckpointFormat)
	}
	ck := &Checkpoint{Optimizer: meta["optimizer"] == "true", Tensors: make(map[string]*tensors.Tensor, len(f.Tensors))}
	if err := json.Unmarshal([]byte(meta["config"]), &ck.Config); err != nil {
		return nil, fmt.Errorf("checkpoint: config in metadata: %w", err)
	}
	if err := ck.Config.Validate(); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	for _, ft := range f.Tensors {
		dt, ok := modelDType(ft.DType)
		if !ok {
			return nil, fmt.Errorf("checkpoint: tensor %s: unsupported dtype %q", ft.Name, ft.DType)
		}
		// tensorfile checked that the data is exactly the shape's size.
		t := tensors.FromShape(shapes.Make(dt, ft.Shape...))
		if err := t.MutableBytes(func(dst []byte) { copy(dst, ft.Data) }); err != nil {
			return nil, fmt.Errorf("checkpoint: tensor %s: %w", ft.Name, err)
		}
		ck.Tensors[ft.Name] = t
	}
	return ck, nil
}

// Load creates a policy from checkpoint bytes, with the config the checkpoint carries.
func Load(backend backends.Backend, b []byte) (*Model, error) {
	ck, err := ParseCheckpoint(b)
	if err != nil {
		return nil, err
	}
	// The model is built from the config before the tensors are matched to it: a config that
	// claims a far larger model than the file holds would allocate it first.
	var held float64
	for _, t := range ck.Tensors {
		held += float64(t.Shape().Size())
	}
	if need := ck.Config.minParams(); need > held {
		return nil, fmt.Errorf("checkpoint: its config implies at least %.0f parameters, the file holds %.0f", need, held)
	}
	m, err := New(backend, ck.Config, 0)
	if err != nil {
		return nil, err
	}
	if err := m.apply(ck); err != nil {
		return nil, err
	}
	return m, nil
}

// LoadFile is Load from a file.
func LoadFile(backend backends.Backend, path string) (*Model, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load policy: %w", err)
	}
	m, err := Load(backend, b)
	if err != nil {
		return nil, fmt.Errorf("load policy %s: %w", path, err)
	}
	return m, nil
}

// LoadWeights replaces the model's weights (and optimizer state, if the checkpoint has it) with
// the checkpoint's. The checkpoint must match the model's config and hold every weight.
func (m *Model) LoadWeights(b []byte) error {
	ck, err := ParseCheckpoint(b)
	if err != nil {
		return err
	}
	if !ck.Config.Equal(m.Config) {
		return fmt.Errorf("checkpoint: config %+v does not match the model's %+v", ck.Config, m.Config)
	}
	return m.apply(ck)
}

func (m *Model) apply(ck *Checkpoint) error {
	var errs []error
	seen := map[string]bool{}
	for v := range m.Ctx.IterVariables() {
		if !IsPolicyVariable(v) {
			continue
		}
		name := strings.TrimPrefix(v.ScopeAndName(), "/")
		seen[name] = true
		t, ok := ck.Tensors[name]
		if !ok {
			errs = append(errs, fmt.Errorf("missing tensor %s", name))
			continue
		}
		if !t.Shape().Equal(v.Shape()) {
			errs = append(errs, fmt.Errorf("tensor %s has shape %s, the config needs %s", name, t.Shape(), v.Shape()))
		}
	}
	for name := range ck.Tensors {
		if !seen[name] && strings.HasPrefix(name, Scope+"/") {
			errs = append(errs, fmt.Errorf("unexpected tensor %s (not a weight of this config)", name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	for name, t := range ck.Tensors {
		scope, vname := context.SplitScope("/" + name)
		if v := m.Ctx.GetVariableByScopeAndName(scope, vname); v != nil {
			if err := v.SetValue(t); err != nil {
				return fmt.Errorf("checkpoint: set %s: %w", name, err)
			}
			continue
		}
		// Optimizer state of a model that has not built its training graph yet.
		m.Ctx.InAbsPath(scope).Checked(false).VariableWithValue(vname, t).SetTrainable(false)
	}
	return nil
}
