package experts

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
)

// Weights files are safetensors (an 8-byte little-endian header length, a JSON header naming each
// tensor's dtype, shape and byte range, then the raw little-endian data), readable by other tools.
// The header's "__metadata__" records the format version, the expert, its training command and
// seed, and the SHA-256 of the data section, which Load checks: a truncated or altered file is an
// error naming the file and what is wrong, never a silently different model.

const (
	weightsFormat = "bicot-experts/1"
	modelScope    = "/model"
	maxHeader     = 1 << 20
)

type tensorEntry struct {
	DType   string `json:"dtype"`
	Shape   []int  `json:"shape"`
	Offsets [2]int `json:"data_offsets"`
}

// saveWeights writes the variables under modelScope of ctx to path, with meta added to the
// header's metadata.
func saveWeights(path string, ctx *context.Context, meta map[string]string) error {
	type named struct {
		name string
		data []float32
		dims []int
	}
	var vars []named
	for v := range ctx.IterVariables() {
		if !strings.HasPrefix(v.Scope(), modelScope) {
			continue
		}
		t, err := v.Value()
		if err != nil {
			return fmt.Errorf("save %s: variable %s: %w", path, v.ScopeAndName(), err)
		}
		data, err := tensors.CopyFlatData[float32](t)
		if err != nil {
			return fmt.Errorf("save %s: variable %s: %w", path, v.ScopeAndName(), err)
		}
		vars = append(vars, named{v.ScopeAndName(), data, t.Shape().Dimensions})
	}
	if len(vars) == 0 {
		return fmt.Errorf("save %s: no model variables", path)
	}
	sort.Slice(vars, func(i, j int) bool { return vars[i].name < vars[j].name })
	var data []byte
	header := map[string]any{}
	for _, v := range vars {
		start := len(data)
		for _, x := range v.data {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(x))
		}
		header[v.name] = tensorEntry{DType: "F32", Shape: v.dims, Offsets: [2]int{start, len(data)}}
	}
	sum := sha256.Sum256(data)
	md := map[string]string{"format": weightsFormat, "sha256": hex.EncodeToString(sum[:])}
	for k, v := range meta {
		md[k] = v
	}
	header["__metadata__"] = md
	hb, err := json.Marshal(header)
	if err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	for len(hb)%8 != 0 {
		hb = append(hb, ' ')
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(hb)))
	out = append(append(out, hb...), data...)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}

// loadWeights reads a weights file written for expert into a fresh context and returns it with
// the file's metadata.
func loadWeights(path, expert string) (*context.Context, map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("load expert weights: %w", err)
	}
	ctx, meta, err := parseWeights(b, expert)
	if err != nil {
		return nil, nil, fmt.Errorf("load expert weights %s: %w", path, err)
	}
	return ctx, meta, nil
}

func parseWeights(b []byte, expert string) (*context.Context, map[string]string, error) {
	if len(b) < 8 {
		return nil, nil, fmt.Errorf("file of %d bytes is too short for a safetensors header", len(b))
	}
	n := binary.LittleEndian.Uint64(b)
	if n > maxHeader || n > uint64(len(b)-8) {
		return nil, nil, fmt.Errorf("header length %d does not fit the file (%d bytes): truncated or not safetensors", n, len(b))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &raw); err != nil {
		return nil, nil, fmt.Errorf("header: %w", err)
	}
	data := b[8+n:]
	var meta map[string]string
	if m, ok := raw["__metadata__"]; ok {
		if err := json.Unmarshal(m, &meta); err != nil {
			return nil, nil, fmt.Errorf("header metadata: %w", err)
		}
	}
	if meta["format"] != weightsFormat {
		return nil, nil, fmt.Errorf("format %q, want %q", meta["format"], weightsFormat)
	}
	if meta["expert"] != expert {
		return nil, nil, fmt.Errorf("holds expert %q, want %q", meta["expert"], expert)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != meta["sha256"] {
		return nil, nil, fmt.Errorf("checksum mismatch: data hashes to %s, header says %s (file corrupt)", got, meta["sha256"])
	}
	ctx := context.New()
	names := make([]string, 0, len(raw))
	for k := range raw {
		if k != "__metadata__" {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, nil, errors.New("no tensors")
	}
	for _, name := range names {
		var e tensorEntry
		if err := json.Unmarshal(raw[name], &e); err != nil {
			return nil, nil, fmt.Errorf("tensor %s: %w", name, err)
		}
		if e.DType != "F32" {
			return nil, nil, fmt.Errorf("tensor %s: dtype %q, want F32", name, e.DType)
		}
		size := 1
		for _, d := range e.Shape {
			if d <= 0 {
				return nil, nil, fmt.Errorf("tensor %s: bad shape %v", name, e.Shape)
			}
			size *= d
		}
		lo, hi := e.Offsets[0], e.Offsets[1]
		if lo < 0 || hi > len(data) || hi-lo != 4*size {
			return nil, nil, fmt.Errorf("tensor %s: byte range %v does not hold shape %v in %d data bytes", name, e.Offsets, e.Shape, len(data))
		}
		vals := make([]float32, size)
		for i := range vals {
			vals[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[lo+4*i:]))
			if math.IsNaN(float64(vals[i])) || math.IsInf(float64(vals[i]), 0) {
				return nil, nil, fmt.Errorf("tensor %s: non-finite value at %d", name, i)
			}
		}
		scope, vname := context.SplitScope(name)
		if !strings.HasPrefix(scope, modelScope) {
			return nil, nil, fmt.Errorf("tensor %s outside scope %s", name, modelScope)
		}
		ctx.InAbsPath(scope).VariableWithValue(vname, tensors.FromFlatDataAndDimensions(vals, e.Shape...))
	}
	return ctx, meta, nil
}
