package porttest

import (
	"net"
	"strconv"
	"testing"
)

// Ports are below the ephemeral range, free (a server can listen on them), and never the same
// port twice in a process.
func TestPortBelowEphemeralRangeAndFree(t *testing.T) {
	lo := ephemeralLow()
	seen := map[int]bool{}
	for range 500 {
		p, err := Port()
		if err != nil {
			t.Fatal(err)
		}
		if p < floor || p >= lo {
			t.Fatalf("port %d outside [%d, %d)", p, floor, lo)
		}
		if seen[p] {
			// Nothing binds these ports here, so only the record keeps them apart (500 draws
			// of ~12,000 ports repeat one with probability ~1 without it).
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
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
