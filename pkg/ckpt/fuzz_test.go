package ckpt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/bicot-rl/bicot/pkg/store/local"
)

// FuzzParseManifest: a checkpoint's MANIFEST.json as read back from the object store (the coordinator
// and the learner resume from it; anyone with write access to the bucket can put one there).
func FuzzParseManifest(f *testing.F) {
	st, err := local.New(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	m, err := Save(ctx, st, "run1", 7, map[string][]byte{PartWeights: []byte("w"), PartCursor: []byte("{}"), PartRunState: nil},
		Meta{PolicyVersion: 7, Metrics: map[string]float64{"reward_mean": 0.5}, Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)})
	if err != nil {
		f.Fatal(err)
	}
	r, err := st.Get(ctx, m.Key)
	if err != nil {
		f.Fatal(err)
	}
	good, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(m.Key, good)
	f.Add("", good)
	f.Add(ManifestKey("run1", 8), good)
	f.Add(m.Key, good[:len(good)/2])
	f.Add(m.Key, bytes.Replace(good, []byte(`"version": 1`), []byte(`"version": 2`), 1))
	f.Add(m.Key, bytes.Replace(good, []byte(`"name": "cursor"`), []byte(`"name": "weights"`), 1))
	f.Add(m.Key, bytes.Replace(good, []byte(`run1/checkpoints/000000000007/cursor`), []byte(`run1/checkpoints/000000000007/../x`), 1))
	f.Add(ManifestKey("a/b", 0), []byte(`{"version":1,"run":"a/b","step":0,"parts":[{"name":"w","key":"a/b/checkpoints/000000000000/w","size":-1,"sha256":""}]}`))
	f.Add("k", []byte(`{"version":1,"run":"","parts":null}`))
	f.Fuzz(func(t *testing.T, key string, body []byte) {
		// As stored at the given key, and at the key its own run and step name (the one place a
		// reader looks for it).
		keys := []string{key}
		var probe Manifest
		if json.Unmarshal(body, &probe) == nil && validateRun(probe.Run) == nil {
			keys = append(keys, ManifestKey(probe.Run, probe.Step))
		}
		for _, k := range keys {
			m, err := parseManifest(k, body)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("refused manifest: %v, not ErrCorrupt", err)
				}
				continue
			}
			if m.Key != k {
				t.Fatalf("manifest read at %q has key %q", k, m.Key)
			}
			for _, p := range m.Parts {
				if got, ok := m.Part(p.Name); !ok || got != p {
					t.Fatalf("part %q not found by name", p.Name)
				}
			}
			_ = m.Size()
		}
	})
}
