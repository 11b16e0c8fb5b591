// Package bustest gives tests of the roles what they need from the bus: a real embedded NATS
// server with JetStream (file storage in the test's temporary directory) and a connection to it,
// both closed when the test ends.
package bustest

import (
	"context"
	"testing"

	"github.com/bicot-rl/bicot/pkg/natsd"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bicot-rl/bicot/pkg/bus"
)

// JetStream starts an embedded server and returns a JetStream connection to it.
func JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	srv, err := natsd.Start(natsd.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, js, err := bus.Connect(context.Background(), srv.URL(), bus.ConnectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return js
}
