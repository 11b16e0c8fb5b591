package ckpt_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/bicot-rl/bicot/pkg/ckpt"
	"github.com/bicot-rl/bicot/pkg/store"
	"github.com/bicot-rl/bicot/pkg/store/local"
	"github.com/bicot-rl/bicot/pkg/store/s3/s3test"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// forEachStore runs fn on a local directory store and on an S3 store (versitygw).
func forEachStore(t *testing.T, fn func(t *testing.T, st store.Store)) {
	t.Run("local", func(t *testing.T) {
		st, err := local.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		fn(t, st)
	})
	t.Run("s3", func(t *testing.T) {
		srv := s3test.Start(t)
		fn(t, srv.NewStore(t, "", zerolog.Nop()))
	})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

var created = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func parts(step int64) map[string][]byte {
	return map[string][]byte{
		ckpt.PartWeights:  bytes.Repeat([]byte{byte(step)}, 4096+int(step)),
		"optimizer":       bytes.Repeat([]byte{byte(step + 1)}, 8192),
		"rng":             []byte(fmt.Sprintf("pcg:%d", step)),
		ckpt.PartCursor:   []byte(fmt.Sprintf(`{"epoch":0,"offset":%d}`, step*8)),
		ckpt.PartRunState: []byte(`{"format":1}`),
	}
}

func save(t *testing.T, st store.Store, run string, step int64, score float64) ckpt.Manifest {
	t.Helper()
	m, err := ckpt.Save(ctxT(t), st, run, step, parts(step), ckpt.Meta{PolicyVersion: step, Metrics: map[string]float64{"eval": score}, Created: created})
	if err != nil {
		t.Fatalf("save step %d: %v", step, err)
	}
	return m
}

func TestSaveLatestLoad(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		ctx := ctxT(t)
		if _, err := ckpt.Latest(ctx, st, "r1"); !errors.Is(err, ckpt.ErrNoCheckpoint) {
			t.Fatalf("Latest on an empty store: %v, want ErrNoCheckpoint", err)
		}
		save(t, st, "r1", 10, 0.5)
		m := save(t, st, "r1", 20, 0.6)
		save(t, st, "other", 30, 0.9)

		got, err := ckpt.Latest(ctx, st, "r1")
		if err != nil {
			t.Fatal(err)
		}
		if got.Step != 20 || got.PolicyVersion != 20 || got.Metrics["eval"] != 0.6 || !got.Created.Equal(created) ||
			got.Key != "r1/checkpoints/000000000020/MANIFEST.json" || !reflect.DeepEqual(got.Parts, m.Parts) {
			t.Fatalf("Latest = %+v, want step 20 as saved (%+v)", got, m)
		}
		for name, want := range parts(20) {
			data, err := ckpt.Load(ctx, st, got, name)
			if err != nil || !bytes.Equal(data, want) {
				t.Fatalf("Load %s: %d bytes, %v", name, len(data), err)
			}
		}
		if _, err := ckpt.Load(ctx, st, got, "nope"); err == nil {
			t.Fatal("Load of a missing part succeeded")
		}
		ms, err := ckpt.List(ctx, st, "r1")
		if err != nil || len(ms) != 2 || ms[0].Step != 10 || ms[1].Step != 20 {
			t.Fatalf("List = %v, %v; want steps 10, 20", ms, err)
		}
		if _, err := ckpt.Save(ctx, st, "r1", 20, parts(20), ckpt.Meta{}); !errors.Is(err, ckpt.ErrExists) {
			t.Fatalf("re-saving a committed step: %v, want ErrExists", err)
		}
		if got, err := ckpt.Latest(ctx, st, "r1", ckpt.VerifySizesOnly()); err != nil || got.Step != 20 {
			t.Fatalf("Latest(sizes only) = %d, %v", got.Step, err)
		}
	})
}

func TestPartialCheckpointIgnored(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		ctx := ctxT(t)
		save(t, st, "r1", 1, 0.1)
		// A save that crashed before its manifest: parts of step 2, no MANIFEST.json.
		for name, data := range parts(2) {
			if err := st.Put(ctx, ckpt.Dir("r1", 2)+name, bytes.NewReader(data), int64(len(data))); err != nil {
				t.Fatal(err)
			}
		}
		got, err := ckpt.Latest(ctx, st, "r1")
		if err != nil || got.Step != 1 {
			t.Fatalf("Latest = step %d, %v; want the committed step 1", got.Step, err)
		}
		ms, _ := ckpt.List(ctx, st, "r1")
		if len(ms) != 1 {
			t.Fatalf("List = %d manifests, want 1", len(ms))
		}
	})
}

func TestCorruptedCheckpointFallsBack(t *testing.T) {
	cases := []struct {
		name   string
		damage func(ctx context.Context, st store.Store, m ckpt.Manifest) error
		reason string
	}{
		{"part altered", func(ctx context.Context, st store.Store, m ckpt.Manifest) error {
			p, _ := m.Part(ckpt.PartWeights)
			data := bytes.Repeat([]byte{0xEE}, int(p.Size))
			return st.Put(ctx, p.Key, bytes.NewReader(data), int64(len(data)))
		}, "sha256"},
		{"part truncated", func(ctx context.Context, st store.Store, m ckpt.Manifest) error {
			p, _ := m.Part("optimizer")
			return st.Put(ctx, p.Key, bytes.NewReader([]byte("short")), 5)
		}, "bytes, manifest says"},
		{"part missing", func(ctx context.Context, st store.Store, m ckpt.Manifest) error {
			p, _ := m.Part("rng")
			return st.Delete(ctx, p.Key)
		}, "not found"},
		{"manifest garbled", func(ctx context.Context, st store.Store, m ckpt.Manifest) error {
			return st.Put(ctx, m.Key, bytes.NewReader([]byte("{not json")), 9)
		}, "manifest"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, st store.Store) {
				ctx := ctxT(t)
				save(t, st, "r1", 1, 0.1)
				bad := save(t, st, "r1", 2, 0.2)
				if err := c.damage(ctx, st, bad); err != nil {
					t.Fatal(err)
				}
				var logs bytes.Buffer
				got, err := ckpt.Latest(ctx, st, "r1", ckpt.WithLogger(zerolog.New(&logs)))
				if err != nil || got.Step != 1 {
					t.Fatalf("Latest = step %d, %v; want the previous good step 1", got.Step, err)
				}
				line := logs.String()
				if !strings.Contains(line, `"level":"warn"`) || !strings.Contains(line, `"step":2`) ||
					!strings.Contains(line, "skipping corrupted checkpoint") || !strings.Contains(line, c.reason) {
					t.Fatalf("warning = %s; want a warn line naming step 2 and %q", line, c.reason)
				}
				// Loading the damaged one directly fails too.
				if _, err := ckpt.Load(ctx, st, bad, ckpt.PartWeights); c.name == "part altered" && !errors.Is(err, ckpt.ErrCorrupt) {
					t.Fatalf("Load of the altered part: %v, want ErrCorrupt", err)
				}
			})
		})
	}
}

func TestPrune(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		ctx := ctxT(t)
		scores := map[int64]float64{1: 0.3, 2: 0.9, 4: 0.5, 5: 0.1, 6: 0.4, 7: 0.2}
		for _, s := range []int64{1, 2, 4, 5, 6, 7} {
			save(t, st, "r1", s, scores[s])
		}
		putParts := func(step int64) {
			for name, data := range parts(step) {
				if err := st.Put(ctx, ckpt.Dir("r1", step)+name, bytes.NewReader(data), int64(len(data))); err != nil {
					t.Fatal(err)
				}
			}
		}
		putParts(3) // a crashed save below the newest: debris
		putParts(9) // a save in progress above the newest: must survive

		if _, err := ckpt.Prune(ctx, st, "r1", ckpt.Retention{KeepLast: 0}); err == nil {
			t.Fatal("keep-last 0 accepted")
		}
		removed, err := ckpt.Prune(ctx, st, "r1", ckpt.Retention{KeepLast: 2, KeepBest: 1, Metric: "eval"}, ckpt.WithLogger(zerolog.Nop()))
		if err != nil {
			t.Fatal(err)
		}
		if want := []int64{1, 3, 4, 5}; !reflect.DeepEqual(removed, want) {
			t.Fatalf("removed %v, want %v", removed, want)
		}
		ms, err := ckpt.List(ctx, st, "r1")
		if err != nil {
			t.Fatal(err)
		}
		var steps []int64
		for _, m := range ms {
			steps = append(steps, m.Step)
		}
		if !reflect.DeepEqual(steps, []int64{2, 6, 7}) {
			t.Fatalf("kept %v, want best (2) and last two (6, 7)", steps)
		}
		for _, s := range []int64{1, 3, 4, 5} {
			objs, _ := st.List(ctx, ckpt.Dir("r1", s))
			if len(objs) != 0 {
				t.Fatalf("step %d left %d objects", s, len(objs))
			}
		}
		if objs, _ := st.List(ctx, ckpt.Dir("r1", 9)); len(objs) != len(parts(9)) {
			t.Fatalf("in-progress step 9 has %d objects left, want all %d", len(objs), len(parts(9)))
		}
		// Lower-is-better keeps the minimum instead.
		removed, err = ckpt.Prune(ctx, st, "r1", ckpt.Retention{KeepLast: 1, KeepBest: 1, Metric: "eval", LowerIsBetter: true})
		if err != nil || !reflect.DeepEqual(removed, []int64{2, 6}) {
			t.Fatalf("second prune removed %v, %v; want [2 6] (7 is both newest and lowest)", removed, err)
		}
	})
}

func TestSaveRejectsBadInput(t *testing.T) {
	st, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	cases := []struct {
		run   string
		step  int64
		parts map[string][]byte
		meta  ckpt.Meta
		want  string
	}{
		{"", 1, parts(1), ckpt.Meta{}, "empty run"},
		{"../x", 1, parts(1), ckpt.Meta{}, "segment"},
		{"r", -1, parts(1), ckpt.Meta{}, "negative step"},
		{"r", 1, nil, ckpt.Meta{}, "no parts"},
		{"r", 1, map[string][]byte{"a/b": nil}, ckpt.Meta{}, "bad part name"},
		{"r", 1, map[string][]byte{ckpt.ManifestName: nil}, ckpt.Meta{}, "bad part name"},
		{"r", 1, parts(1), ckpt.Meta{Metrics: map[string]float64{"loss": math.NaN()}}, `metric "loss"`},
	}
	for _, c := range cases {
		if _, err := ckpt.Save(ctx, st, c.run, c.step, c.parts, c.meta); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Save(%q, %d) error = %v, want it to mention %q", c.run, c.step, err, c.want)
		}
	}
	if objs, _ := st.List(ctx, ""); len(objs) != 0 {
		t.Fatalf("rejected saves wrote %d objects", len(objs))
	}
}

func TestWeights(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		ctx := ctxT(t)
		w1 := bytes.Repeat([]byte("w1"), 50000)
		key, sum, err := ckpt.PutWeights(ctx, st, "r1", 1, w1)
		if err != nil {
			t.Fatal(err)
		}
		if key != "r1/weights/000000000001.bin" || sum != ckpt.Sum(w1) {
			t.Fatalf("PutWeights = %s %s", key, sum)
		}
		got, err := ckpt.GetWeights(ctx, st, key, sum)
		if err != nil || !bytes.Equal(got, w1) {
			t.Fatalf("GetWeights: %d bytes, %v", len(got), err)
		}
		if _, err := ckpt.GetWeights(ctx, st, key, ckpt.Sum([]byte("announced other"))); !errors.Is(err, ckpt.ErrCorrupt) {
			t.Fatalf("GetWeights with the wrong announced sum: %v, want ErrCorrupt", err)
		}

		cache := ckpt.NewWeightCache(st)
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if d, err := cache.Get(ctx, key, sum); err != nil || !bytes.Equal(d, w1) {
					t.Errorf("cache.Get: %d bytes, %v", len(d), err)
				}
			}()
		}
		wg.Wait()
		if n := cache.Downloads(); n != 1 {
			t.Fatalf("%d downloads for one version, want 1", n)
		}
		w2 := bytes.Repeat([]byte("w2"), 1000)
		key2, sum2, err := ckpt.PutWeights(ctx, st, "r1", 2, w2)
		if err != nil {
			t.Fatal(err)
		}
		if d, err := cache.Get(ctx, key2, sum2); err != nil || !bytes.Equal(d, w2) {
			t.Fatalf("new version: %d bytes, %v", len(d), err)
		}
		if k, s := cache.Current(); k != key2 || s != sum2 || cache.Downloads() != 2 {
			t.Fatalf("cache holds %s %s after %d downloads", k, s, cache.Downloads())
		}
		if _, err := cache.Get(ctx, key, ckpt.Sum([]byte("x"))); err == nil {
			t.Fatal("cache accepted weights failing their checksum")
		}
		if k, _ := cache.Current(); k != key2 {
			t.Fatal("a failed fetch replaced the cached weights")
		}
	})
}
