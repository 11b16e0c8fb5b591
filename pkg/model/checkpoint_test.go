package model

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/tensorfile"
)

func saveBytes(t *testing.T, m *Model, opts SaveOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := m.Save(&buf, opts); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestCheckpointRoundTrip(t *testing.T) {
	m := tinyModel(t, 4)
	b := saveBytes(t, m, SaveOptions{})
	m2, err := Load(m.Backend, b)
	if err != nil {
		t.Fatal(err)
	}
	if !m2.Config.Equal(m.Config) {
		t.Fatalf("config %+v vs %+v", m2.Config, m.Config)
	}
	if !bytes.Equal(saveBytes(t, m2, SaveOptions{}), b) {
		t.Fatal("re-saved checkpoint differs")
	}
	req := SampleRequest{Prompts: tinyPrompts, G: 2, Seed: 3, CFGWeight: 2}
	s1, err := m.Sample(req)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := m2.Sample(req)
	if err != nil {
		t.Fatal(err)
	}
	for i := range s1 {
		for p := range s1[i].ImageLogp {
			if s1[i].ImageLogp[p] != s2[i].ImageLogp[p] {
				t.Fatalf("sample %d differs after reload", i)
			}
		}
	}
}

// rewriteHeader edits a checkpoint's JSON header, keeping its data.
func rewriteHeader(t *testing.T, b []byte, edit func(h map[string]json.RawMessage)) []byte {
	t.Helper()
	n := binary.LittleEndian.Uint64(b[:8])
	var h map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &h); err != nil {
		t.Fatal(err)
	}
	edit(h)
	hb, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(hb)))
	return append(append(out, hb...), b[8+n:]...)
}

// withoutTensor rewrites a checkpoint without one tensor, as a valid file: its data goes too,
// since a header entry dropped alone would leave a gap that the format refuses.
func withoutTensor(t *testing.T, b []byte, name string) []byte {
	t.Helper()
	f, err := tensorfile.Parse(b, tensorfile.Options{Checksum: true})
	if err != nil {
		t.Fatal(err)
	}
	f.Tensors = slices.DeleteFunc(f.Tensors, func(t tensorfile.Tensor) bool { return t.Name == name })
	out, err := tensorfile.Encode(f, tensorfile.Options{Checksum: true})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCheckpointErrors(t *testing.T) {
	m := tinyModel(t, 6)
	good := saveBytes(t, m, SaveOptions{})
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)-3] ^= 0x40
	const weight = "policy/layer_0/attn/query/dense/weights"
	missing := withoutTensor(t, good, weight)
	reshaped := rewriteHeader(t, good, func(h map[string]json.RawMessage) {
		var e struct {
			DType       string `json:"dtype"`
			Shape       []int  `json:"shape"`
			DataOffsets [2]int `json:"data_offsets"`
		}
		_ = json.Unmarshal(h[weight], &e)
		e.Shape = []int{e.Shape[0] * e.Shape[1], e.Shape[2]} // same bytes, wrong shape
		h[weight], _ = json.Marshal(e)
	})
	otherCfg := tinyConfig()
	otherCfg.DModel = 32
	other, err := New(m.Backend, otherCfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		run  func() error
		want string
	}{
		{"checksum", func() error { _, err := Load(m.Backend, corrupt); return err }, "checksum mismatch"},
		{"truncated", func() error { _, err := Load(m.Backend, good[:len(good)/2]); return err }, "checksum"},
		{"empty", func() error { _, err := Load(m.Backend, nil); return err }, "too short"},
		{"garbage", func() error { _, err := Load(m.Backend, []byte("0123456789abcdef")); return err }, "header length"},
		{"missing tensor", func() error { _, err := Load(m.Backend, missing); return err }, "missing tensor " + weight},
		{"shape", func() error { _, err := Load(m.Backend, reshaped); return err }, "shape"},
		{"config mismatch", func() error { return other.LoadWeights(good) }, "does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	// A failed load leaves the model's weights untouched.
	if err := m.LoadWeights(missing); err == nil {
		t.Fatal("missing tensor accepted")
	}
	if !bytes.Equal(saveBytes(t, m, SaveOptions{}), good) {
		t.Fatal("failed load changed the weights")
	}
}

// The committed base policy re-saves to the same bytes: the writer has not changed the format.
func TestBaseCheckpointResavesIdentically(t *testing.T) {
	want, err := os.ReadFile("../../models/base.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	backend, err := mlx.NewBackend("")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Load(backend, want)
	if err != nil {
		t.Fatal(err)
	}
	if got := saveBytes(t, m, SaveOptions{}); !bytes.Equal(got, want) {
		t.Fatalf("re-saved base checkpoint differs: %d bytes, file has %d", len(got), len(want))
	}
}
