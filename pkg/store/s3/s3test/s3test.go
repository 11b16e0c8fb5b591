// Package s3test runs a real S3 server for tests: versitygw (github.com/versity/versitygw) over a
// temporary directory on a free loopback port, with signature checking on. It is a test helper
// only; nothing of versitygw is vendored or committed.
//
// The binary is looked up in $BICOT_VERSITYGW, then on PATH, then in the repository's git-ignored
// .tools/bin (where scripts/s3server.sh installs it). When it is missing the test is skipped with
// the install command, except under CI=true, where a missing server is a failure.
package s3test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/porttest"
	"github.com/bicot-rl/bicot/pkg/store/s3"
)

// InstallHint is the command that installs the server.
const InstallHint = "scripts/s3server.sh install   (or: GOBIN=$PWD/.tools/bin go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)"

// Server is a running versitygw with one bucket.
type Server struct {
	Endpoint  string // host:port, plain HTTP
	AccessKey string
	SecretKey string
	Bucket    string
	Dir       string // the posix backend's root: Dir/Bucket/<object keys>

	prefixes atomic.Int64
	bin      string
	logPath  string
	mu       sync.Mutex
	stop     func() // nil while stopped
}

// Binary returns the versitygw path, or an error saying how to install it.
func Binary() (string, error) {
	if p := os.Getenv("BICOT_VERSITYGW"); p != "" {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
		return "", fmt.Errorf("BICOT_VERSITYGW=%s: not a file; install the server: %s", p, InstallHint)
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	if root, err := repoRoot(); err == nil {
		p := filepath.Join(root, ".tools", "bin", "versitygw")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("versitygw not found (BICOT_VERSITYGW, PATH, .tools/bin); install it: %s", InstallHint)
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Start runs a server for the test's lifetime (stopped in t.Cleanup) and creates its bucket.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("S3 test server missing under CI: %v", err)
		}
		t.Skip(err.Error())
	}
	var lastErr error
	for range 3 { // a free port can be taken between probing and binding
		s, err := start(t, bin)
		if err == nil {
			return s
		}
		lastErr = err
	}
	t.Fatalf("start versitygw: %v", lastErr)
	return nil
}

func start(t testing.TB, bin string) (*Server, error) {
	port, err := porttest.Port()
	if err != nil {
		return nil, err
	}
	dir := t.TempDir()
	s := &Server{
		Endpoint:  net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		AccessKey: "bicottest",
		SecretKey: "bicottestsecret",
		Bucket:    "bicot-test",
		Dir:       filepath.Join(dir, "data"),
		bin:       bin,
		logPath:   filepath.Join(dir, "versitygw.log"),
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, err
	}
	if err := s.launch(); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("versitygw log tail:\n%s", s.logTail())
		}
	})
	return s, nil
}

// launch runs versitygw on s's port and directory and waits until it serves the bucket.
func (s *Server) launch() error {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.bin, "--port", s.Endpoint, "posix", s.Dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.AccessKey, "ROOT_SECRET_KEY="+s.SecretKey)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("run %s: %w", s.bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logf.Close()
	}

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	cl, err := minio.New(s.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		BucketLookup: minio.BucketLookupPath,
		Transport:    tr,
		MaxRetries:   1,
	})
	if err != nil {
		stop()
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = cl.MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{})
		if err != nil {
			// After a restart the bucket is there already.
			if ok, berr := cl.BucketExists(ctx, s.Bucket); berr == nil && ok {
				err = nil
			}
		}
		cancel()
		if err == nil {
			break
		}
		select {
		case werr := <-exited:
			logf.Close()
			return fmt.Errorf("versitygw exited (%v) before serving: %s", werr, s.logTail())
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("versitygw on %s not ready: %v; log: %s", s.Endpoint, err, s.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.mu.Lock()
	s.stop = stop
	s.mu.Unlock()
	return nil
}

// Stop shuts the server down (an S3 outage); Restart brings it back on the same address with the
// same objects. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	stop := s.stop
	s.stop = nil
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Restart starts the stopped server again.
func (s *Server) Restart() error {
	s.Stop()
	return s.launch()
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Config returns a store config for this server under prefix ("" for a fresh unique prefix).
func (s *Server) Config(prefix string) s3.Config {
	if prefix == "" {
		prefix = "t" + strconv.FormatInt(s.prefixes.Add(1), 10)
	}
	return s3.Config{
		Endpoint:  s.Endpoint,
		Bucket:    s.Bucket,
		Prefix:    prefix,
		AccessKey: s.AccessKey,
		SecretKey: s.SecretKey,
		PartSize:  s3.MinPartSize,
		Timeout:   30 * time.Second,
		Attempts:  3,
		Backoff:   20 * time.Millisecond,
	}
}

// NewStore opens a store on this server under prefix ("" for a fresh unique prefix), closed at
// cleanup.
func (s *Server) NewStore(t testing.TB, prefix string, log zerolog.Logger) *s3.Store {
	t.Helper()
	st, err := s3.New(s.Config(prefix), log)
	if err != nil {
		t.Fatalf("s3 store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// Client returns a raw minio client for this server (to tamper with objects behind a store's
// back, or to measure raw throughput); its idle connections are closed at cleanup.
func (s *Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}
	cl, err := minio.New(s.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		BucketLookup: minio.BucketLookupPath,
		Transport:    tr,
	})
	if err != nil {
		t.Fatalf("minio client: %v", err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return cl
}

// ObjectName is the S3 object name of a store key under prefix.
func ObjectName(prefix, key string) string {
	if prefix = strings.Trim(prefix, "/"); prefix == "" {
		return key
	}
	return prefix + "/" + key
}
