package local

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/bicot-rl/bicot/pkg/store"
	"github.com/bicot-rl/bicot/pkg/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func() store.Store {
		s, err := New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestFilesLiveAtKeyPaths(t *testing.T) {
	dir := t.TempDir()
	s, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Put(ctx, "runs/r/manifest.json", bytes.NewReader([]byte("{}")), 2); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "runs", "r", "manifest.json"))
	if err != nil || string(b) != "{}" {
		t.Fatalf("file at key path = %q, %v", b, err)
	}
	// Delete prunes emptied directories but never the root.
	if err := s.Delete(ctx, "runs/r/manifest.json"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "runs")); !os.IsNotExist(err) {
		t.Fatalf("empty directories left after Delete: %v", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("root removed: %v", err)
	}
}

func TestReservedTempPrefix(t *testing.T) {
	if err := ValidateKey("a/" + tmpPrefix + "x"); err == nil {
		t.Fatal("key with reserved temp prefix accepted")
	}
	if err := ValidateKey("a/.hidden/b.json"); err != nil {
		t.Fatalf("ordinary dotted key rejected: %v", err)
	}
}

func TestNewRejectsEmpty(t *testing.T) {
	if _, err := New(""); err == nil {
		t.Fatal("New(\"\") succeeded")
	}
}
