package tensorfile

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func sample() *File {
	return &File{
		Tensors: []Tensor{
			FromFloat32("b/weights", []int{2, 3}, []float32{1, -2, 3.5, 0, float32(math.Pi), -0}),
			{Name: "a/count", DType: I64, Shape: nil, Data: binary.LittleEndian.AppendUint64(nil, 42)},
			{Name: "c/empty", DType: F32, Shape: []int{0, 4}, Data: []byte{}},
			{Name: "d/bytes", DType: U8, Shape: []int{3}, Data: []byte{7, 8, 9}},
			{Name: "e/half", DType: BF16, Shape: []int{1}, Data: []byte{0x80, 0x3f}},
		},
		Metadata: map[string]string{"format": "test/1", "note": "<&> \"quoted\""},
	}
}

func encode(t *testing.T, f *File, opts Options) []byte {
	t.Helper()
	b, err := Encode(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	for _, opts := range []Options{{}, {Checksum: true}} {
		f := sample()
		b := encode(t, f, opts)
		if n := binary.LittleEndian.Uint64(b); n%8 != 0 || int(n) != len(b)-8-dataLen(f) {
			t.Fatalf("header length %d: not padded to 8 bytes or data not right after it", n)
		}
		var buf bytes.Buffer
		if err := Write(&buf, f, opts); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), b) {
			t.Fatal("Write and Encode differ")
		}
		got, err := Parse(b, opts)
		if err != nil {
			t.Fatal(err)
		}
		want := slices.Clone(f.Tensors)
		slices.SortFunc(want, func(a, b Tensor) int { return strings.Compare(a.Name, b.Name) })
		if len(got.Tensors) != len(want) {
			t.Fatalf("%d tensors, want %d", len(got.Tensors), len(want))
		}
		for i, w := range want {
			g := got.Tensors[i]
			if g.Name != w.Name || g.DType != w.DType || !slices.Equal(g.Shape, w.Shape) || !bytes.Equal(g.Data, w.Data) {
				t.Fatalf("tensor %d: got %+v, want %+v", i, g, w)
			}
		}
		for k, v := range f.Metadata {
			if got.Metadata[k] != v {
				t.Fatalf("metadata %s = %q, want %q", k, got.Metadata[k], v)
			}
		}
		if _, ok := got.Metadata[ChecksumKey]; ok != opts.Checksum {
			t.Fatalf("checksum in metadata: %v, want %v", ok, opts.Checksum)
		}
		// Canonical: re-encoding the parsed file, in any tensor order, gives the same bytes.
		slices.Reverse(got.Tensors)
		if !bytes.Equal(encode(t, got, opts), b) {
			t.Fatal("re-encoded file differs")
		}
	}
}

func dataLen(f *File) int {
	n := 0
	for _, t := range f.Tensors {
		n += len(t.Data)
	}
	return n
}

func TestFloat32(t *testing.T) {
	vals := []float32{1, -2, 3.5, float32(math.Inf(1)), float32(math.SmallestNonzeroFloat32)}
	tt := FromFloat32("x", []int{5}, vals)
	if tt.DType != F32 || len(tt.Data) != 20 || binary.LittleEndian.Uint32(tt.Data) != math.Float32bits(1) {
		t.Fatalf("FromFloat32 = %+v", tt)
	}
	got, err := tt.Float32()
	if err != nil || !slices.Equal(got, vals) {
		t.Fatalf("Float32 = %v, %v", got, err)
	}
	tt.DType = F64
	if _, err := tt.Float32(); err == nil || !strings.Contains(err.Error(), "tensor x") {
		t.Fatalf("F64 read as float32: %v", err)
	}
}

func TestMetadata(t *testing.T) {
	f := &File{Tensors: []Tensor{FromFloat32("x", []int{1}, []float32{1})}}
	b := encode(t, f, Options{})
	if bytes.Contains(b, []byte(MetadataKey)) {
		t.Fatal("empty metadata written")
	}
	got, err := Parse(b, Options{})
	if err != nil || got.Metadata != nil {
		t.Fatalf("metadata %v, %v", got.Metadata, err)
	}
	// The writer's checksum wins over a stale one passed in, and the caller's map is not changed.
	f.Metadata = map[string]string{ChecksumKey: "stale", "k": "v"}
	b = encode(t, f, Options{Checksum: true})
	if f.Metadata[ChecksumKey] != "stale" {
		t.Fatal("caller's metadata modified")
	}
	got, err = Parse(b, Options{Checksum: true})
	if err != nil || got.Metadata["k"] != "v" || got.Metadata[ChecksumKey] == "stale" {
		t.Fatalf("metadata %v, %v", got.Metadata, err)
	}
	// Metadata values must be strings.
	bad := withHeader(t, `{"__metadata__":{"n":1},"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, []byte{1})
	if _, err := Parse(bad, Options{}); err == nil || !strings.Contains(err.Error(), MetadataKey) {
		t.Fatalf("numeric metadata: %v", err)
	}
}

// The files the project has always written parse and re-encode to the same bytes.
func TestCommittedFilesReencodeIdentically(t *testing.T) {
	paths, _ := filepath.Glob("../../models/experts/*.safetensors")
	paths = append(paths, "../../models/base.safetensors")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		f, err := Parse(b, Options{Checksum: true})
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if !bytes.Equal(encode(t, f, Options{Checksum: true}), b) {
			t.Fatalf("%s: re-encoded bytes differ", p)
		}
	}
}

// withHeader builds a file from a literal header (padded) and data.
func withHeader(t *testing.T, header string, data []byte) []byte {
	t.Helper()
	hb := []byte(header)
	for len(hb)%8 != 0 {
		hb = append(hb, ' ')
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(hb)))
	return append(append(out, hb...), data...)
}

func TestParseErrors(t *testing.T) {
	good := encode(t, sample(), Options{Checksum: true})
	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 0x40
	hugeLen := binary.LittleEndian.AppendUint64(nil, 1<<40)
	hugeLen = append(hugeLen, good[8:]...)
	two := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	for _, tc := range []struct {
		name string
		b    []byte
		opts Options
		want string
	}{
		{"empty", nil, Options{}, "too short"},
		{"short", good[:7], Options{}, "too short"},
		{"header length past the file", good[:100], Options{}, "header length"},
		{"header length huge", hugeLen, Options{}, "does not fit the file"},
		{"header length over caller bound", good, Options{MaxHeaderLen: 16}, "at most 16"},
		{"empty header", withHeader(t, "", nil), Options{}, "header"},
		{"header not an object", withHeader(t, `[1,2]`, nil), Options{}, "not a JSON object"},
		{"header not JSON", withHeader(t, `{"x":`, nil), Options{}, "header"},
		{"junk after header", withHeader(t, `{}x`, nil), Options{}, "after the JSON object"},
		{"duplicate name", withHeader(t, `{"x":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"x":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}`, two), Options{}, "entry x: duplicate name"},
		{"unknown dtype", withHeader(t, `{"x":{"dtype":"F128","shape":[1],"data_offsets":[0,8]}}`, two), Options{}, `tensor x: unknown dtype "F128"`},
		{"missing dtype", withHeader(t, `{"x":{"shape":[1],"data_offsets":[0,8]}}`, two), Options{}, `tensor x: unknown dtype ""`},
		{"unknown field", withHeader(t, `{"x":{"dtype":"U8","shape":[8],"data_offsets":[0,8],"extra":1}}`, two), Options{}, "tensor x: json: unknown field"},
		{"offsets not a pair", withHeader(t, `{"x":{"dtype":"U8","shape":[8],"data_offsets":[0,8,9]}}`, two), Options{}, "tensor x: data_offsets"},
		{"offsets missing", withHeader(t, `{"x":{"dtype":"U8","shape":[8]}}`, two), Options{}, "tensor x: data_offsets"},
		{"negative dimension", withHeader(t, `{"x":{"dtype":"U8","shape":[-8],"data_offsets":[0,8]}}`, two), Options{}, "tensor x: shape [-8] has a negative dimension"},
		{"overflowing shape", withHeader(t, `{"x":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, two), Options{}, "tensor x: shape"},
		{"wrong size for shape", withHeader(t, `{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, two), Options{}, "tensor x: 8 data bytes, shape [3] of F32 needs 3 x 4"},
		{"offset past data", withHeader(t, `{"x":{"dtype":"U8","shape":[9],"data_offsets":[0,9]}}`, two), Options{}, "tensor x: data offsets [0,9) out of range of 8"},
		{"negative offset", withHeader(t, `{"x":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}`, two), Options{}, "tensor x: data offsets [-1,0) out of range"},
		{"reversed offsets", withHeader(t, `{"x":{"dtype":"U8","shape":[0],"data_offsets":[4,3]}}`, two), Options{}, "tensor x: data offsets [4,3) out of range"},
		{"overlap", withHeader(t, `{"x":{"dtype":"U8","shape":[6],"data_offsets":[0,6]},"y":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}`, two), Options{}, "tensor y: data offsets [4,8) overlap tensor x"},
		{"same range twice", withHeader(t, `{"x":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"y":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}`, two), Options{}, "overlap tensor x"},
		{"gap", withHeader(t, `{"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"y":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}`, two), Options{}, "tensor y: data offsets [4,8) leave a gap of 2 bytes"},
		{"data after the last tensor", withHeader(t, `{"x":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}`, two), Options{}, "4 data bytes after the last tensor"},
		{"truncated data", withHeader(t, `{"x":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}`, two[:5]), Options{}, "tensor x: data offsets [0,8) out of range of 5"},
		{"reserved name as a tensor", withHeader(t, `{"__metadata__":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}`, two), Options{}, MetadataKey},
		{"checksum: flipped byte", flipped, Options{Checksum: true}, "checksum mismatch: data sha256"},
		{"checksum: truncated", good[:len(good)-2], Options{Checksum: true}, "checksum mismatch"},
		{"checksum: absent", withHeader(t, `{"x":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}`, two), Options{Checksum: true}, "no sha256 in __metadata__"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse(tc.b, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %+v, %v; want an error containing %q", f, err, tc.want)
			}
		})
	}
	if _, err := Parse(flipped, Options{Checksum: true}); !errors.Is(err, ErrChecksum) {
		t.Fatalf("checksum error %v is not ErrChecksum", err)
	}
	// Without Checksum the flipped file is structurally fine: the check is the caller's choice.
	if _, err := Parse(flipped, Options{}); err != nil {
		t.Fatal(err)
	}
	// Zero-sized tensors share an offset with their neighbours without overlapping them.
	ok := withHeader(t, `{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"c":{"dtype":"F64","shape":[2,0],"data_offsets":[8,8]}}`, two)
	if _, err := Parse(ok, Options{}); err != nil {
		t.Fatal(err)
	}
}

func TestEncodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		t    []Tensor
		want string
	}{
		{"empty name", []Tensor{{DType: U8, Shape: []int{1}, Data: []byte{1}}}, "empty name"},
		{"reserved name", []Tensor{{Name: MetadataKey, DType: U8, Shape: []int{1}, Data: []byte{1}}}, "reserved"},
		{"unknown dtype", []Tensor{{Name: "x", DType: "Q4", Shape: []int{1}, Data: []byte{1}}}, `tensor x: unknown dtype "Q4"`},
		{"wrong size for shape", []Tensor{{Name: "x", DType: F32, Shape: []int{2}, Data: []byte{1, 2, 3, 4}}}, "tensor x: 4 data bytes"},
		{"negative dimension", []Tensor{{Name: "x", DType: U8, Shape: []int{-1}}}, "tensor x: shape [-1]"},
		{"duplicate name", []Tensor{FromFloat32("x", []int{1}, []float32{1}), FromFloat32("x", []int{1}, []float32{2})}, "tensor x: duplicate name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Encode(&File{Tensors: tc.t}, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Encode error %v, want one containing %q", err, tc.want)
			}
			if err := Write(&bytes.Buffer{}, &File{Tensors: tc.t}, Options{}); err == nil {
				t.Fatal("Write accepted what Encode refused")
			}
		})
	}
}

// Other safetensors readers parse the header as plain JSON; the header written must be one.
func TestHeaderIsPlainJSON(t *testing.T) {
	b := encode(t, sample(), Options{Checksum: true})
	n := binary.LittleEndian.Uint64(b)
	var h map[string]any
	if err := json.Unmarshal(b[8:8+n], &h); err != nil {
		t.Fatal(err)
	}
	if len(h) != len(sample().Tensors)+1 {
		t.Fatalf("header has %d entries", len(h))
	}
}
