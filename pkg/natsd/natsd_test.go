package natsd_test

import (
	"context"
	"testing"
	"time"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/natsd"
)

// The server must accept every message a publisher may send.
func TestMaxPayloadIsTheBusLimit(t *testing.T) {
	if natsd.DefaultMaxPayload != bus.DefaultMaxPayload {
		t.Fatalf("natsd.DefaultMaxPayload %d != bus.DefaultMaxPayload %d", natsd.DefaultMaxPayload, bus.DefaultMaxPayload)
	}
	srv, err := natsd.Start(natsd.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, _, err := bus.Connect(ctx, srv.URL(), bus.ConnectOptions{Name: "payload"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := nc.MaxPayload(); got != bus.DefaultMaxPayload {
		t.Fatalf("server max_payload %d, want %d", got, bus.DefaultMaxPayload)
	}
}
