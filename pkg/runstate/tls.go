package runstate

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/bicot-rl/bicot/pkg/secure"
)

// tlsStream is raft's stream layer over mutual TLS: it accepts only peers whose client
// certificate the CA signed, and dials peers verifying theirs.
type tlsStream struct {
	ln     net.Listener
	adv    net.Addr
	client *tls.Config
}

func (s *tlsStream) Accept() (net.Conn, error) { return s.ln.Accept() }
func (s *tlsStream) Close() error              { return s.ln.Close() }

func (s *tlsStream) Addr() net.Addr {
	if s.adv != nil {
		return s.adv
	}
	return s.ln.Addr()
}

func (s *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", string(addr), s.client)
}

// newTLSTransport is raft.NewTCPTransportWithLogger over TLS.
func newTLSTransport(bind string, adv net.Addr, files secure.TLSFiles, log hclog.Logger) (*raft.NetworkTransport, error) {
	if files.CA == "" || files.Cert == "" {
		return nil, fmt.Errorf("raft tls: needs a CA, a certificate and its key (peers verify each other)")
	}
	sc, err := files.ServerConfig()
	if err != nil {
		return nil, fmt.Errorf("raft tls: %w", err)
	}
	cc, err := files.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("raft tls: %w", err)
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	s := &tlsStream{ln: tls.NewListener(ln, sc), adv: adv, client: cc}
	if adv == nil {
		if a, ok := ln.Addr().(*net.TCPAddr); ok && a.IP.IsUnspecified() {
			ln.Close()
			return nil, fmt.Errorf("raft tls: %s is not an address peers can dial; set an advertise address", bind)
		}
	}
	return raft.NewNetworkTransportWithLogger(s, 3, 2*time.Second, log), nil
}
