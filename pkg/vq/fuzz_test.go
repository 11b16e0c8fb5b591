package vq

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzReadGeometry: a codebook file (models/codebook.vq, or the one a run config names) with a
// canonical header and a correct checksum, which FuzzRead's byte mutations rarely produce: the
// geometry, sizes and vectors are fuzzed, and the header and its sha256 are written to match, so
// the checks behind the checksum are reached. With consistent set, k, tokens_per_image and
// data_bytes are derived from the geometry and the data, as a writer would.
func FuzzReadGeometry(f *testing.F) {
	cb, err := Load(shipped)
	if err != nil {
		f.Fatal(err)
	}
	data := cb.rawData()
	h := cb.header()
	f.Add(uint8(h.Grid), uint8(h.Cell), uint8(h.Patch), h.Seed, true, uint32(h.K), uint32(h.Tokens), uint32(h.DataBytes), data[:4*3*h.Patch*h.Patch*Channels])
	f.Add(uint8(4), uint8(8), uint8(8), uint64(1), true, uint32(0), uint32(0), uint32(0), bytes.Repeat([]byte{0, 0, 0x7f, 0x43}, 8*8*3*2))
	f.Add(uint8(4), uint8(8), uint8(3), uint64(1), false, uint32(1), uint32(16), uint32(4*8*8*3), bytes.Repeat([]byte{0, 0, 0xc0, 0x7f}, 8*8*3))
	f.Add(uint8(16), uint8(64), uint8(1), uint64(0), false, uint32(1<<24), uint32(1<<20), uint32(1<<26), []byte{})
	f.Fuzz(func(t *testing.T, grid, cell, patch uint8, seed uint64, consistent bool, k, tokens, dataBytes uint32, data []byte) {
		h := header{Format: FormatName, Version: FormatVersion, Grid: int(grid), Cell: int(cell), ImageSize: int(grid) * int(cell),
			Patch: int(patch), Channels: Channels, K: int(k), Tokens: int(tokens), Seed: seed, DType: dtype, DataBytes: int(dataBytes)}
		if consistent && patch > 0 {
			dim := int(patch) * int(patch) * Channels
			h.K = len(data) / (4 * dim)
			h.DataBytes = 4 * h.K * dim
			side := h.ImageSize / int(patch)
			h.Tokens = side * side
		}
		if h.DataBytes <= len(data) {
			data = data[:h.DataBytes]
		}
		sum, err := digest(h, data)
		if err != nil {
			t.Fatal(err)
		}
		h.SHA256 = sum
		hb, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		file := append(append(hb, '\n'), data...)
		got, err := Read(bytes.NewReader(file))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if _, err := got.WriteTo(&out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), file) {
			t.Fatal("accepted file does not write back identically")
		}
		codes := make([]int, got.TokensPerImage())
		for i := range codes {
			codes[i] = i % got.K()
		}
		img, err := got.Decode(codes)
		if err != nil {
			t.Fatalf("accepted codebook cannot decode its own codes: %v", err)
		}
		if n := got.ImageSize(); img.Bounds().Dx() != n || img.Bounds().Dy() != n {
			t.Fatalf("decoded image is %v, want %dx%d", img.Bounds(), n, n)
		}
		if _, err := got.Encode(img); err != nil {
			t.Fatalf("accepted codebook cannot encode its own image: %v", err)
		}
	})
}
