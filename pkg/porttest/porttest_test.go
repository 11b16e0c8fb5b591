package porttest

import (
	"net"
	"strconv"
	"testing"
)

// Ports are below the ephemeral range, free (a server can listen on them), and not the same
// port over and over.
func TestPortBelowEphemeralRangeAndFree(t *testing.T) {
	lo := ephemeralLow()
	seen := map[int]bool{}
	for range 50 {
		p, err := Port()
		if err != nil {
			t.Fatal(err)
		}
		if p < floor || p >= lo {
			t.Fatalf("port %d outside [%d, %d)", p, floor, lo)
		}
		seen[p] = true
	}
	if len(seen) < 40 {
		t.Errorf("50 ports drew only %d distinct values", len(seen))
	}
	a := Addr(t)
	ln, err := net.Listen("tcp", a)
	if err != nil {
		t.Fatalf("listen on %s: %v", a, err)
	}
	_, ps, _ := net.SplitHostPort(a)
	p, _ := strconv.Atoi(ps)
	// A port in use is not free; closed, it is again.
	if free(p) {
		t.Fatalf("port %d counted free while a listener holds it", p)
	}
	ln.Close()
	if !free(p) {
		t.Fatalf("port %d not free after its listener closed", p)
	}
}
