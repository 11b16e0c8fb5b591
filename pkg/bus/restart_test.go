package bus

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/bicot-rl/bicot/pkg/natsd"
)

func TestEmbeddedRestartKeepsQueuedWork(t *testing.T) {
	dir := t.TempDir()
	ctx := testCtx(t)
	srv, err := natsd.Start(natsd.Options{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	nc, js, err := Connect(ctx, srv.URL(), ConnectOptions{Name: "before"})
	if err != nil {
		srv.Shutdown()
		t.Fatal(err)
	}
	if _, err := EnsureStreams(ctx, js, "run1"); err != nil {
		t.Fatal(err)
	}
	if _, err := PublishSample(ctx, js, sample(4, 1, 0)); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	srv.Shutdown()

	srv, err = natsd.Start(natsd.Options{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, js, err = Connect(ctx, srv.URL(), ConnectOptions{Name: "after"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	topo, err := EnsureStreams(ctx, js, "run1")
	if err != nil {
		t.Fatal(err)
	}
	p, a, err := Depth(ctx, js, topo.Samples.Stream, topo.Samples.Consumer)
	if err != nil || p != 1 || a != 0 {
		t.Fatalf("after restart depth = %d, %d, %v; want the queued sample", p, a, err)
	}
	// The de-duplication window survives too.
	ack, err := PublishSample(ctx, js, sample(4, 1, 0))
	if err != nil || !ack.Duplicate {
		t.Fatalf("re-publish after restart: %+v, %v; want duplicate", ack, err)
	}
}

func TestConnectErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := Connect(ctx, "", ConnectOptions{}); err == nil {
		t.Fatal("empty url accepted")
	}
	// A port nothing listens on (the embedded server's, after shutdown).
	srv, err := natsd.Start(natsd.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL()
	srv.Shutdown()
	_, _, err = Connect(ctx, url, ConnectOptions{Timeout: 500 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), url) {
		t.Fatalf("Connect to a dead server: %v, want an error naming %s", err, url)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if _, _, err := Connect(cctx, url, ConnectOptions{}); err == nil {
		t.Fatal("Connect with cancelled context succeeded")
	}
}

// Credentials in a NATS URL never reach an error or a log line.
func TestConnectErrorsRedactCredentials(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	url := "nats://alice:s3cret-pass@127.0.0.1:1,nats://tok3n-xyz@127.0.0.1:2"
	_, _, err := Connect(ctx, url, ConnectOptions{Timeout: 300 * time.Millisecond})
	if err == nil {
		t.Fatal("connected to nothing")
	}
	for _, secret := range []string{"s3cret-pass", "alice", "tok3n-xyz"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q carries %q", err, secret)
		}
	}
	if !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("error %q does not name the server", err)
	}
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":        "nats://127.0.0.1:4222",
		"nats://u:p@h:1, tls://t@h2:2": "nats://redacted@h:1,tls://redacted@h2:2",
		"nats://h:1/path@x":            "nats://h:1/path@x",
		"not a url":                    "not a url",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
