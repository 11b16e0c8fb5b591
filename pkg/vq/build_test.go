package vq

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Build writes the codebook its summary describes, measured on held-out scenes.
func TestBuildWritesTheCodebookItSummarises(t *testing.T) {
	c := BuildConfig{Grid: 4, Cell: 12, K: 30, Patch: 4, Seed: 9, Scenes: 50, Iters: 10, HeldOut: 20,
		Out: filepath.Join(t.TempDir(), "cb.vq")}
	sum, err := Build(c)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := Load(c.Out)
	if err != nil {
		t.Fatal(err)
	}
	if sum.SHA256 != cb.SHA256() || sum.K != cb.K() || sum.K != sum.Train.K || sum.TokensPerImage != cb.TokensPerImage() ||
		sum.ImageSize != 48 || sum.Patch != 4 || sum.HeldOut.MSE < 0 {
		t.Fatalf("summary %+v of codebook k %d", sum, cb.K())
	}
	c.HeldOut = 0
	if _, err := Build(c); err == nil || !strings.Contains(err.Error(), "heldout") {
		t.Fatalf("no held-out scenes: %v", err)
	}
}

// A file overrides only the keys it names, and a typo is an error rather than a silent default.
func TestReadBuildConfig(t *testing.T) {
	dir := t.TempDir()
	ok, typo := filepath.Join(dir, "ok.yaml"), filepath.Join(dir, "typo.yaml")
	if err := os.WriteFile(ok, []byte("k: 100\nout: x.vq\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(typo, []byte("kk: 100\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := DefaultBuildConfig()
	if err := ReadBuildConfig(ok, &c); err != nil {
		t.Fatal(err)
	}
	want := DefaultBuildConfig()
	want.K, want.Out = 100, "x.vq"
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("read %+v, want %+v", c, want)
	}
	if err := ReadBuildConfig(typo, &c); err == nil || c != want {
		t.Fatalf("unknown key: %v, config %+v", err, c)
	}
}
