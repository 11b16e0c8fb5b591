// Package storetest is the conformance suite every store.Store implementation runs: the local
// directory store and the S3 store call Run from their own tests, so both honour the same contract
// (atomic Put, ErrNotFound, sorted prefix listing, idempotent Delete, key validation, contexts).
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bicot-rl/bicot/pkg/store"
)

// Run runs the suite. newStore returns an empty store; it is called once per subtest, so each
// subtest starts from a clean store (an S3 implementation may use a fresh prefix or bucket).
func Run(t *testing.T, newStore func() store.Store) {
	t.Helper()
	cases := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"PutGetRoundTrip", testPutGet},
		{"PutUnknownSize", testPutUnknownSize},
		{"PutEmpty", testPutEmpty},
		{"Overwrite", testOverwrite},
		{"NotFound", testNotFound},
		{"Stat", testStat},
		{"ListPrefixSorted", testList},
		{"ListEmpty", testListEmpty},
		{"DeleteIdempotent", testDelete},
		{"InvalidKeys", testInvalidKeys},
		{"UnusualValidKeys", testUnusualKeys},
		{"FailedPutLeavesNothing", testFailedPut},
		{"CancelledContext", testCancelled},
		{"Concurrent", testConcurrent},
		{"LargeObject", testLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.fn(t, newStore())
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func put(t *testing.T, s store.Store, key string, data []byte) {
	t.Helper()
	if err := s.Put(ctx(t), key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func get(t *testing.T, s store.Store, key string) []byte {
	t.Helper()
	r, err := s.Get(ctx(t), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return b
}

func testPutGet(t *testing.T, s store.Store) {
	data := []byte("hello, weights")
	put(t, s, "runs/r1/ckpt/000001/weights.bin", data)
	if got := get(t, s, "runs/r1/ckpt/000001/weights.bin"); !bytes.Equal(got, data) {
		t.Fatalf("Get = %q, want %q", got, data)
	}
}

func testPutUnknownSize(t *testing.T, s store.Store) {
	data := bytes.Repeat([]byte("abc"), 1000)
	if err := s.Put(ctx(t), "a/unknown", bytes.NewReader(data), -1); err != nil {
		t.Fatalf("Put size -1: %v", err)
	}
	if got := get(t, s, "a/unknown"); !bytes.Equal(got, data) {
		t.Fatalf("Get returned %d bytes, want %d", len(got), len(data))
	}
}

func testPutEmpty(t *testing.T, s store.Store) {
	put(t, s, "empty", nil)
	if got := get(t, s, "empty"); len(got) != 0 {
		t.Fatalf("Get(empty) = %d bytes", len(got))
	}
	info, err := s.Stat(ctx(t), "empty")
	if err != nil {
		t.Fatalf("Stat(empty): %v", err)
	}
	if info.Size != 0 {
		t.Fatalf("Stat(empty).Size = %d", info.Size)
	}
}

func testOverwrite(t *testing.T, s store.Store) {
	put(t, s, "k", []byte("first version, longer"))
	put(t, s, "k", []byte("second"))
	if got := string(get(t, s, "k")); got != "second" {
		t.Fatalf("after overwrite Get = %q", got)
	}
}

func testNotFound(t *testing.T, s store.Store) {
	if _, err := s.Get(ctx(t), "missing/key"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(missing) error = %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(ctx(t), "missing/key"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Stat(missing) error = %v, want ErrNotFound", err)
	}
	// A "directory" that only exists as a prefix of other keys is not an object.
	put(t, s, "dir/child", []byte("x"))
	if _, err := s.Get(ctx(t), "dir"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(prefix-only dir) error = %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(ctx(t), "dir"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Stat(prefix-only dir) error = %v, want ErrNotFound", err)
	}
}

func testStat(t *testing.T, s store.Store) {
	before := time.Now().Add(-time.Minute)
	put(t, s, "x/y.json", []byte(`{"a":1}`))
	info, err := s.Stat(ctx(t), "x/y.json")
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if info.Key != "x/y.json" || info.Size != 7 {
		t.Fatalf("Stat = %+v, want key x/y.json size 7", info)
	}
	if info.Modified.Before(before) || info.Modified.After(time.Now().Add(time.Minute)) {
		t.Fatalf("Stat.Modified = %v, not near now", info.Modified)
	}
}

func testList(t *testing.T, s store.Store) {
	keys := []string{"b/2", "a/1", "a/10", "a/2", "a/sub/3", "ab", "c"}
	for i, k := range keys {
		put(t, s, k, []byte(strings.Repeat("z", i+1)))
	}
	check := func(prefix string, want []string) {
		t.Helper()
		got, err := s.List(ctx(t), prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		var names []string
		for _, o := range got {
			names = append(names, o.Key)
		}
		if fmt.Sprint(names) != fmt.Sprint(want) {
			t.Fatalf("List(%q) = %v, want %v", prefix, names, want)
		}
	}
	check("a/", []string{"a/1", "a/10", "a/2", "a/sub/3"})
	check("a", []string{"a/1", "a/10", "a/2", "a/sub/3", "ab"})
	check("", []string{"a/1", "a/10", "a/2", "a/sub/3", "ab", "b/2", "c"})
	check("a/sub/", []string{"a/sub/3"})
	check("zzz", nil)
	got, err := s.List(ctx(t), "b/")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Size != 1 {
		t.Fatalf("List(b/) = %+v, want one object of size 1", got)
	}
}

func testListEmpty(t *testing.T, s store.Store) {
	got, err := s.List(ctx(t), "")
	if err != nil {
		t.Fatalf("List on empty store: %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("List on empty store = %v", got)
	}
}

func testDelete(t *testing.T, s store.Store) {
	put(t, s, "d/1", []byte("x"))
	put(t, s, "d/2", []byte("y"))
	if err := s.Delete(ctx(t), "d/1"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Stat(ctx(t), "d/1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Stat after Delete: %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx(t), "d/1"); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	if err := s.Delete(ctx(t), "never/existed"); err != nil {
		t.Fatalf("Delete(missing): %v", err)
	}
	if got := string(get(t, s, "d/2")); got != "y" {
		t.Fatalf("sibling after Delete = %q", got)
	}
	l, err := s.List(ctx(t), "d/")
	if err != nil || len(l) != 1 || l[0].Key != "d/2" {
		t.Fatalf("List after Delete = %v, %v", l, err)
	}
}

func testInvalidKeys(t *testing.T, s store.Store) {
	bad := []string{"", "/abs", "a//b", "a/../b", "..", "../x", "a/", "./a", "a/./b", "a\x00b", "bad\xffutf8"}
	for _, k := range bad {
		if err := s.Put(ctx(t), k, bytes.NewReader([]byte("x")), 1); err == nil {
			t.Errorf("Put(%q) succeeded, want invalid-key error", k)
		}
		if _, err := s.Get(ctx(t), k); err == nil || errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(%q) error = %v, want invalid-key error", k, err)
		}
		if _, err := s.Stat(ctx(t), k); err == nil || errors.Is(err, store.ErrNotFound) {
			t.Errorf("Stat(%q) error = %v, want invalid-key error", k, err)
		}
		if err := s.Delete(ctx(t), k); err == nil {
			t.Errorf("Delete(%q) succeeded, want invalid-key error", k)
		}
	}
}

// failingReader yields some bytes then an error, as a dropped network upload would.
type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("simulated read failure")
	}
	k := min(len(p), f.n)
	for i := range k {
		p[i] = 'q'
	}
	f.n -= k
	return k, nil
}

func testFailedPut(t *testing.T, s store.Store) {
	if err := s.Put(ctx(t), "partial", &failingReader{n: 100}, -1); err == nil {
		t.Fatal("Put with failing reader succeeded")
	}
	if _, err := s.Stat(ctx(t), "partial"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Stat after failed Put: %v, want ErrNotFound", err)
	}
	// A failed overwrite keeps the old object intact.
	put(t, s, "keep", []byte("old"))
	if err := s.Put(ctx(t), "keep", &failingReader{n: 10}, -1); err == nil {
		t.Fatal("overwriting Put with failing reader succeeded")
	}
	if got := string(get(t, s, "keep")); got != "old" {
		t.Fatalf("after failed overwrite Get = %q, want old", got)
	}
	l, err := s.List(ctx(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 1 || l[0].Key != "keep" {
		t.Fatalf("List after failed Puts = %v, want only keep (no temp files)", l)
	}
}

func testCancelled(t *testing.T, s store.Store) {
	c, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Put(c, "cancelled", bytes.NewReader([]byte("x")), 1); err == nil {
		t.Fatal("Put with cancelled context succeeded")
	}
	if _, err := s.Stat(ctx(t), "cancelled"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Stat after cancelled Put: %v, want ErrNotFound", err)
	}
}

func testConcurrent(t *testing.T, s store.Store) {
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := bytes.Repeat([]byte{byte('a' + i)}, 4096)
			// Everyone writes the shared key too: the result must be one writer's whole object.
			for _, k := range []string{fmt.Sprintf("con/%d", i), "con/shared"} {
				if err := s.Put(context.Background(), k, bytes.NewReader(data), int64(len(data))); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Put: %v", err)
	}
	got := get(t, s, "con/shared")
	if len(got) != 4096 || !bytes.Equal(got, bytes.Repeat(got[:1], 4096)) {
		t.Fatalf("shared key holds a mix of writers (%d bytes)", len(got))
	}
	l, err := s.List(ctx(t), "con/")
	if err != nil || len(l) != n+1 {
		t.Fatalf("List(con/) = %d objects, %v; want %d", len(l), err, n+1)
	}
}

func testLarge(t *testing.T, s store.Store) {
	data := make([]byte, 3<<20+17)
	for i := range data {
		data[i] = byte(i * 7)
	}
	put(t, s, "big/blob", data)
	if got := get(t, s, "big/blob"); !bytes.Equal(got, data) {
		t.Fatalf("large object round trip differs (%d vs %d bytes)", len(got), len(data))
	}
}

func testUnusualKeys(t *testing.T, s store.Store) {
	keys := []string{"dir with space/file name.json", "ünïcode/数据.bin", "a/.hidden", "x..y/v1.2.tar.gz", "a-b_c+d=e"}
	for i, k := range keys {
		put(t, s, k, []byte{byte(i)})
	}
	for i, k := range keys {
		if got := get(t, s, k); len(got) != 1 || got[0] != byte(i) {
			t.Errorf("Get(%q) = %v", k, got)
		}
	}
	l, err := s.List(ctx(t), "")
	if err != nil || len(l) != len(keys) {
		t.Fatalf("List = %v, %v; want %d objects", l, err, len(keys))
	}
}
