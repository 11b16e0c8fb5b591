package bus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/config"
)

// ConnectOptions configure a client connection.
type ConnectOptions struct {
	// Name identifies the client in server monitoring (e.g. "rollout-worker-3").
	Name string
	// Role is the client's role (RoleRollout, RoleReward, RoleLearner, or RoleCoordinator);
	// it names the client's reply subjects (InboxPrefix). Empty: the coordinator's.
	Role string
	// Timeout bounds the initial dial; default 5 s (or the context deadline if sooner).
	Timeout time.Duration
	// ReconnectWait between reconnect attempts; default 1 s.
	ReconnectWait time.Duration
	// MaxReconnects before giving up; 0 means the default (-1, forever): workers outlive restarts
	// of the server.
	MaxReconnects int
	// JetStreamTimeout is the default timeout of JetStream API calls without a context deadline;
	// default 10 s.
	JetStreamTimeout time.Duration
	// Auth is how the client proves who it is and checks the server; zero: neither.
	Auth Auth
	// FirstConnectWait keeps trying the first connection this long while no server answers (a
	// process started while NATS restarts); 0 tries once. Refused credentials fail at once. After
	// the first connection the client reconnects by itself (MaxReconnects).
	FirstConnectWait time.Duration
	// Log receives the connection's asynchronous errors (a permissions violation, a slow
	// consumer) and reconnects; the zero logger drops them.
	Log zerolog.Logger
}

// Auth is a NATS client's credentials and transport security: at most one of user and password,
// token, nkey seed file or creds file (JWT), plus TLS. The nats.go client does the work (nkey
// signatures, TLS); this only checks that what is given is complete and consistent. Secrets are
// never flags (process listings show them): startup takes the password and token from the
// environment and key material from files.
type Auth struct {
	User     string
	Password string
	Token    string
	// NKeyFile holds an nkey seed (SU...); the client signs the server's nonce with it.
	NKeyFile string
	// CredsFile is a decentralised-auth creds file (user JWT and nkey seed).
	CredsFile string
	// CAFile verifies the server's certificate (a private CA); CertFile and KeyFile present a
	// client certificate (servers that verify clients). Any of them turns TLS on.
	CAFile   string
	CertFile string
	KeyFile  string
}

// IsZero reports whether no authentication or TLS is configured.
func (a Auth) IsZero() bool { return a == Auth{} }

// Validate checks that a is complete and names one way of authenticating; errors never quote a
// secret.
func (a Auth) Validate() error {
	ways := 0
	for _, set := range []bool{a.User != "" || a.Password != "", a.Token != "", a.NKeyFile != "", a.CredsFile != ""} {
		if set {
			ways++
		}
	}
	switch {
	case ways > 1:
		return errors.New("nats auth: give one of user/password, token, nkey file or creds file")
	case a.Password != "" && a.User == "":
		return errors.New("nats auth: a password without a user")
	case a.User != "" && a.Password == "":
		return fmt.Errorf("nats auth: user %q without a password", a.User)
	case (a.CertFile == "") != (a.KeyFile == ""):
		return errors.New("nats tls: a client certificate needs both the certificate and its key file")
	}
	for _, f := range []struct{ what, path string }{{"nkey seed", a.NKeyFile}, {"creds", a.CredsFile},
		{"CA", a.CAFile}, {"client certificate", a.CertFile}, {"client key", a.KeyFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("nats auth: %s file: %w", f.what, err)
		}
	}
	return nil
}

func (a Auth) options() ([]nats.Option, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	var opts []nats.Option
	switch {
	case a.User != "":
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	case a.Token != "":
		opts = append(opts, nats.Token(a.Token))
	case a.NKeyFile != "":
		o, err := nats.NkeyOptionFromSeed(a.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats auth: nkey seed file %s: %w", a.NKeyFile, err)
		}
		opts = append(opts, o)
	case a.CredsFile != "":
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	}
	if a.CAFile != "" {
		opts = append(opts, nats.RootCAs(a.CAFile))
	}
	if a.CertFile != "" {
		opts = append(opts, nats.ClientCert(a.CertFile, a.KeyFile))
	}
	return opts, nil
}

// Connect dials a NATS server (comma-separated URLs for a cluster) and opens its JetStream context.
// The caller closes the connection (nc.Drain or nc.Close).
func Connect(ctx context.Context, url string, o ConnectOptions) (*nats.Conn, jetstream.JetStream, error) {
	if url == "" {
		return nil, nil, errors.New("connect: empty NATS url")
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if dl, ok := ctx.Deadline(); ok {
		if rem := time.Until(dl); rem < o.Timeout {
			o.Timeout = rem
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("connect %s: %w", Redact(url), err)
	}
	if o.ReconnectWait <= 0 {
		o.ReconnectWait = time.Second
	}
	if o.MaxReconnects == 0 {
		o.MaxReconnects = -1
	}
	if o.JetStreamTimeout <= 0 {
		o.JetStreamTimeout = 10 * time.Second
	}
	opts, err := o.Auth.options()
	if err != nil {
		return nil, nil, fmt.Errorf("connect %s: %w", Redact(url), err)
	}
	opts = append(opts,
		nats.Timeout(o.Timeout),
		nats.ReconnectWait(o.ReconnectWait),
		nats.MaxReconnects(o.MaxReconnects),
		// Each role's replies arrive under its own prefix, which per-role server permissions
		// (natsd) let only that role subscribe to: a worker cannot read another role's
		// deliveries and their ack subjects.
		nats.CustomInboxPrefix(InboxPrefix(o.Role)),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := o.Log.Warn().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("nats")
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: closed on purpose
				o.Log.Warn().AnErr("reason", err).Msg("nats disconnected")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			o.Log.Info().Str("server", Redact(nc.ConnectedUrlRedacted())).Msg("nats reconnected")
		}),
	)
	if o.Name != "" {
		opts = append(opts, nats.Name(o.Name))
	}
	nc, err := nats.Connect(url, opts...)
	for wait, deadline := 100*time.Millisecond, time.Now().Add(o.FirstConnectWait); err != nil && errors.Is(err, nats.ErrNoServers) && time.Now().Add(wait).Before(deadline); wait = min(2*wait, 2*time.Second) {
		o.Log.Warn().Err(err).Str("server", Redact(url)).Dur("retry_in", wait).Msg("nats not reachable yet")
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("connect %s: %w (last error: %v)", Redact(url), ctx.Err(), err)
		case <-time.After(wait):
		}
		nc, err = nats.Connect(url, opts...)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("connect %s: %w", Redact(url), err)
	}
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(o.JetStreamTimeout))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("connect %s: jetstream: %w", Redact(url), err)
	}
	return nc, js, nil
}

// RoleCoordinator is the coordinator's role in NATS permissions: it creates the run's streams and
// dispatches tasks. It publishes no events.
const RoleCoordinator = "coordinator"

// InboxPrefix is where a client of role receives replies: _INBOX_<role> (a subject prefix the
// server's permissions grant to that role alone).
func InboxPrefix(role string) string {
	if role == "" {
		role = RoleCoordinator
	}
	return "_INBOX_" + role
}

// Redact returns NATS server URLs (comma-separated) with any user information - user:password@
// or token@ - replaced by "redacted@" (config.RedactURL), so that errors and logs that name a
// server never carry its credentials.
func Redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		parts[i] = config.RedactURL(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}
