package natsd_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/bicot-rl/bicot/pkg/bus"
)

// A role authenticates with a creds file (a user JWT signed by its account, and the user's nkey
// seed) to a NATS server in operator (decentralised) mode, the way managed NATS deployments hand
// out credentials, and uses the run's JetStream streams through it.
func TestCredsFile(t *testing.T) {
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	op, err := nkeys.CreateOperator()
	must(err)
	opPub, _ := op.PublicKey()
	opClaims := jwt.NewOperatorClaims(opPub)
	acc, err := nkeys.CreateAccount()
	must(err)
	accPub, _ := acc.PublicKey()
	accClaims := jwt.NewAccountClaims(accPub)
	accClaims.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	accJWT, err := accClaims.Encode(op)
	must(err)
	user, err := nkeys.CreateUser()
	must(err)
	userPub, _ := user.PublicKey()
	userJWT, err := jwt.NewUserClaims(userPub).Encode(acc)
	must(err)
	seed, _ := user.Seed()
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	must(err)
	credsFile := filepath.Join(t.TempDir(), "rollout.creds")
	must(os.WriteFile(credsFile, creds, 0o600))

	// Operator mode needs a system account.
	sys, err := nkeys.CreateAccount()
	must(err)
	sysPub, _ := sys.PublicKey()
	sysJWT, err := jwt.NewAccountClaims(sysPub).Encode(op)
	must(err)
	resolver := &server.MemAccResolver{}
	must(resolver.Store(accPub, accJWT))
	must(resolver.Store(sysPub, sysJWT))
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		TrustedOperators: []*jwt.OperatorClaims{opClaims}, AccountResolver: resolver, SystemAccount: sysPub, NoLog: true, NoSigs: true})
	must(err)
	srv.Start()
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := bus.Connect(ctx, srv.ClientURL(), bus.ConnectOptions{MaxReconnects: 1}); err == nil {
		t.Fatal("connected without credentials to a server in operator mode")
	}
	nc, js, err := bus.Connect(ctx, srv.ClientURL(), bus.ConnectOptions{Role: bus.RoleRollout, Auth: bus.Auth{CredsFile: credsFile}, MaxReconnects: 1})
	must(err)
	defer nc.Close()
	if _, err := bus.EnsureStreams(ctx, js, "creds1"); err != nil {
		t.Fatalf("streams through a creds-file connection: %v", err)
	}
}
