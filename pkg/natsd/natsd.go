// Package natsd runs nats-server in-process with JetStream: laptop mode's message bus, the
// `coordinator nats-server` command and every test's real server. Only the processes that serve
// NATS link it; workers and the learner are clients (pkg/bus).
package natsd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultMaxPayload is the largest message the server accepts: bus.DefaultMaxPayload, the limit
// publishers check against (a test keeps the two equal; this package does not import the bus).
const DefaultMaxPayload = 8 << 20

// Options configure an in-process NATS server.
type Options struct {
	// Host to listen on; default 127.0.0.1.
	Host string
	// Port to listen on; 0 (default) picks a free port.
	Port int
	// StoreDir holds JetStream's file storage. Empty: a temporary directory removed on Shutdown.
	StoreDir string
	// MaxPayload in bytes; default DefaultMaxPayload.
	MaxPayload int32
	// ServerName; default "bicot-embedded".
	ServerName string
	// StartTimeout bounds waiting for the server to accept connections; default 10 s.
	StartTimeout time.Duration
	// MonitorPort serves the HTTP monitoring endpoints (/varz, /jsz: what KEDA's JetStream
	// scaler reads); 0 (default) disables them, -1 picks a free port.
	MonitorPort int
	// Debug turns on the server's own logging to stderr.
	Debug bool
	// Users the server lets in, each with its role's permissions (Permissions); empty, and no
	// Token: anyone who reaches the port (keep it on loopback then).
	Users []User
	// Token: one shared secret that gives every client full access (instead of Users).
	Token string
	// TLS, when set, serves clients over TLS only.
	TLS *TLS
}

// Server is a running in-process nats-server with JetStream enabled.
type Server struct {
	srv     *server.Server
	tempDir string
}

// Start starts a nats-server inside this process: real NATS and real JetStream with file
// storage, used by tests and by laptop mode.
func Start(o Options) (*Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port < 0 || o.Port > 65535 {
		return nil, fmt.Errorf("embedded nats: port %d out of range", o.Port)
	}
	if o.MonitorPort < -1 || o.MonitorPort > 65535 {
		return nil, fmt.Errorf("embedded nats: monitor port %d out of range", o.MonitorPort)
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	if o.MaxPayload < 0 {
		return nil, fmt.Errorf("embedded nats: max payload %d must be positive", o.MaxPayload)
	}
	if o.ServerName == "" {
		o.ServerName = "bicot-embedded"
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 10 * time.Second
	}
	e := &Server{}
	if o.StoreDir == "" {
		d, err := os.MkdirTemp("", "bicot-nats-")
		if err != nil {
			return nil, fmt.Errorf("embedded nats: store dir: %w", err)
		}
		e.tempDir = d
		o.StoreDir = d
	} else if err := os.MkdirAll(o.StoreDir, 0o755); err != nil {
		return nil, fmt.Errorf("embedded nats: store dir %s: %w", o.StoreDir, err)
	}
	port := o.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	sopts := &server.Options{
		ServerName: o.ServerName,
		Host:       o.Host,
		Port:       port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		MaxPayload: o.MaxPayload,
		// Pending must hold a few max-size messages per client.
		MaxPending: int64(o.MaxPayload) * 8,
		NoSigs:     true,
		NoLog:      !o.Debug,
	}
	if err := configureAuth(o, sopts); err != nil {
		e.cleanup()
		return nil, err
	}
	if o.MonitorPort != 0 {
		sopts.HTTPHost = o.Host
		sopts.HTTPPort = o.MonitorPort
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		e.cleanup()
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	if o.Debug {
		srv.ConfigureLogger()
	}
	e.srv = srv
	srv.Start()
	if !srv.ReadyForConnections(o.StartTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		e.cleanup()
		return nil, fmt.Errorf("embedded nats on %s:%d: not ready after %v", o.Host, o.Port, o.StartTimeout)
	}
	if !srv.JetStreamEnabled() {
		e.Shutdown()
		return nil, errors.New("embedded nats: JetStream did not start")
	}
	return e, nil
}

// URL is the nats:// address clients connect to.
func (e *Server) URL() string { return e.srv.ClientURL() }

// Addr is the host:port the server listens on.
func (e *Server) Addr() string {
	if a, ok := e.srv.Addr().(*net.TCPAddr); ok {
		return net.JoinHostPort(a.IP.String(), strconv.Itoa(a.Port))
	}
	return e.srv.Addr().String()
}

// MonitorAddr is the host:port of the HTTP monitoring endpoint, "" when disabled.
func (e *Server) MonitorAddr() string {
	if a := e.srv.MonitorAddr(); a != nil {
		return a.String()
	}
	return ""
}

// Server exposes the underlying nats-server (for monitoring or tests that need its internals).
func (e *Server) Server() *server.Server { return e.srv }

// Shutdown stops the server, waits for it to finish, and removes a temporary store directory.
func (e *Server) Shutdown() {
	if e == nil || e.srv == nil {
		return
	}
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	e.cleanup()
}

func (e *Server) cleanup() {
	if e.tempDir != "" {
		os.RemoveAll(e.tempDir)
		e.tempDir = ""
	}
}
