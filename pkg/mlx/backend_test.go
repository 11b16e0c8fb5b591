package mlx

import "testing"

func TestIsGoBackend(t *testing.T) {
	b, err := NewBackend("")
	if err != nil {
		t.Fatal(err)
	}
	if !IsGoBackend(b) {
		t.Fatalf("default backend %q not recognised as the pure-Go one", b.String())
	}
	if IsGoBackend(nil) {
		t.Fatal("nil backend recognised")
	}
}
