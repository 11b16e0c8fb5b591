package tensorfile

import (
	"bytes"
	"encoding/binary"
	"os"
	"slices"
	"strings"
	"testing"
)

// sumPlaceholder stands for the data section's SHA-256 in fuzz inputs: the target writes the
// real sum over it, so that mutated files still pass the checksum and reach the checks behind it.
var sumPlaceholder = strings.Repeat("5", 64)

// withSum returns b with sumPlaceholder in its header replaced by the SHA-256 of its data section.
func withSum(b []byte) []byte {
	if len(b) < 8 {
		return b
	}
	n := binary.LittleEndian.Uint64(b)
	if n > uint64(len(b)-8) {
		return b
	}
	out := bytes.Clone(b)
	copy(out[8:8+n], bytes.ReplaceAll(out[8:8+n], []byte(sumPlaceholder), []byte(sum(out[8+n:]))))
	return out
}

// FuzzParse: a tensor file (safetensors) as the workers read policy checkpoints from the object
// store and the experts' weights from disk.
func FuzzParse(f *testing.F) {
	for _, opts := range []Options{{}, {Checksum: true}} {
		b, err := Encode(sample(), opts)
		if err != nil {
			f.Fatal(err)
		}
		if opts.Checksum {
			b = bytes.Replace(b, []byte(sum(b[8+binary.LittleEndian.Uint64(b):])), []byte(sumPlaceholder), 1)
		}
		f.Add(b, opts.Checksum, uint32(0))
		f.Add(b, opts.Checksum, uint32(64))
		f.Add(b[:len(b)-3], opts.Checksum, uint32(0))
	}
	// The header of a real expert's weights, with a little of its data.
	if b, err := os.ReadFile("../../models/experts/detector.safetensors"); err == nil {
		n := binary.LittleEndian.Uint64(b)
		f.Add(b[:min(len(b), int(8+n+64))], false, uint32(0))
	} else {
		f.Fatal(err)
	}
	f.Add([]byte("\x10\x00\x00\x00\x00\x00\x00\x00{}              "), false, uint32(0))
	f.Add([]byte("\x30\x00\x00\x00\x00\x00\x00\x00{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}"), false, uint32(0))
	f.Add([]byte("\xff\xff\xff\xff\xff\xff\xff\xff{}"), false, uint32(0))
	f.Fuzz(func(t *testing.T, b []byte, checksum bool, maxHeader uint32) {
		opts := Options{Checksum: checksum, MaxHeaderLen: int(maxHeader)}
		if checksum {
			b = withSum(b)
		}
		file, err := Parse(b, opts)
		if err != nil {
			return
		}
		// An accepted file encodes again, and that encoding parses to the same tensors.
		again, err := Encode(file, Options{Checksum: checksum})
		if err != nil {
			t.Fatalf("accepted file does not encode: %v", err)
		}
		back, err := Parse(again, Options{Checksum: checksum})
		if err != nil {
			t.Fatalf("re-encoded file is refused: %v", err)
		}
		if len(back.Tensors) != len(file.Tensors) {
			t.Fatalf("%d tensors after re-encoding, %d before", len(back.Tensors), len(file.Tensors))
		}
		for i, x := range file.Tensors {
			y := back.Tensors[i]
			if x.Name != y.Name || x.DType != y.DType || !slices.Equal(x.Shape, y.Shape) || !bytes.Equal(x.Data, y.Data) {
				t.Fatalf("tensor %d changed by re-encoding: %s %s %v -> %s %s %v", i, x.Name, x.DType, x.Shape, y.Name, y.DType, y.Shape)
			}
		}
	})
}
