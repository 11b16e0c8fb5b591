package s3_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/bicot-rl/bicot/pkg/store"
	"github.com/bicot-rl/bicot/pkg/store/s3"
	"github.com/bicot-rl/bicot/pkg/store/s3/s3test"
	"github.com/bicot-rl/bicot/pkg/store/storetest"
)

// Every store and raw client closes its idle connections at cleanup, so no net/http goroutine is
// left for goleak to find.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testLog(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestConformance(t *testing.T) {
	srv := s3test.Start(t)
	storetest.Run(t, func() store.Store { return srv.NewStore(t, "", testLog(t)) })
}

func readAll(ctx context.Context, st store.Store, key string) ([]byte, error) {
	r, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func TestChecksumCatchesTampering(t *testing.T) {
	srv := s3test.Start(t)
	st := srv.NewStore(t, "tamper", testLog(t))
	raw := srv.Client(t)
	ctx := ctxT(t, time.Minute)
	good := []byte("policy weights v1")
	if err := st.Put(ctx, "w/v1", bytes.NewReader(good), int64(len(good))); err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(ctx, st, "w/v1"); err != nil || !bytes.Equal(got, good) {
		t.Fatalf("clean read = %q, %v", got, err)
	}
	obj := s3test.ObjectName("tamper", "w/v1")
	goodSum := sha256.Sum256(good)

	cases := []struct {
		name string
		data []byte
		meta map[string]string
	}{
		{"same length, old checksum", []byte("policy weights v2"), map[string]string{s3.MetaSHA256: hex.EncodeToString(goodSum[:])}},
		{"truncated, old checksum", []byte("policy"), map[string]string{s3.MetaSHA256: hex.EncodeToString(goodSum[:])}},
		{"no checksum metadata", good, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := raw.PutObject(ctx, srv.Bucket, obj, bytes.NewReader(c.data), int64(len(c.data)), minio.PutObjectOptions{UserMetadata: c.meta})
			if err != nil {
				t.Fatal(err)
			}
			_, err = readAll(ctx, st, "w/v1")
			if !errors.Is(err, s3.ErrChecksum) || !strings.Contains(err.Error(), "w/v1") {
				t.Fatalf("read of tampered object: %v; want ErrChecksum naming the key", err)
			}
		})
	}

	// A caller-supplied digest that does not match is refused before anything is stored.
	bad := sha256.Sum256([]byte("something else"))
	err := st.PutSHA256(ctx, "w/v2", io.MultiReader(bytes.NewReader(good)), int64(len(good)), hex.EncodeToString(bad[:]))
	if !errors.Is(err, s3.ErrChecksum) {
		t.Fatalf("PutSHA256 with a wrong digest over a stream: %v, want ErrChecksum", err)
	}
	if _, err := st.Stat(ctx, "w/v2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Stat after refused put: %v, want ErrNotFound", err)
	}
	// From a seekable reader the digest goes out as x-amz-content-sha256 and the server refuses it.
	if err := st.PutSHA256(ctx, "w/v2", bytes.NewReader(good), int64(len(good)), hex.EncodeToString(bad[:])); !errors.Is(err, s3.ErrChecksum) {
		t.Fatalf("PutSHA256 with a wrong digest: %v; want the server's refusal as ErrChecksum", err)
	}
	if _, err := st.Stat(ctx, "w/v2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Stat after refused put: %v, want ErrNotFound", err)
	}
	if err := st.PutSHA256(ctx, "w/v3", bytes.NewReader(good), -1, hex.EncodeToString(goodSum[:])); err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(ctx, st, "w/v3"); err != nil || !bytes.Equal(got, good) {
		t.Fatalf("read after PutSHA256 = %q, %v", got, err)
	}
}

func TestMultipartLargeObject(t *testing.T) {
	srv := s3test.Start(t)
	cfg := srv.Config("big")
	cfg.PartSize = s3.MinPartSize // 20 MiB + 123 B -> 5 parts
	st, err := s3.New(cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	data := make([]byte, 20<<20+123)
	for i := range data {
		data[i] = byte(i*31 + i>>11)
	}
	ctx := ctxT(t, 2*time.Minute)
	// Both paths: seekable (parallel parts from ReadAt) and a plain stream (spooled).
	if err := st.Put(ctx, "ckpt/weights", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, "ckpt/stream", io.MultiReader(bytes.NewReader(data)), -1); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ckpt/weights", "ckpt/stream"} {
		got, err := readAll(ctx, st, k)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s round trip: %d bytes, %v", k, len(got), err)
		}
		oi, err := srv.Client(t).StatObject(ctx, srv.Bucket, s3test.ObjectName("big", k), minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// A multipart ETag is md5-of-part-md5s followed by "-<parts>".
		if !strings.HasSuffix(oi.ETag, "-5") {
			t.Errorf("%s ETag %q: want a 5-part multipart upload", k, oi.ETag)
		}
	}
}

// hangServer accepts connections and never answers.
func hangServer(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return l.Addr().String()
}

func TestPerCallTimeout(t *testing.T) {
	cfg := s3.Config{Endpoint: hangServer(t), Bucket: "bkt", AccessKey: "k", SecretKey: "s",
		Timeout: 150 * time.Millisecond, Attempts: 2, Backoff: 10 * time.Millisecond}
	st, err := s3.New(cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := ctxT(t, 30*time.Second)
	_, err = st.Stat(ctx, "x/y")
	if err == nil || !strings.Contains(err.Error(), "timed out") || !strings.Contains(err.Error(), "x/y") || !strings.Contains(err.Error(), "attempt 2,") {
		t.Fatalf("Stat against a silent server: %v; want a timeout after 2 attempts naming the key", err)
	}
	if err := st.Put(ctx, "x/y", bytes.NewReader([]byte("z")), 1); err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("Put against a silent server: %v; want a timeout", err)
	}
	// The caller's context wins over the per-attempt timeout.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := st.Stat(short, "x/y"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stat with an expired context: %v, want DeadlineExceeded", err)
	}
}

func TestRetriesTransientErrors(t *testing.T) {
	srv := s3test.Start(t)
	target, _ := url.Parse("http://" + srv.Endpoint)
	proxy := httputil.NewSingleHostReverseProxy(target)
	ptr := &http.Transport{}
	proxy.Transport = ptr
	var failures atomic.Int32
	failures.Store(2)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failures.Add(-1) >= 0 {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>slow down</Message></Error>`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	defer ptr.CloseIdleConnections()

	cfg := srv.Config("retry")
	cfg.Endpoint = strings.TrimPrefix(front.URL, "http://")
	cfg.Attempts = 3
	st, err := s3.New(cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := ctxT(t, time.Minute)
	if err := st.Put(ctx, "r/1", bytes.NewReader([]byte("survives")), 8); err != nil {
		t.Fatalf("Put through two 503s: %v", err)
	}
	if got, err := readAll(ctx, st, "r/1"); err != nil || string(got) != "survives" {
		t.Fatalf("read back = %q, %v", got, err)
	}
	failures.Store(5)
	if _, err := st.Stat(ctx, "r/1"); err == nil || !strings.Contains(err.Error(), "attempt 3,") {
		t.Fatalf("Stat through five 503s: %v, want failure after 3 attempts", err)
	}
	failures.Store(0)
	if _, err := st.Stat(ctx, "r/missing"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing key: %v, want ErrNotFound without retries", err)
	}
}

func TestParseAndCredentials(t *testing.T) {
	c, err := s3.Parse("s3://ckpts/runs/r7/?endpoint=127.0.0.1:7070&region=eu-1&secure=true&part_size=8388608&threads=2&timeout=30s&attempts=5")
	if err != nil {
		t.Fatal(err)
	}
	if c.Bucket != "ckpts" || c.Prefix != "runs/r7" || c.Endpoint != "127.0.0.1:7070" || c.Region != "eu-1" || !c.Secure ||
		c.PartSize != 8<<20 || c.Threads != 2 || c.Timeout != 30*time.Second || c.Attempts != 5 {
		t.Fatalf("Parse = %#v", c)
	}
	for _, bad := range []string{"http://b/p", "s3:///p", "s3://b/p?colour=red", "s3://k:s@b/p", "s3://b/p?secure=maybe"} {
		if _, err := s3.Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}

	env := map[string]string{
		"AWS_ACCESS_KEY_ID": "AKIAAWS", "AWS_SECRET_ACCESS_KEY": "awssecret",
		"BICOT_S3_ACCESS_KEY": "bicotkey", "BICOT_S3_SECRET_KEY": "bicotsecret",
		"BICOT_S3_ENDPOINT": "https://s3.example.com",
	}
	c.Endpoint = ""
	c.ApplyEnv(func(k string) string { return env[k] })
	if c.AccessKey != "bicotkey" || c.SecretKey != "bicotsecret" || c.Endpoint != "https://s3.example.com" {
		t.Fatalf("ApplyEnv: endpoint %q, key %q", c.Endpoint, c.AccessKey)
	}
	for _, s := range []string{c.String(), fmt.Sprintf("%v %+v %#v %s", c, c, c, &c)} {
		if strings.Contains(s, "bicotsecret") || strings.Contains(s, "bicotkey") {
			t.Fatalf("secrets printed: %s", s)
		}
	}
	delete(env, "BICOT_S3_ACCESS_KEY")
	delete(env, "BICOT_S3_SECRET_KEY")
	var c2 s3.Config
	c2.ApplyEnv(func(k string) string { return env[k] })
	if c2.AccessKey != "AKIAAWS" {
		t.Fatalf("AWS fallback: key %q", c2.AccessKey)
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "credentials")
	os.WriteFile(file, []byte("# test\n[default]\naws_access_key_id = AKDEF\naws_secret_access_key = defsecret\n\n[profile train]\naws_access_key_id=AKTRAIN\naws_secret_access_key=\"trainsecret\"\n"), 0o600)
	for profile, want := range map[string]string{"": "AKDEF", "train": "AKTRAIN"} {
		cfg := s3.Config{Endpoint: "127.0.0.1:1", Bucket: "b", CredentialsFile: file, Profile: profile}
		st, err := s3.New(cfg, testLog(t))
		if err != nil {
			t.Fatalf("profile %q: %v", profile, err)
		}
		if got := st.Config().AccessKey; got != want {
			t.Fatalf("profile %q: key %q, want %q", profile, got, want)
		}
		if strings.Contains(st.String(), "secret") {
			t.Fatalf("String leaks: %s", st)
		}
		st.Close()
	}
	if _, err := s3.New(s3.Config{Endpoint: "h:1", Bucket: "b", CredentialsFile: file, Profile: "nope"}, testLog(t)); err == nil {
		t.Fatal("missing profile accepted")
	}
	if _, err := s3.New(s3.Config{Endpoint: "h:1", Bucket: "b"}, testLog(t)); err == nil || !strings.Contains(err.Error(), "BICOT_S3_ACCESS_KEY") {
		t.Fatalf("no credentials: %v", err)
	}
	if _, err := s3.New(s3.Config{Endpoint: "h:1", Bucket: "b", AccessKey: "k", SecretKey: "s", PartSize: 1 << 20}, testLog(t)); err == nil {
		t.Fatal("part size below 5 MiB accepted")
	}
	if _, err := s3.New(s3.Config{Endpoint: "ftp://h:1", Bucket: "b", AccessKey: "k", SecretKey: "s"}, testLog(t)); err == nil {
		t.Fatal("ftp endpoint accepted")
	}
}

// An S3 outage of a few seconds pauses a Put (transient errors retried with backoff for
// retry_for) instead of failing it; the object is there once the server is back.
func TestPutRidesOutAnOutage(t *testing.T) {
	srv := s3test.Start(t)
	cfg := srv.Config("outage")
	cfg.Backoff, cfg.MaxBackoff, cfg.RetryFor, cfg.Timeout, cfg.Attempts = 100*time.Millisecond, 500*time.Millisecond, time.Minute, 2*time.Second, 0
	st, err := s3.New(cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := ctxT(t, 2*time.Minute)
	srv.Stop()
	back := make(chan error, 1)
	go func() {
		time.Sleep(3 * time.Second)
		back <- srv.Restart()
	}()
	start := time.Now()
	if err := st.Put(ctx, "o/1", bytes.NewReader([]byte("after the outage")), 16); err != nil {
		t.Fatalf("Put during a 3 s outage: %v", err)
	}
	if err := <-back; err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < 2*time.Second {
		t.Errorf("Put returned after %v, before the server was back", waited)
	}
	if got, err := readAll(ctx, st, "o/1"); err != nil || string(got) != "after the outage" {
		t.Fatalf("read back = %q, %v", got, err)
	}
	// A bounded retry_for gives up, naming the operation.
	cfg.RetryFor = 500 * time.Millisecond
	short, err := s3.New(cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer short.Close()
	srv.Stop()
	if err := short.Put(ctx, "o/2", bytes.NewReader([]byte("x")), 1); err == nil || !strings.Contains(err.Error(), "s3 put o/2") {
		t.Fatalf("Put with the server down and retry_for 500ms: %v", err)
	}
}
