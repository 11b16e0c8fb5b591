package experts

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"

	"github.com/bicot-rl/bicot/pkg/tensorfile"
)

// Weights files are safetensors (pkg/tensorfile), readable by other tools. The header's
// "__metadata__" records the format version, the expert, its training command and seed, and the
// SHA-256 of the data section, which Load checks: a truncated or altered file is an error naming
// the file and what is wrong, never a silently different model.

const (
	weightsFormat = "bicot-experts/1"
	modelScope    = "/model"
	// maxHeader is tighter than tensorfile's bound: an expert's header is a few KiB, so anything
	// near a MiB is not a weights file.
	maxHeader = 1 << 20
)

// saveWeights writes the variables under modelScope of ctx to path, with meta added to the
// header's metadata.
func saveWeights(path string, ctx *context.Context, meta map[string]string) error {
	f := &tensorfile.File{}
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
		f.Tensors = append(f.Tensors, tensorfile.FromFloat32(v.ScopeAndName(), t.Shape().Dimensions, data))
	}
	if len(f.Tensors) == 0 {
		return fmt.Errorf("save %s: no model variables", path)
	}
	// meta may override the format, as it always could; the checksum is tensorfile's.
	f.Metadata = map[string]string{"format": weightsFormat}
	for k, v := range meta {
		f.Metadata[k] = v
	}
	out, err := tensorfile.Encode(f, tensorfile.Options{Checksum: true})
	if err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
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
	f, err := tensorfile.Parse(b, tensorfile.Options{Checksum: true, MaxHeaderLen: maxHeader})
	if err != nil {
		return nil, nil, err
	}
	meta := f.Metadata
	if meta["format"] != weightsFormat {
		return nil, nil, fmt.Errorf("format %q, want %q", meta["format"], weightsFormat)
	}
	if meta["expert"] != expert {
		return nil, nil, fmt.Errorf("holds expert %q, want %q", meta["expert"], expert)
	}
	if len(f.Tensors) == 0 {
		return nil, nil, errors.New("no tensors")
	}
	ctx := context.New()
	for _, t := range f.Tensors {
		// Zero-sized dimensions are valid safetensors but never an expert's weights.
		for _, d := range t.Shape {
			if d <= 0 {
				return nil, nil, fmt.Errorf("tensor %s: bad shape %v", t.Name, t.Shape)
			}
		}
		vals, err := t.Float32()
		if err != nil {
			return nil, nil, err
		}
		for i, v := range vals {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, nil, fmt.Errorf("tensor %s: non-finite value at %d", t.Name, i)
			}
		}
		scope, vname := context.SplitScope(t.Name)
		if !strings.HasPrefix(scope, modelScope) {
			return nil, nil, fmt.Errorf("tensor %s outside scope %s", t.Name, modelScope)
		}
		ctx.InAbsPath(scope).VariableWithValue(vname, tensors.FromFlatDataAndDimensions(vals, t.Shape...))
	}
	return ctx, meta, nil
}
