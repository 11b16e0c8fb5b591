// Package tensorfile reads and writes safetensors files: an 8-byte little-endian header length, a
// JSON header mapping each tensor name to {"dtype", "shape", "data_offsets"} plus an optional
// "__metadata__" map of strings, then the raw little-endian tensor data.
//
// It is the one implementation of the format behind the policy checkpoints (pkg/model) and the
// vision experts' weights (pkg/experts), so both get the same strict checks: the header must fit
// the file, every dtype must be known, every tensor's byte range must match its shape and the
// ranges must tile the data section exactly, and names must be unique. Both callers also record
// the SHA-256 of the data section in the metadata (Options.Checksum), so a damaged file is an
// error, never a silently different model. The package knows nothing about gomlx: tensors are
// bytes, with float32 helpers for the common case.
//
// Writing is canonical: tensors are laid out in name order and the header's keys are sorted, so
// the same tensors and metadata always give the same bytes. Files written before this package
// existed are reproduced byte for byte.
package tensorfile

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// DType is a safetensors element type name, as written in the header.
type DType string

// The element types this package reads and writes.
const (
	Bool DType = "BOOL"
	U8   DType = "U8"
	I8   DType = "I8"
	U16  DType = "U16"
	I16  DType = "I16"
	F16  DType = "F16"
	BF16 DType = "BF16"
	U32  DType = "U32"
	I32  DType = "I32"
	F32  DType = "F32"
	U64  DType = "U64"
	I64  DType = "I64"
	F64  DType = "F64"
)

// Size is the number of bytes of one element, 0 for an unknown dtype.
func (d DType) Size() int {
	switch d {
	case Bool, U8, I8:
		return 1
	case U16, I16, F16, BF16:
		return 2
	case U32, I32, F32:
		return 4
	case U64, I64, F64:
		return 8
	}
	return 0
}

const (
	// MaxHeaderLen bounds the JSON header, as the reference implementation does, so that a
	// garbage length cannot make a reader parse megabytes of tensor data as JSON.
	MaxHeaderLen = 100_000_000
	// MetadataKey is the header entry holding the metadata; no tensor may have this name.
	MetadataKey = "__metadata__"
	// ChecksumKey is the metadata entry holding the hex SHA-256 of the data section.
	ChecksumKey = "sha256"
)

// ErrChecksum is returned (wrapped) when the data section does not match its recorded SHA-256.
var ErrChecksum = errors.New("checksum mismatch")

// Tensor is one named tensor: its dtype, dimensions and raw little-endian data.
type Tensor struct {
	Name  string
	DType DType
	// Shape is written as given: a nil Shape is written as JSON null (what policy checkpoints
	// have always written for scalars, and readers here accept); []int{} gives the spec's [].
	Shape []int
	Data  []byte
}

// File is the content of a tensor file.
type File struct {
	// Tensors are in name order when parsed; Write accepts any order.
	Tensors []Tensor
	// Metadata is the header's "__metadata__", nil when the file has none.
	Metadata map[string]string
}

// Options select the checks beyond the format itself.
type Options struct {
	// Checksum makes writers record the SHA-256 of the data section under ChecksumKey in the
	// metadata (replacing any value there) and readers require and verify it. Readers verify it
	// before looking at any tensor, so a truncated or altered file is reported as such rather than
	// as whichever byte range first fails to fit.
	Checksum bool
	// MaxHeaderLen, when positive and below the package's MaxHeaderLen, is the reader's bound on
	// the header length, for callers that know their headers are small.
	MaxHeaderLen int
}

// elements is the number of elements of shape, or an error for a negative dimension or a count
// that overflows int.
func elements(shape []int) (int, error) {
	n := 1
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("shape %v has a negative dimension", shape)
		}
		if d != 0 && n > math.MaxInt/d {
			return 0, fmt.Errorf("shape %v has too many elements", shape)
		}
		n *= d
	}
	return n, nil
}

// check tells what is wrong with t on its own (name, dtype, shape against data length).
func (t *Tensor) check() error {
	if t.Name == "" {
		return errors.New("tensor with an empty name")
	}
	if t.Name == MetadataKey {
		return fmt.Errorf("tensor %s: name is reserved for the metadata", t.Name)
	}
	size := t.DType.Size()
	if size == 0 {
		return fmt.Errorf("tensor %s: unknown dtype %q", t.Name, t.DType)
	}
	n, err := elements(t.Shape)
	if err != nil {
		return fmt.Errorf("tensor %s: %w", t.Name, err)
	}
	if n > math.MaxInt/size || n*size != len(t.Data) {
		return fmt.Errorf("tensor %s: %d data bytes, shape %v of %s needs %d x %d", t.Name, len(t.Data), t.Shape, t.DType, n, size)
	}
	return nil
}

// FromFloat32 makes an F32 tensor of vals with shape.
func FromFloat32(name string, shape []int, vals []float32) Tensor {
	data := make([]byte, 0, 4*len(vals))
	for _, v := range vals {
		data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
	}
	return Tensor{Name: name, DType: F32, Shape: shape, Data: data}
}

// Float32 decodes an F32 tensor's values.
func (t *Tensor) Float32() ([]float32, error) {
	if t.DType != F32 {
		return nil, fmt.Errorf("tensor %s: dtype %q, want %s", t.Name, t.DType, F32)
	}
	if len(t.Data)%4 != 0 {
		return nil, fmt.Errorf("tensor %s: %d data bytes is not a whole number of float32", t.Name, len(t.Data))
	}
	vals := make([]float32, len(t.Data)/4)
	for i := range vals {
		vals[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return vals, nil
}

// entry is a tensor's header record. Field order is the write order, which files already on disk
// depend on for their bytes.
type entry struct {
	DType       DType  `json:"dtype"`
	Shape       []int  `json:"shape"`
	DataOffsets [2]int `json:"data_offsets"`
}

// Encode returns f as a tensor file.
func Encode(f *File, opts Options) ([]byte, error) {
	ts := slices.Clone(f.Tensors)
	slices.SortFunc(ts, func(a, b Tensor) int { return strings.Compare(a.Name, b.Name) })
	total := 0
	for i := range ts {
		if err := ts[i].check(); err != nil {
			return nil, fmt.Errorf("encode tensor file: %w", err)
		}
		if i > 0 && ts[i].Name == ts[i-1].Name {
			return nil, fmt.Errorf("encode tensor file: tensor %s: duplicate name", ts[i].Name)
		}
		total += len(ts[i].Data)
	}
	// Written through map[string]any so that the header is exactly what the hand-written writers
	// before this package produced: keys sorted, encoding/json's escaping.
	header := make(map[string]any, len(ts)+1)
	data := make([]byte, 0, total)
	for _, t := range ts {
		start := len(data)
		data = append(data, t.Data...)
		header[t.Name] = entry{DType: t.DType, Shape: t.Shape, DataOffsets: [2]int{start, len(data)}}
	}
	meta := f.Metadata
	if opts.Checksum {
		meta = make(map[string]string, len(f.Metadata)+1)
		for k, v := range f.Metadata {
			meta[k] = v
		}
		meta[ChecksumKey] = sum(data)
	}
	if len(meta) > 0 {
		header[MetadataKey] = meta
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return nil, fmt.Errorf("encode tensor file: header: %w", err)
	}
	// Padding to 8 bytes keeps the data section aligned for readers that map the file.
	for len(hb)%8 != 0 {
		hb = append(hb, ' ')
	}
	if len(hb) > MaxHeaderLen {
		return nil, fmt.Errorf("encode tensor file: header of %d bytes exceeds %d", len(hb), MaxHeaderLen)
	}
	out := make([]byte, 0, 8+len(hb)+len(data))
	out = binary.LittleEndian.AppendUint64(out, uint64(len(hb)))
	return append(append(out, hb...), data...), nil
}

// Write writes f to w as a tensor file.
func Write(w io.Writer, f *File, opts Options) error {
	b, err := Encode(f, opts)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write tensor file: %w", err)
	}
	return nil
}

// sum is the hex SHA-256 of b, as recorded under ChecksumKey.
func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Parse reads and checks a tensor file. The tensors' Data alias b.
func Parse(b []byte, opts Options) (*File, error) {
	if len(b) < 8 {
		return nil, fmt.Errorf("%d bytes, too short for a safetensors header", len(b))
	}
	limit := MaxHeaderLen
	if opts.MaxHeaderLen > 0 && opts.MaxHeaderLen < limit {
		limit = opts.MaxHeaderLen
	}
	n := binary.LittleEndian.Uint64(b)
	if n > uint64(len(b)-8) || n > uint64(limit) {
		return nil, fmt.Errorf("header length %d does not fit the file (%d bytes, at most %d of header): truncated or not safetensors", n, len(b), limit)
	}
	raw, err := splitHeader(b[8 : 8+n])
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	data := b[8+n:]
	f := &File{}
	if m, ok := raw[MetadataKey]; ok {
		if err := json.Unmarshal(m, &f.Metadata); err != nil {
			return nil, fmt.Errorf("header %s: %w", MetadataKey, err)
		}
		delete(raw, MetadataKey)
	}
	if opts.Checksum {
		want, ok := f.Metadata[ChecksumKey]
		if !ok {
			return nil, fmt.Errorf("no %s in %s: %w", ChecksumKey, MetadataKey, ErrChecksum)
		}
		if got := sum(data); got != want {
			return nil, fmt.Errorf("%w: data sha256 %s, header says %s (file corrupt)", ErrChecksum, got, want)
		}
	}
	names := make([]string, 0, len(raw))
	for name := range raw {
		names = append(names, name)
	}
	slices.Sort(names)
	f.Tensors = make([]Tensor, len(names))
	spans := make([]span, len(names))
	for i, name := range names {
		e, err := parseEntry(raw[name])
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", name, err)
		}
		lo, hi := e.DataOffsets[0], e.DataOffsets[1]
		if lo < 0 || hi < lo || hi > len(data) {
			return nil, fmt.Errorf("tensor %s: data offsets [%d,%d) out of range of %d data bytes", name, lo, hi, len(data))
		}
		f.Tensors[i] = Tensor{Name: name, DType: e.DType, Shape: e.Shape, Data: data[lo:hi:hi]}
		if err := f.Tensors[i].check(); err != nil {
			return nil, err
		}
		spans[i] = span{name, lo, hi}
	}
	if err := tile(spans, len(data)); err != nil {
		return nil, err
	}
	return f, nil
}

// splitHeader splits the header object into its entries, refusing duplicate keys, which
// encoding/json would otherwise resolve silently to the last one.
func splitHeader(hb []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(hb))
	if tok, err := dec.Token(); err != nil {
		return nil, err
	} else if tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object")
	}
	raw := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name := tok.(string) // inside an object, encoding/json only yields string keys
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("entry %s: %w", name, err)
		}
		if _, dup := raw[name]; dup {
			return nil, fmt.Errorf("entry %s: duplicate name", name)
		}
		raw[name] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	// Only the padding may follow the object.
	if rest := bytes.TrimLeft(hb[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return nil, fmt.Errorf("%d bytes after the JSON object", len(rest))
	}
	return raw, nil
}

// parseEntry decodes a tensor's header record, refusing unknown fields and offsets that are not a
// pair (encoding/json would drop extra elements of [2]int and zero-fill missing ones).
func parseEntry(msg json.RawMessage) (entry, error) {
	var e struct {
		DType       DType `json:"dtype"`
		Shape       []int `json:"shape"`
		DataOffsets []int `json:"data_offsets"`
	}
	dec := json.NewDecoder(bytes.NewReader(msg))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return entry{}, err
	}
	if len(e.DataOffsets) != 2 {
		return entry{}, fmt.Errorf("data_offsets %v, want [begin, end]", e.DataOffsets)
	}
	return entry{DType: e.DType, Shape: e.Shape, DataOffsets: [2]int{e.DataOffsets[0], e.DataOffsets[1]}}, nil
}

type span struct {
	name   string
	lo, hi int
}

// tile checks that the spans cover [0, size) exactly, without gaps or overlaps, as the format
// requires and as every writer lays them out.
func tile(spans []span, size int) error {
	spans = slices.Clone(spans)
	slices.SortStableFunc(spans, func(a, b span) int {
		if a.lo != b.lo {
			return a.lo - b.lo
		}
		return a.hi - b.hi
	})
	end, prev := 0, ""
	for _, s := range spans {
		switch {
		case s.lo < end:
			return fmt.Errorf("tensor %s: data offsets [%d,%d) overlap tensor %s", s.name, s.lo, s.hi, prev)
		case s.lo > end:
			return fmt.Errorf("tensor %s: data offsets [%d,%d) leave a gap of %d bytes before them", s.name, s.lo, s.hi, s.lo-end)
		}
		end, prev = s.hi, s.name
	}
	if end != size {
		return fmt.Errorf("%d data bytes after the last tensor", size-end)
	}
	return nil
}
