package runstate

import (
	"bytes"
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bicot-rl/bicot/pkg/secure"
	"github.com/bicot-rl/bicot/pkg/tlstest"
)

// TestSecuredCluster runs three nodes with raft over mutual TLS and the HTTP endpoint behind a
// token and the same TLS: they elect a leader and replicate; a follower forwards an apply; a
// client with the token and CA reads the state. Without the token, or without a client
// certificate, the endpoint refuses (no command applied), and a raft connection without a
// certificate the CA signed is dropped.
func TestSecuredCluster(t *testing.T) {
	certs, err := tlstest.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	files := secure.TLSFiles{CA: certs.CA, Cert: certs.ServerCert, Key: certs.ServerKey}
	const token = "cluster-secret"
	peers, nodes := bootstrapThree(t, token, files)

	var addrs []string
	for _, p := range peers {
		addrs = append(addrs, p.HTTPAddr)
	}
	cl, err := NewClientWith(addrs, ClientOptions{Token: token, TLS: secure.TLSFiles{CA: certs.CA, Cert: certs.ClientCert, Key: certs.ClientKey}}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if st, err := cl.State(ctxT(t, 10*time.Second)); err != nil || st.RunID != "r" {
		t.Fatalf("state with token and certificate: %+v, %v", st.RunID, err)
	}

	// An outsider: no token, or the token without a client certificate.
	apply := `{"type":"dispatch_batch","time":"2026-01-01T00:00:00Z","dispatch_batch":{"batch_id":"x","step":0,"count":1}}`
	post := func(c *http.Client) (int, error) {
		resp, err := c.Post("https://"+peers[0].HTTPAddr+"/raft/apply", "application/json", bytes.NewBufferString(apply))
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	cc, err := secure.TLSFiles{CA: certs.CA, Cert: certs.ClientCert, Key: certs.ClientKey}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	withCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cc}}
	if code, err := post(withCert); err != nil || code != http.StatusUnauthorized {
		t.Errorf("apply without the token: status %d, %v; want 401", code, err)
	}
	rt, _, err := secure.Transport(secure.TLSFiles{CA: certs.CA}, token)
	if err != nil {
		t.Fatal(err)
	}
	if code, err := post(&http.Client{Timeout: 5 * time.Second, Transport: rt}); err == nil {
		t.Errorf("apply with the token but no client certificate: status %d, want a refused handshake", code)
	}
	if st := nodes["a"].State(); len(st.Groups) != 0 {
		t.Errorf("an outsider's command was applied: %d groups", len(st.Groups))
	}
	// Raft's port drops a TLS client without a certificate (and plain TCP never gets an answer).
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", peers[0].RaftAddr, &tls.Config{RootCAs: cc.RootCAs})
	if err == nil {
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		_, err = conn.Write([]byte{0})
		if err == nil {
			_, err = conn.Read(make([]byte, 1))
		}
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("raft connection without a client certificate: %v, want a certificate error", err)
	}
}
