package natsd

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"gopkg.in/yaml.v3"
)

// Roles a user can have. Each role's permissions (Permissions) let it publish only what that
// role sends; the coordinator, which creates and resets a run's streams, may do anything.
const (
	RoleCoordinator = "coordinator"
	RoleRollout     = "rollout"
	RoleReward      = "reward"
	RoleLearner     = "learner"
)

// User is one client the server lets in and the role that decides what it may do.
type User struct {
	// Name and Password, or NKey.
	Name string `yaml:"user"`
	// Password in plain text or as a bcrypt hash ("$2a$..."), which nats-server compares.
	Password string `yaml:"password"`
	// PasswordEnv names an environment variable that holds the password (ReadUsers reads it), so
	// the file itself can be free of secrets.
	PasswordEnv string `yaml:"password_env"`
	// NKey is the user's public nkey (U...); the client proves it holds the seed.
	NKey string `yaml:"nkey"`
	Role string `yaml:"role"`
}

// TLS serves NATS over TLS.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// CAFile verifies client certificates; with VerifyClients every client must present one.
	CAFile        string `yaml:"ca_file"`
	VerifyClients bool   `yaml:"verify_clients"`
}

// ReadUsers reads a users file:
//
//	users:
//	  - {user: coordinator, password_env: NATS_COORDINATOR_PASSWORD, role: coordinator}
//	  - {user: rollout, password: "$2a$11$...", role: rollout}
//	  - {nkey: UDXU4RCS..., role: reward}
//
// Unknown keys, unknown roles, a user with no way to authenticate and an unset password
// variable are errors; errors never quote a password.
func ReadUsers(path string) ([]User, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("nats users: %w", err)
	}
	var f struct {
		Users []User `yaml:"users"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("nats users %s: %w", path, err)
	}
	for i := range f.Users {
		u := &f.Users[i]
		if u.PasswordEnv != "" {
			if u.Password != "" {
				return nil, fmt.Errorf("nats users %s: user %q has both password and password_env", path, u.Name)
			}
			u.Password = os.Getenv(u.PasswordEnv)
			if u.Password == "" {
				return nil, fmt.Errorf("nats users %s: user %q: environment variable %s is empty", path, u.Name, u.PasswordEnv)
			}
		}
	}
	if err := checkUsers(f.Users); err != nil {
		return nil, fmt.Errorf("nats users %s: %w", path, err)
	}
	return f.Users, nil
}

func checkUsers(us []User) error {
	seen := map[string]bool{}
	for i, u := range us {
		who := u.Name
		if who == "" {
			who = u.NKey
		}
		switch {
		case u.NKey != "" && (u.Name != "" || u.Password != ""):
			return fmt.Errorf("user %d: give an nkey or a user and password, not both", i)
		case u.NKey == "" && (u.Name == "" || u.Password == ""):
			return fmt.Errorf("user %d (%q): needs a user and a password, or an nkey", i, u.Name)
		case u.NKey != "" && !nkeys.IsValidPublicUserKey(u.NKey):
			return fmt.Errorf("user %d: nkey %q is not a public user key (U...)", i, u.NKey)
		case seen[who]:
			return fmt.Errorf("user %q listed twice", who)
		}
		seen[who] = true
		if _, err := Permissions(u.Role); err != nil {
			return fmt.Errorf("user %q: %w", who, err)
		}
	}
	return nil
}

// Permissions is what a role may publish and subscribe to, for any run on the server (subjects
// bicot.<run>.<kind>, streams BICOT_<run>_<KIND>; bus.Topology names them, a test keeps the two in
// step):
//
//   - rollout workers publish samples, their events and dead tasks; reward workers scored samples,
//     their events and dead samples; the learner policy announcements, its events and dead scored
//     samples. Nobody but the coordinator publishes tasks, and only the learner reports a step
//     learned (events go on bicot.<run>.events.<role>, and the coordinator checks the role).
//   - each role pulls and acks only from its own pool's durable consumer; it may read stream and
//     consumer information and the latest policy, and create ephemeral consumers (work-queue
//     streams refuse a second consumer over their subjects, so this cannot steal work).
//   - no worker creates, changes, purges or deletes a stream or a pool's consumer: the
//     coordinator creates the run's streams (bus.EnsureStreams), workers then find them.
//   - replies come back under the role's own inbox prefix (bus.InboxPrefix), which only that
//     role may subscribe to, so no worker sees another's deliveries.
//
// The coordinator gets nil: everything.
func Permissions(role string) (*server.Permissions, error) {
	// The durable consumers of a run's work queues are named after the role that pulls from
	// them (bus.NewTopology).
	pools := []string{RoleCoordinator, RoleLearner, RoleReward, RoleRollout}
	if !slices.Contains(pools, role) {
		return nil, fmt.Errorf("role %q is not one of coordinator, rollout, reward, learner", role)
	}
	own := role
	if role == RoleCoordinator {
		return nil, nil
	}
	var data []string
	switch role {
	case RoleRollout:
		data = []string{"bicot.*.samples", "bicot.*.dead.tasks"}
	case RoleReward:
		data = []string{"bicot.*.scored", "bicot.*.dead.samples"}
	case RoleLearner:
		data = []string{"bicot.*.policy", "bicot.*.dead.scored"}
	}
	allow := append(data, "bicot.*.events."+role,
		"$JS.API.INFO",
		"$JS.API.STREAM.INFO.*",
		"$JS.API.CONSUMER.INFO.*.*",
		"$JS.API.STREAM.MSG.GET.*",
		"$JS.API.DIRECT.GET.>",
		"$JS.API.CONSUMER.CREATE.>",
		"$JS.API.CONSUMER.DURABLE.CREATE.*."+own,
		"$JS.API.CONSUMER.MSG.NEXT.>",
		"$JS.API.CONSUMER.DELETE.*.*",
		// Ack subjects: $JS.ACK.<stream>.<consumer>.… and, with a domain and account hash,
		// $JS.ACK.<domain>.<hash>.<stream>.<consumer>.….
		"$JS.ACK.*."+own+".>", "$JS.ACK.*.*.*."+own+".>")
	var deny []string
	for _, c := range pools {
		deny = append(deny, "$JS.API.CONSUMER.DELETE.*."+c)
		if c == own {
			continue
		}
		deny = append(deny, "$JS.API.CONSUMER.MSG.NEXT.*."+c, "$JS.API.CONSUMER.CREATE.*."+c, "$JS.API.CONSUMER.CREATE.*."+c+".>",
			"$JS.API.CONSUMER.DURABLE.CREATE.*."+c)
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: allow, Deny: deny},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX_" + role + ".>"}},
	}, nil
}

// configureAuth sets users with their role's permissions, or a shared token, and TLS.
func configureAuth(o Options, s *server.Options) error {
	if o.Token != "" && len(o.Users) > 0 {
		return errors.New("embedded nats: give users or a token, not both")
	}
	if err := checkUsers(o.Users); err != nil {
		return fmt.Errorf("embedded nats users: %w", err)
	}
	s.Authorization = o.Token
	for _, u := range o.Users {
		perms, _ := Permissions(u.Role)
		if u.NKey != "" {
			s.Nkeys = append(s.Nkeys, &server.NkeyUser{Nkey: u.NKey, Permissions: perms})
		} else {
			s.Users = append(s.Users, &server.User{Username: u.Name, Password: u.Password, Permissions: perms})
		}
	}
	if o.TLS == nil {
		return nil
	}
	t := o.TLS
	if t.CertFile == "" || t.KeyFile == "" {
		return errors.New("embedded nats tls: needs a certificate and key file")
	}
	if t.VerifyClients && t.CAFile == "" {
		return errors.New("embedded nats tls: verifying clients needs a CA file")
	}
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: t.CertFile, KeyFile: t.KeyFile, CaFile: t.CAFile, Verify: t.VerifyClients})
	if err != nil {
		return fmt.Errorf("embedded nats tls: %w", err)
	}
	s.TLSConfig, s.TLS, s.TLSVerify = tc, true, t.VerifyClients
	s.TLSTimeout = 2
	return nil
}
