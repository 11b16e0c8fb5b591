package model

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"
)

// sumPlaceholder stands for the data section's SHA-256 in fuzz inputs; withSum writes the real
// sum over it, so that mutated checkpoints still pass the checksum and reach the checks behind it.
var sumPlaceholder = strings.Repeat("5", 64)

func dataSum(b []byte) (string, int) {
	if len(b) < 8 {
		return "", -1
	}
	n := binary.LittleEndian.Uint64(b)
	if n > uint64(len(b)-8) {
		return "", -1
	}
	s := sha256.Sum256(b[8+n:])
	return hex.EncodeToString(s[:]), int(8 + n)
}

// withSum returns b with sumPlaceholder in its header replaced by the SHA-256 of its data section.
func withSum(b []byte) []byte {
	s, end := dataSum(b)
	if end < 0 {
		return b
	}
	out := bytes.Clone(b)
	copy(out[8:end], bytes.ReplaceAll(out[8:end], []byte(sumPlaceholder), []byte(s)))
	return out
}

// FuzzParseCheckpoint: a policy checkpoint as rollout workers fetch it from the object store
// (the key a policy announcement names) and the learner resumes from it.
func FuzzParseCheckpoint(f *testing.F) {
	m := tinyModel(f, 1)
	for _, opts := range []SaveOptions{{}, {Optimizer: true}} {
		var buf bytes.Buffer
		if err := m.Save(&buf, opts); err != nil {
			f.Fatal(err)
		}
		b := buf.Bytes()
		s, _ := dataSum(b)
		b = bytes.Replace(b, []byte(s), []byte(sumPlaceholder), 1)
		f.Add(b)
		f.Add(bytes.Replace(b, []byte(`"text_len":12`), []byte(`"text_len":2`), 1))
		f.Add(bytes.Replace(b, []byte(`"F32"`), []byte(`"F16"`), 1))
		f.Add(b[:len(b)-5])
	}
	f.Add([]byte("\x08\x00\x00\x00\x00\x00\x00\x00{}      "))
	f.Fuzz(func(t *testing.T, b []byte) {
		b = withSum(b)
		ck, err := ParseCheckpoint(b)
		if err != nil {
			return
		}
		if err := ck.Config.Validate(); err != nil {
			t.Fatalf("accepted checkpoint has an invalid config: %v", err)
		}
		// What a rollout worker does with weights of its own config: load them into its policy.
		if ck.Config.Equal(m.Config) {
			_ = m.LoadWeights(b)
		}
	})
}
