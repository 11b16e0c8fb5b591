package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bicot-rl/bicot/pkg/config"
)

// ConnectOptions configure a client connection.
type ConnectOptions struct {
	// Name identifies the client in server monitoring (e.g. "rollout-worker-3").
	Name string
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
	opts := []nats.Option{
		nats.Timeout(o.Timeout),
		nats.ReconnectWait(o.ReconnectWait),
		nats.MaxReconnects(o.MaxReconnects),
	}
	if o.Name != "" {
		opts = append(opts, nats.Name(o.Name))
	}
	nc, err := nats.Connect(url, opts...)
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
