package secure_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/secure"
)

func TestRequireToken(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	h := secure.RequireToken("s3cret", ok, "/healthz")
	for _, c := range []struct {
		path, auth string
		want       int
	}{
		{"/v1/status", "", http.StatusUnauthorized},
		{"/v1/status", "Bearer wrong", http.StatusUnauthorized},
		{"/v1/status", "s3cret", http.StatusUnauthorized},
		{"/v1/status", "Bearer s3cret", http.StatusOK},
		{"/healthz", "", http.StatusOK},
	} {
		r := httptest.NewRequest(http.MethodGet, c.path, nil)
		if c.auth != "" {
			r.Header.Set("Authorization", c.auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("%s with %q: %d, want %d", c.path, c.auth, w.Code, c.want)
		}
		if strings.Contains(w.Body.String(), "s3cret") {
			t.Errorf("the answer quotes the token: %q", w.Body.String())
		}
	}
	if secure.RequireToken("", ok) == nil {
		t.Error("no token: want the handler itself")
	}
}

func TestAcceptBrowserToken(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	h := secure.AcceptBrowserToken("s3cret", secure.RequireToken("s3cret", ok, "/healthz"))
	do := func(target string, cookie *http.Cookie) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		if cookie != nil {
			r.AddCookie(cookie)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := do("/", nil); w.Code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", w.Code)
	}
	if w := do("/?token=wrong", nil); w.Code != http.StatusUnauthorized || len(w.Result().Cookies()) != 0 {
		t.Errorf("wrong ?token=: %d with cookies %v, want 401 and none", w.Code, w.Result().Cookies())
	}
	w := do("/v1/samples?step=3&token=s3cret", nil)
	cookies := w.Result().Cookies()
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/v1/samples?step=3" || len(cookies) != 1 {
		t.Fatalf("?token=: %d to %q with cookies %v, want 303 to the URL without it and a cookie", w.Code, w.Header().Get("Location"), cookies)
	}
	c := cookies[0]
	if c.Name != secure.TokenCookie || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" {
		t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/", c)
	}
	if w := do("/v1/status", c); w.Code != http.StatusOK {
		t.Errorf("with the cookie: %d, want 200", w.Code)
	}
	if w := do("/v1/status", &http.Cookie{Name: secure.TokenCookie, Value: "forged"}); w.Code != http.StatusUnauthorized {
		t.Errorf("with a wrong cookie: %d, want 401", w.Code)
	}
	if secure.AcceptBrowserToken("", ok) == nil {
		t.Error("no token: want the handler itself")
	}
}

func TestTLSFilesErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		f    secure.TLSFiles
		want string
	}{
		"cert without key": {secure.TLSFiles{Cert: "c.pem"}, "both the certificate and its key"},
		"missing CA":       {secure.TLSFiles{CA: filepath.Join(dir, "none.pem")}, "tls CA"},
		"CA not PEM":       {secure.TLSFiles{CA: notPEM}, "no PEM certificate"},
	} {
		if _, err := c.f.ClientConfig(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %q", name, err, c.want)
		}
	}
	if _, err := (secure.TLSFiles{CA: notPEM}).ServerConfig(); err == nil {
		t.Error("serving without a certificate: no error")
	}
	if c, err := (secure.TLSFiles{}).ServerConfig(); c != nil || err != nil {
		t.Errorf("no files: %v %v, want no TLS", c, err)
	}
}
