// Package secure guards the coordinators' HTTP endpoints (the status API and the raft endpoint)
// and raft's own traffic: TLS configurations built from PEM files (crypto/tls does the work;
// with a CA, both sides verify each other) and bearer tokens compared in constant time. NATS has
// its own client options (bus.Auth) and server options (natsd).
package secure

import (
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"
)

// TLSFiles are PEM files: a CA that verifies the other side, and this side's certificate and key.
type TLSFiles struct {
	CA   string
	Cert string
	Key  string
}

// IsZero reports whether no TLS is configured.
func (f TLSFiles) IsZero() bool { return f == TLSFiles{} }

// Scheme is "https" with TLS, "http" without.
func (f TLSFiles) Scheme() string {
	if f.IsZero() {
		return "http"
	}
	return "https"
}

func (f TLSFiles) load() (*x509.CertPool, []tls.Certificate, error) {
	if (f.Cert == "") != (f.Key == "") {
		return nil, nil, errors.New("tls: a certificate needs both the certificate and its key file")
	}
	var pool *x509.CertPool
	if f.CA != "" {
		b, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, nil, fmt.Errorf("tls CA: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, nil, fmt.Errorf("tls CA %s: no PEM certificate in it", f.CA)
		}
	}
	var certs []tls.Certificate
	if f.Cert != "" {
		c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("tls certificate %s: %w", f.Cert, err)
		}
		certs = append(certs, c)
	}
	return pool, certs, nil
}

// ServerConfig serves TLS with the certificate; with a CA it also requires a client certificate
// that the CA signed (mutual TLS). Nil when no TLS is configured.
func (f TLSFiles) ServerConfig() (*tls.Config, error) {
	if f.IsZero() {
		return nil, nil
	}
	pool, certs, err := f.load()
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		return nil, errors.New("tls: serving needs a certificate and key")
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: certs}
	if pool != nil {
		c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// ClientConfig verifies servers with the CA (the system's roots without one) and presents the
// certificate when there is one. Nil when no TLS is configured.
func (f TLSFiles) ClientConfig() (*tls.Config, error) {
	if f.IsZero() {
		return nil, nil
	}
	pool, certs, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: certs}, nil
}

// HeaderAuthorization carries "Bearer <token>".
const HeaderAuthorization = "Authorization"

// RequireToken answers 401 to requests without the bearer token, except on the paths in open
// (e.g. a health check). An empty token lets everything through.
func RequireToken(token string, h http.Handler, open ...string) http.Handler {
	if token == "" {
		return h
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slices.Contains(open, r.URL.Path) {
			h.ServeHTTP(w, r)
			return
		}
		if subtle.ConstantTimeCompare([]byte(r.Header.Get(HeaderAuthorization)), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="bicot"`)
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// TokenCookie is the cookie a browser presents the status API's bearer token in.
const TokenCookie = "bicot_token"

// AcceptBrowserToken lets a browser present the bearer token that h (a RequireToken handler)
// checks: a page load, an <img> or a plain fetch cannot carry an Authorization header. The token is
// given once as ?token= in any URL, which sets it as an HttpOnly, SameSite=Strict cookie (Secure
// over TLS) and redirects to the same URL without it, so it leaves the address bar and the
// history; later requests carry the cookie, which becomes the Authorization header h checks. A
// wrong ?token= is answered 401 and sets nothing; a request with its own Authorization header is
// passed on as it is. An empty token returns h itself.
func AcceptBrowserToken(token string, h http.Handler) http.Handler {
	if token == "" {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Has("token") {
			if subtle.ConstantTimeCompare([]byte(q.Get("token")), []byte(token)) != 1 {
				http.Error(w, "wrong token", http.StatusUnauthorized)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: TokenCookie, Value: token, Path: "/", HttpOnly: true,
				SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
			q.Del("token")
			u := *r.URL
			u.RawQuery = q.Encode()
			http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
			return
		}
		if r.Header.Get(HeaderAuthorization) == "" {
			if c, err := r.Cookie(TokenCookie); err == nil && c.Value != "" {
				r = r.Clone(r.Context())
				r.Header.Set(HeaderAuthorization, "Bearer "+c.Value)
			}
		}
		h.ServeHTTP(w, r)
	})
}

type tokenTransport struct {
	header string
	base   http.RoundTripper
}

func (t tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(HeaderAuthorization, t.header)
	return t.base.RoundTrip(r)
}

// Transport is an HTTP transport that dials with the client TLS configuration of files and sends
// the bearer token (when not empty) with every request.
func Transport(files TLSFiles, token string) (http.RoundTripper, *http.Transport, error) {
	tc, err := files.ClientConfig()
	if err != nil {
		return nil, nil, err
	}
	base := &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second, TLSClientConfig: tc,
		TLSHandshakeTimeout: 10 * time.Second}
	if token == "" {
		return base, base, nil
	}
	return tokenTransport{header: "Bearer " + token, base: base}, base, nil
}

// URL is addr ("host:port", or a URL with a scheme, kept as it is) as a base URL in files' scheme.
func URL(files TLSFiles, addr string) string {
	if strings.Contains(addr, "://") {
		return strings.TrimRight(addr, "/")
	}
	return files.Scheme() + "://" + addr
}
