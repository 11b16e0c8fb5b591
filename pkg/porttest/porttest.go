// Package porttest hands tests loopback ports for servers whose address must be known before they
// listen: raft peers named in each other's configuration, child processes given --port flags, a
// server restarted on the port it had. Listening on port 0 and closing the listener is not enough
// for these: that port comes from the kernel's ephemeral range, from which every outgoing
// connection also takes its local port, so in the gap a client of another server (or a raft
// connection) can take it and the server's own listen fails with "address already in use".
// Ports here come from below that range, where only explicit binds land, and are checked free by
// binding them.
package porttest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// floor is the lowest port handed out: above the well-known and most registered service ports.
const floor = 20000

// handedOut records the ports this process has handed out. A port is free until its server
// binds it, which for a server in another process can be seconds later: without the record, two
// draws before that (a test's NATS port and a coordinator's raft port) could return the same
// port, and the second server would fail with "address already in use". The port space is the
// process's (the machine's), so the record is too: the one piece of package state here.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// Port returns a loopback TCP port that is free now, outside the ephemeral range, and not handed
// out before by this process.
func Port() (int, error) {
	hi := ephemeralLow()
	if hi-floor < 1000 {
		// No room below the ephemeral range: fall back to what the kernel hands out.
		return kernelPort()
	}
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 200 {
		if p := floor + rand.IntN(hi-floor); !handedOut.ports[p] && free(p) {
			handedOut.ports[p] = true
			return p, nil
		}
	}
	return 0, errors.New("no free loopback port found below the ephemeral range after 200 tries")
}

// free reports whether a server can listen on the loopback port p now.
func free(p int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		return false
	}
	return ln.Close() == nil
}

// Addr returns "127.0.0.1:port" for a Port, failing the test if there is none.
func Addr(t testing.TB) string {
	t.Helper()
	p, err := Port()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
}

// ephemeralLow is the first port of the kernel's ephemeral range: Linux says so in /proc; the
// default there (32768) is below other systems' ranges (49152 on macOS and Windows).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil || lo <= 0 {
		return 32768
	}
	return lo
}

func kernelPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
