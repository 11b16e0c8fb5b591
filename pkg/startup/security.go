package startup

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/secure"
)

// Environment variables that carry secrets. Secrets are never flags (process listings show
// them) nor config keys (the run's config.yaml is stored with it).
const (
	EnvNATSPassword = "BICOT_NATS_PASSWORD"
	EnvNATSToken    = "BICOT_NATS_TOKEN"
	// EnvAPIToken guards the coordinator's status API (/v1/*, /metrics).
	EnvAPIToken = "BICOT_API_TOKEN"
	// EnvClusterToken guards the coordinators' run-state endpoint (--raft-http), which peers and
	// the learner call.
	EnvClusterToken = "BICOT_CLUSTER_TOKEN"
)

// Security is a process's credentials and TLS files: how it authenticates to NATS (--nats-*
// flags and the BICOT_NATS_* variables), and the TLS and tokens of the coordinators' endpoints
// (--tls-* flags, BICOT_API_TOKEN, BICOT_CLUSTER_TOKEN). Every role's run command has them.
type Security struct {
	NATS bus.Auth
	// TLS secures the coordinators' raft traffic, run-state endpoint and status API (served
	// with the certificate, peers and clients verified with the CA), and is what the learner
	// dials them with.
	TLS          secure.TLSFiles
	APIToken     string
	ClusterToken string
}

// Register adds the --nats-* and --tls-* flags.
func (s *Security) Register(f *pflag.FlagSet) {
	f.StringVar(&s.NATS.User, "nats-user", "", "NATS user (password from $"+EnvNATSPassword+")")
	f.StringVar(&s.NATS.NKeyFile, "nats-nkey", "", "NATS nkey seed file")
	f.StringVar(&s.NATS.CredsFile, "nats-creds", "", "NATS credentials file (user JWT and nkey seed)")
	f.StringVar(&s.NATS.CAFile, "nats-ca", "", "CA file that verifies the NATS server (TLS)")
	f.StringVar(&s.NATS.CertFile, "nats-cert", "", "client certificate file for NATS (TLS)")
	f.StringVar(&s.NATS.KeyFile, "nats-key", "", "client key file for NATS (TLS)")
	f.StringVar(&s.TLS.CA, "tls-ca", "", "CA file that verifies coordinators and their peers and clients (mutual TLS on raft, the run-state endpoint and the status API)")
	f.StringVar(&s.TLS.Cert, "tls-cert", "", "certificate file this process presents on the coordinators' endpoints")
	f.StringVar(&s.TLS.Key, "tls-key", "", "key file of --tls-cert")
}

// Load reads the secrets from the environment and checks the whole.
func (s *Security) Load() error {
	s.NATS.Password = os.Getenv(EnvNATSPassword)
	s.NATS.Token = os.Getenv(EnvNATSToken)
	s.APIToken = os.Getenv(EnvAPIToken)
	s.ClusterToken = os.Getenv(EnvClusterToken)
	if s.NATS.Password != "" && s.NATS.User == "" {
		return fmt.Errorf("$%s is set but --nats-user is not", EnvNATSPassword)
	}
	if err := s.NATS.Validate(); err != nil {
		return err
	}
	if (s.TLS.Cert == "") != (s.TLS.Key == "") {
		return fmt.Errorf("--tls-cert and --tls-key go together")
	}
	for _, f := range []string{s.TLS.CA, s.TLS.Cert, s.TLS.Key} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
	}
	return nil
}
