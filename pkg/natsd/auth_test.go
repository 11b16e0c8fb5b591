package natsd_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/natsd"
	"github.com/bicot-rl/bicot/pkg/tlstest"
)

// TestRolesPublishOnlyTheirSubjects serves NATS over mutual TLS with one user per role (three
// with passwords, the reward worker with an nkey) and checks what each role may do: the
// coordinator creates the run's streams, workers find them without the right to create any;
// each role publishes its own output, and a rollout worker can neither report for the learner,
// announce a policy, hand out tasks, pull the learner's samples nor delete a stream.
func TestRolesPublishOnlyTheirSubjects(t *testing.T) {
	dir := t.TempDir()
	certs, err := tlstest.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile := filepath.Join(dir, "reward.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := natsd.Start(natsd.Options{StoreDir: t.TempDir(),
		Users: []natsd.User{
			{Name: "coord", Password: "c-secret", Role: natsd.RoleCoordinator},
			{Name: "roll", Password: "r-secret", Role: natsd.RoleRollout},
			{NKey: pub, Role: natsd.RoleReward},
			{Name: "learn", Password: "l-secret", Role: natsd.RoleLearner},
		},
		TLS: &natsd.TLS{CertFile: certs.ServerCert, KeyFile: certs.ServerKey, CAFile: certs.CA, VerifyClients: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	if !strings.HasPrefix(srv.URL(), "tls://") {
		t.Fatalf("server URL %s is not tls://", srv.URL())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tlsAuth := bus.Auth{CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}
	connect := func(role string, a bus.Auth) (jetstream.JetStream, error) {
		nc, js, err := bus.Connect(ctx, srv.URL(), bus.ConnectOptions{Role: role, Auth: a, MaxReconnects: 1, Timeout: 2 * time.Second})
		if err != nil {
			return nil, err
		}
		t.Cleanup(nc.Close)
		return js, nil
	}
	with := func(a bus.Auth) bus.Auth {
		a.CAFile, a.CertFile, a.KeyFile = tlsAuth.CAFile, tlsAuth.CertFile, tlsAuth.KeyFile
		return a
	}
	for name, a := range map[string]bus.Auth{
		"no password":           tlsAuth,
		"wrong password":        with(bus.Auth{User: "roll", Password: "guess"}),
		"no client certificate": {User: "roll", Password: "r-secret", CAFile: certs.CA},
	} {
		if _, err := connect(bus.RoleRollout, a); err == nil {
			t.Errorf("%s: connected", name)
		} else if strings.Contains(err.Error(), "r-secret") || strings.Contains(err.Error(), "guess") {
			t.Errorf("%s: the error quotes the password: %v", name, err)
		}
	}

	coord, err := connect("", with(bus.Auth{User: "coord", Password: "c-secret"}))
	if err != nil {
		t.Fatal(err)
	}
	roll, err := connect(bus.RoleRollout, with(bus.Auth{User: "roll", Password: "r-secret"}))
	if err != nil {
		t.Fatal(err)
	}
	reward, err := connect(bus.RoleReward, with(bus.Auth{NKeyFile: seedFile}))
	if err != nil {
		t.Fatal(err)
	}
	learn, err := connect(bus.RoleLearner, with(bus.Auth{User: "learn", Password: "l-secret"}))
	if err != nil {
		t.Fatal(err)
	}
	const run = "auth1"
	topo, err := bus.EnsureStreams(ctx, coord, run)
	if err != nil {
		t.Fatal(err)
	}
	for name, js := range map[string]jetstream.JetStream{"rollout": roll, "reward": reward, "learner": learn} {
		if _, err := bus.EnsureStreams(ctx, js, run); err != nil {
			t.Fatalf("%s finds the coordinator's streams: %v", name, err)
		}
	}
	publish := func(js jetstream.JetStream, subject string) error {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		defer pcancel()
		_, err := js.Publish(pctx, subject, []byte("{}"))
		return err
	}
	allowed := []struct {
		who     string
		js      jetstream.JetStream
		subject string
	}{
		{"coordinator", coord, topo.Tasks.Subject},
		{"rollout", roll, topo.Samples.Subject},
		{"rollout", roll, bus.EventSubject(run, bus.RoleRollout)},
		{"reward", reward, topo.Scored.Subject},
		{"reward", reward, bus.EventSubject(run, bus.RoleReward)},
		{"learner", learn, topo.PolicySubject},
		{"learner", learn, bus.EventSubject(run, bus.RoleLearner)},
	}
	for _, a := range allowed {
		if err := publish(a.js, a.subject); err != nil {
			t.Errorf("%s publishing on %s: %v", a.who, a.subject, err)
		}
	}
	for _, subject := range []string{bus.EventSubject(run, bus.RoleLearner), topo.PolicySubject, topo.Tasks.Subject, topo.Scored.Subject} {
		if err := publish(roll, subject); err == nil {
			t.Errorf("a rollout worker published on %s", subject)
		}
	}
	if err := publish(reward, topo.Tasks.Subject); err == nil {
		t.Error("a reward worker published a task")
	}
	if err := publish(learn, topo.Samples.Subject); err == nil {
		t.Error("the learner published a sample")
	}
	// The scored sample the reward worker published is the learner's: a rollout worker cannot
	// pull it, the learner can.
	fetch := func(js jetstream.JetStream) int {
		c, err := js.Consumer(ctx, topo.Scored.Stream, topo.Scored.Consumer)
		if err != nil {
			return -1
		}
		b, err := c.Fetch(1, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return -1
		}
		n := 0
		for m := range b.Messages() {
			n++
			_ = m.Ack()
		}
		return n
	}
	if n := fetch(roll); n > 0 {
		t.Error("a rollout worker pulled from the learner's queue")
	}
	if n := fetch(learn); n != 1 {
		t.Errorf("the learner pulled %d scored samples, want 1", n)
	}
	dctx, dcancel := context.WithTimeout(ctx, time.Second)
	defer dcancel()
	if err := roll.DeleteStream(dctx, topo.Scored.Stream); err == nil {
		t.Error("a rollout worker deleted a stream")
	}
	if _, err := coord.Stream(ctx, topo.Scored.Stream); err != nil {
		t.Errorf("the scored stream after a worker tried to delete it: %v", err)
	}
}

func TestUsersFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("TEST_NATS_PW", "from-env")
	write("users:\n  - {user: c, password_env: TEST_NATS_PW, role: coordinator}\n  - {user: r, password: p, role: rollout}\n")
	us, err := natsd.ReadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(us) != 2 || us[0].Password != "from-env" || us[1].Role != natsd.RoleRollout {
		t.Fatalf("users %+v", us)
	}
	for bad, want := range map[string]string{
		"users:\n  - {user: c, password: p, role: admin}\n":                                             `role "admin"`,
		"users:\n  - {user: c, role: rollout}\n":                                                        "needs a user and a password",
		"users:\n  - {user: c, password_env: NOT_SET_X, role: reward}\n":                                "NOT_SET_X is empty",
		"users:\n  - {nkey: Uabc, role: reward}\n":                                                      "not a public user key",
		"users:\n  - {user: c, pasword: p, role: reward}\n":                                             "pasword",
		"users:\n  - {user: c, password: p, role: reward}\n  - {user: c, password: q, role: learner}\n": "listed twice",
	} {
		write(bad)
		_, err := natsd.ReadUsers(path)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one naming %q", bad, err, want)
		}
	}
}
