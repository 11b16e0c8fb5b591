package startup

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/spf13/cobra"
	"go.uber.org/goleak"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/natsd"
	"github.com/bicot-rl/bicot/pkg/porttest"
)

func startRole(t *testing.T, args ...string) (*Role, error) {
	t.Helper()
	cmd := &cobra.Command{Use: "run"}
	cmd.SetContext(t.Context())
	cli := NewCLI(cmd, &Process{log: zerolog.Nop()})
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	return cli.Start(cmd, bus.RoleRollout, "test-role")
}

// Start sets up a role over a real NATS server; Close releases the connection and the store, so
// nothing is left running.
func TestRoleStartAndClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv, err := natsd.Start(natsd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	before := goleak.IgnoreCurrent()
	r, err := startRole(t, "--run-id", "r1", "--nats", srv.URL(), "--store", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if r.Config.RunID != "r1" || r.JS == nil || r.Backend == nil || r.Ctx.Err() != nil {
		t.Fatalf("role %+v", r)
	}
	if _, err := r.OpenStore(); err != nil {
		t.Fatal(err)
	}
	nc := r.JS.Conn()
	r.Close()
	if !nc.IsClosed() {
		t.Fatal("the role's NATS connection is still open after Close")
	}
	deadline := time.Now().Add(5 * time.Second)
	for goleak.Find(before) != nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := goleak.Find(before); err != nil {
		t.Fatalf("Close left goroutines behind: %v", err)
	}
}

// A NATS server that is not there fails Start with the connection error, and nothing of the
// half-built role stays behind.
func TestRoleStartFailsWithoutNATS(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	_, err := startRole(t, "--run-id", "r1", "--nats", "nats://127.0.0.1:1", "--set", "wire.connect_wait=0s")
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "connect") {
		t.Fatalf("error %v, want a connection error", err)
	}
	if _, err := startRole(t, "--nats", "nats://127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "run_id") {
		t.Fatalf("missing run id: %v", err)
	}
}

// A role started while NATS is not up yet (a restart, containers starting in any order) waits
// for it (wire.connect_wait) instead of exiting; refused credentials still fail at once.
func TestRoleWaitsForNATS(t *testing.T) {
	port, err := porttest.Port()
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan *natsd.Server, 1)
	go func() {
		time.Sleep(time.Second)
		srv, err := natsd.Start(natsd.Options{Port: port, Users: []natsd.User{{Name: "roll", Password: "pw", Role: natsd.RoleRollout}}})
		if err != nil {
			t.Error(err)
		}
		started <- srv
	}()
	t.Setenv(EnvNATSPassword, "pw")
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	r, err := startRole(t, "--run-id", "r1", "--nats", url, "--nats-user", "roll", "--set", "wire.connect_wait=30s")
	srv := <-started
	if srv != nil {
		defer srv.Shutdown()
	}
	if err != nil {
		t.Fatalf("a role started a second before NATS: %v", err)
	}
	r.Close()
	t.Setenv(EnvNATSPassword, "wrong")
	begin := time.Now()
	if _, err := startRole(t, "--run-id", "r1", "--nats", url, "--nats-user", "roll", "--set", "wire.connect_wait=30s"); err == nil {
		t.Fatal("a wrong password connected")
	}
	if d := time.Since(begin); d > 10*time.Second {
		t.Errorf("refused credentials were retried for %v", d)
	}
}

// A role authenticates to NATS with --nats-user and the password in $BICOT_NATS_PASSWORD; a
// wrong password is refused, and a password without a user is a configuration error.
func TestRoleAuthenticates(t *testing.T) {
	srv, err := natsd.Start(natsd.Options{Users: []natsd.User{{Name: "roll", Password: "pw-1", Role: natsd.RoleRollout}}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	t.Setenv(EnvNATSPassword, "pw-1")
	r, err := startRole(t, "--run-id", "r1", "--nats", srv.URL(), "--nats-user", "roll")
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	t.Setenv(EnvNATSPassword, "pw-2")
	if _, err := startRole(t, "--run-id", "r1", "--nats", srv.URL(), "--nats-user", "roll"); err == nil {
		t.Fatal("a wrong password connected")
	} else if strings.Contains(err.Error(), "pw-2") {
		t.Fatalf("the error quotes the password: %v", err)
	}
	if _, err := startRole(t, "--run-id", "r1", "--nats", srv.URL()); err == nil || !strings.Contains(err.Error(), "--nats-user") {
		t.Fatalf("a password without a user: %v", err)
	}
}

// A worker is named <kind>-<host>-<pid> unless --id names it.
func TestWorkerCLIIDs(t *testing.T) {
	srv, err := natsd.Start(natsd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, DefaultWorkerID("reward")},
		{[]string{"--id", "r7", "--keep-running"}, "r7"},
	} {
		cmd := &cobra.Command{Use: "run"}
		cmd.SetContext(t.Context())
		cli := NewWorkerCLI(cmd, &Process{log: zerolog.Nop()}, "reward")
		if err := cmd.ParseFlags(append([]string{"--run-id", "r1", "--nats", srv.URL()}, tc.args...)); err != nil {
			t.Fatal(err)
		}
		r, err := cli.Start(cmd)
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
		if cli.ID != tc.want || cli.KeepRunning != (len(tc.args) > 0) {
			t.Fatalf("%v: id %q keep %v, want %q", tc.args, cli.ID, cli.KeepRunning, tc.want)
		}
	}
}

// --print-config prints the effective config (defaults included) after the file, the flags and
// --set, and ends the command without starting anything; Execute treats that as success.
func TestPrintConfig(t *testing.T) {
	cmd := &cobra.Command{Use: "run"}
	var out strings.Builder
	cmd.SetOut(&out)
	cli := NewCLI(cmd, &Process{log: zerolog.Nop()})
	if err := cmd.ParseFlags([]string{"--run-id", "r1", "--nats", "nats://127.0.0.1:1", "--steps", "9",
		"--set", "grpo.optimizer.lr=3e-4", "--set", "sampling.cfg_weight=2", "--print-config"}); err != nil {
		t.Fatal(err)
	}
	_, err := cli.Start(cmd, bus.RoleRollout, "x")
	if !errors.Is(err, ErrConfigPrinted) {
		t.Fatalf("Start with --print-config: %v", err)
	}
	for _, want := range []string{"run_id: r1", "steps: 9", "lr: 0.0003", "cfg_weight: 2", "beta:", "group_size: 8"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("printed config lacks %q:\n%s", want, out.String())
		}
	}
	cmd2 := &cobra.Command{Use: "run"}
	cli2 := NewCLI(cmd2, &Process{log: zerolog.Nop()})
	if err := cmd2.ParseFlags([]string{"--run-id", "r1", "--set", "grpo.optimizer.lr=-1", "--print-config"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli2.Start(cmd2, bus.RoleRollout, "x"); err == nil || errors.Is(err, ErrConfigPrinted) || !strings.Contains(err.Error(), "lr") {
		t.Errorf("an invalid --set printed or passed: %v", err)
	}
}
