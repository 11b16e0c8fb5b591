package trainer

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/model"
)

// sumPlaceholder stands for a SHA-256 in fuzz inputs (the state's, and each checkpoint's data
// section's); withSums writes the real sums over it, so that mutated states still pass the
// checksums and reach the checks behind them.
var sumPlaceholder = strings.Repeat("5", 64)

// headerSplit returns where the JSON header of a length-prefixed file (a learner state, a
// safetensors checkpoint) ends, or -1.
func headerSplit(b []byte) int {
	if len(b) < 8 {
		return -1
	}
	n := binary.LittleEndian.Uint64(b)
	if n > uint64(len(b)-8) {
		return -1
	}
	return int(8 + n)
}

// fillSum writes the SHA-256 of what follows b's header over sumPlaceholder in the header.
func fillSum(b []byte) {
	end := headerSplit(b)
	if end < 0 {
		return
	}
	s := sha256.Sum256(b[end:])
	copy(b[8:end], bytes.ReplaceAll(b[8:end], []byte(sumPlaceholder), []byte(hex.EncodeToString(s[:]))))
}

// withSums fills in the checkpoints' sums, then the state's.
func withSums(b []byte) []byte {
	end := headerSplit(b)
	if end < 0 {
		return b
	}
	var h stateHeader
	if json.Unmarshal(b[8:end], &h) != nil || h.PolicyBytes < 0 || h.PolicyBytes > len(b)-end {
		return b
	}
	out := bytes.Clone(b)
	fillSum(out[end : end+h.PolicyBytes])
	fillSum(out[end+h.PolicyBytes:])
	fillSum(out)
	return out
}

// FuzzParseState: a saved learner state (Trainer.Save) as the learner resumes from it, read from
// a checkpoint in the object store. It covers what Load and Restore check before they build or
// change a model: the layout, the checksums, both checkpoints and the options. Load itself is left
// out: it builds two policies on a backend for every input.
func FuzzParseState(f *testing.F) {
	m := newPolicy(f, tinyConfig(), 1)
	var pol, ref bytes.Buffer
	if err := m.Save(&pol, model.SaveOptions{Optimizer: true}); err != nil {
		f.Fatal(err)
	}
	if err := m.Save(&ref, model.SaveOptions{}); err != nil {
		f.Fatal(err)
	}
	placeholder := func(ck []byte) []byte {
		end := headerSplit(ck)
		s := sha256.Sum256(ck[end:])
		return bytes.Replace(ck, []byte(hex.EncodeToString(s[:])), []byte(sumPlaceholder), 1)
	}
	p, r := placeholder(pol.Bytes()), placeholder(ref.Bytes())
	o := DefaultOptions()
	o.InitialVersion = 3
	hb, err := json.Marshal(stateHeader{Format: StateFormat, Version: 4, Steps: 1, Options: o,
		PolicyBytes: len(p), ReferenceBytes: len(r), SHA256: sumPlaceholder})
	if err != nil {
		f.Fatal(err)
	}
	good := binary.LittleEndian.AppendUint64(nil, uint64(len(hb)))
	good = append(append(append(good, hb...), p...), r...)
	if _, err := parseState(withSums(good)); err != nil {
		f.Fatalf("seed state refused: %v", err)
	}
	f.Add(good)
	f.Add(good[:len(good)-9])
	f.Add(bytes.Replace(good, []byte(`"version":4`), []byte(`"version":-4`), 1))
	f.Add(bytes.Replace(good, []byte(`"format":"bicot-learner/1"`), []byte(`"format":"bicot-learner/2"`), 1))
	f.Add([]byte("\x02\x00\x00\x00\x00\x00\x00\x00{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := parseState(withSums(b))
		if err != nil {
			return
		}
		pc, err := model.ParseCheckpoint(ps.policy)
		if err != nil {
			return
		}
		rc, err := model.ParseCheckpoint(ps.refere)
		if err != nil {
			return
		}
		if !pc.Config.Equal(rc.Config) {
			return
		}
		_ = ps.header.Options.Validate()
	})
}
