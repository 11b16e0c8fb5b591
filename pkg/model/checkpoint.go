package model

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
)

// Checkpoints are safetensors files, written here by hand: an 8-byte little-endian header length,
// a JSON header mapping each tensor name to {dtype, shape, data_offsets}, then the raw
// little-endian data. The header's __metadata__ holds the format name, the model config (JSON)
// and the sha256 of the data section, so a checkpoint describes itself and corruption is caught.
// Tensor names are the gomlx variable paths without the leading "/" (e.g.
// "policy/layer_0/attn/query/dense/weights"); optimizer state, when saved, sits beside them
// (e.g. "AdamOptimizer/...", "optimizers/learning_rate").

// CheckpointFormat names the metadata layout of policy checkpoints.
const CheckpointFormat = "bicot-policy/1"

// SaveOptions select what a checkpoint holds.
type SaveOptions struct {
	// Optimizer adds every non-policy variable of the context (Adam moments, step counters,
	// learning rate), so that training resumes exactly.
	Optimizer bool
}

type stEntry struct {
	DType       string `json:"dtype"`
	Shape       []int  `json:"shape"`
	DataOffsets [2]int `json:"data_offsets"`
}

var stDTypes = map[dtypes.DType]string{
	dtypes.Float32: "F32", dtypes.Float64: "F64", dtypes.Int32: "I32", dtypes.Int64: "I64",
	dtypes.Uint64: "U64", dtypes.Uint32: "U32", dtypes.Uint8: "U8", dtypes.Int8: "I8",
}

func stDType(name string) (dtypes.DType, bool) {
	for d, n := range stDTypes {
		if n == name {
			return d, true
		}
	}
	return dtypes.InvalidDType, false
}

// Save writes the checkpoint.
func (m *Model) Save(w io.Writer, opts SaveOptions) error {
	var vars []*context.Variable
	for v := range m.Ctx.IterVariables() {
		if isPolicyVar(v) || opts.Optimizer {
			vars = append(vars, v)
		}
	}
	sort.Slice(vars, func(i, j int) bool { return vars[i].ScopeAndName() < vars[j].ScopeAndName() })
	header := map[string]any{}
	var data bytes.Buffer
	for _, v := range vars {
		t, err := v.Value()
		if err != nil {
			return fmt.Errorf("save checkpoint: variable %s: %w", v.ScopeAndName(), err)
		}
		dt, ok := stDTypes[t.DType()]
		if !ok {
			return fmt.Errorf("save checkpoint: variable %s: dtype %s has no safetensors name", v.ScopeAndName(), t.DType())
		}
		start := data.Len()
		if err := t.ConstBytes(func(b []byte) { data.Write(b) }); err != nil {
			return fmt.Errorf("save checkpoint: variable %s: %w", v.ScopeAndName(), err)
		}
		header[strings.TrimPrefix(v.ScopeAndName(), "/")] = stEntry{DType: dt, Shape: slices.Clone(t.Shape().Dimensions), DataOffsets: [2]int{start, data.Len()}}
	}
	cfg, err := json.Marshal(m.Config)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data.Bytes())
	header["__metadata__"] = map[string]string{
		"format":    CheckpointFormat,
		"config":    string(cfg),
		"sha256":    hex.EncodeToString(sum[:]),
		"optimizer": fmt.Sprint(opts.Optimizer),
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return err
	}
	for len(hb)%8 != 0 {
		hb = append(hb, ' ')
	}
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hb)))
	for _, part := range [][]byte{lenBuf[:], hb, data.Bytes()} {
		if _, err := w.Write(part); err != nil {
			return fmt.Errorf("save checkpoint: %w", err)
		}
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
	if len(b) < 8 {
		return nil, fmt.Errorf("checkpoint: %d bytes, too short for a safetensors header", len(b))
	}
	n := binary.LittleEndian.Uint64(b[:8])
	if n > uint64(len(b)-8) {
		return nil, fmt.Errorf("checkpoint: header length %d exceeds file size %d (truncated or not safetensors)", n, len(b))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &raw); err != nil {
		return nil, fmt.Errorf("checkpoint: header is not valid JSON: %w", err)
	}
	data := b[8+n:]
	var meta map[string]string
	if err := json.Unmarshal(raw["__metadata__"], &meta); err != nil || meta == nil {
		return nil, fmt.Errorf("checkpoint: missing or invalid __metadata__")
	}
	if meta["format"] != CheckpointFormat {
		return nil, fmt.Errorf("checkpoint: format %q, want %q", meta["format"], CheckpointFormat)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != meta["sha256"] {
		return nil, fmt.Errorf("checkpoint: checksum mismatch: data sha256 %s, header says %s (file corrupt)", got, meta["sha256"])
	}
	ck := &Checkpoint{Optimizer: meta["optimizer"] == "true", Tensors: map[string]*tensors.Tensor{}}
	if err := json.Unmarshal([]byte(meta["config"]), &ck.Config); err != nil {
		return nil, fmt.Errorf("checkpoint: config in metadata: %w", err)
	}
	if err := ck.Config.Validate(); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	for name, msg := range raw {
		if name == "__metadata__" {
			continue
		}
		var e stEntry
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, fmt.Errorf("checkpoint: tensor %s: %w", name, err)
		}
		dt, ok := stDType(e.DType)
		if !ok {
			return nil, fmt.Errorf("checkpoint: tensor %s: unsupported dtype %q", name, e.DType)
		}
		shape := shapes.Make(dt, e.Shape...)
		lo, hi := e.DataOffsets[0], e.DataOffsets[1]
		if lo < 0 || hi < lo || hi > len(data) || hi-lo != int(shape.Memory()) {
			return nil, fmt.Errorf("checkpoint: tensor %s: data offsets [%d,%d) do not fit shape %s in %d data bytes", name, lo, hi, shape, len(data))
		}
		t := tensors.FromShape(shape)
		if err := t.MutableBytes(func(dst []byte) { copy(dst, data[lo:hi]) }); err != nil {
			return nil, fmt.Errorf("checkpoint: tensor %s: %w", name, err)
		}
		ck.Tensors[name] = t
	}
	return ck, nil
}

// Load creates a policy from checkpoint bytes, with the config the checkpoint carries.
func Load(backend backends.Backend, b []byte) (*Model, error) {
	ck, err := ParseCheckpoint(b)
	if err != nil {
		return nil, err
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
		if !isPolicyVar(v) {
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
