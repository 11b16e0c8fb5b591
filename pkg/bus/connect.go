package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
		return nil, nil, fmt.Errorf("connect %s: %w", url, err)
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
		return nil, nil, fmt.Errorf("connect %s: %w", url, err)
	}
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(o.JetStreamTimeout))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("connect %s: jetstream: %w", url, err)
	}
	return nc, js, nil
}
