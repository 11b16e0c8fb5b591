package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// chaosProc is one OS process of the chaos run: a role's binary started by the test, with its
// output in a log file of its own (a ten-minute run starts hundreds of workers).
type chaosProc struct {
	role    string // nats, coordinator, learner, rollout, reward
	name    string
	logPath string
	cmd     *exec.Cmd
	started time.Time

	done    chan struct{} // closed once the process has exited and err is set
	err     error
	ended   time.Time
	killed  atomic.Bool // by the chaos (SIGKILL), so its exit status means nothing
	stopped atomic.Bool // with SIGTERM at the end of an open-ended run: it must exit 0
}

// exited says whether the process has ended.
func (p *chaosProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill ends the process with SIGKILL, as a machine or OOM kill would, and waits for it.
func (p *chaosProc) kill() {
	p.killed.Store(true)
	_ = p.cmd.Process.Kill()
	<-p.done
}

// crashed says whether the process ended by itself with an error (not killed by the chaos).
func (p *chaosProc) crashed() bool { return p.exited() && !p.killed.Load() && p.err != nil }

// tail returns the last n lines of the process's output.
func (p *chaosProc) tail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return lastLines(string(b), n)
}

// logLines calls fn with every line of the process's output.
func (p *chaosProc) logLines(fn func(line string)) {
	f, err := os.Open(p.logPath)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		fn(sc.Text())
	}
}

// chaosProcs starts and keeps every process of the run, so that all of them are killed at the end
// whatever the path out of the test, and counted and shown in the report.
type chaosProcs struct {
	dir string

	mu    sync.Mutex
	all   []*chaosProc
	seq   map[string]int
	wg    sync.WaitGroup
	final bool // no more starts: the test is cleaning up
}

func newChaosProcs(dir string) *chaosProcs {
	return &chaosProcs{dir: dir, seq: map[string]int{}}
}

// start runs bin with args as a process of role, named name (a numbered suffix tells its
// incarnations apart), with env added to the test's environment.
func (ps *chaosProcs) start(role, name, bin string, env []string, args ...string) (*chaosProc, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.final {
		return nil, errors.New("the chaos run is shutting down")
	}
	ps.seq[name]++
	if ps.seq[name] > 1 {
		name = fmt.Sprintf("%s#%d", name, ps.seq[name])
	}
	logPath := filepath.Join(ps.dir, strings.ReplaceAll(name, "#", "-")+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = ps.dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &chaosProc{role: role, name: name, logPath: logPath, cmd: cmd, started: time.Now(), done: make(chan struct{})}
	ps.all = append(ps.all, p)
	ps.wg.Add(1)
	go func() {
		defer ps.wg.Done()
		p.err = cmd.Wait()
		p.ended = time.Now()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// procs returns every process started so far.
func (ps *chaosProcs) procs() []*chaosProc {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return append([]*chaosProc(nil), ps.all...)
}

// shutdown refuses further starts, kills whatever still runs and waits for every process.
func (ps *chaosProcs) shutdown() {
	ps.mu.Lock()
	ps.final = true
	all := append([]*chaosProc(nil), ps.all...)
	ps.mu.Unlock()
	for _, p := range all {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
		}
	}
	ps.wg.Wait()
}

// s3Proxy sits between the learner and the S3 server. It passes every request through, except
// that once armed it holds the next checkpoint commit (the PUT of a checkpoint's MANIFEST.json)
// and tells the test, which kills the learner in the middle of that upload: the only way to land
// a kill inside a checkpoint save, which takes milliseconds on loopback.
type s3Proxy struct {
	srv  *http.Server
	ln   net.Listener
	rp   *httputil.ReverseProxy
	tr   *http.Transport
	addr string

	mu      sync.Mutex
	armed   bool
	held    chan string   // the held request's path
	release chan struct{} // closed to let the held request fail
	wg      sync.WaitGroup
}

// newS3Proxy serves on a free loopback port in front of target (host:port). Requests keep their
// Host header, so their S3 signatures, made for the proxy's address, stay valid.
func newS3Proxy(target string) (*s3Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("s3 proxy: %w", err)
	}
	u := &url.URL{Scheme: "http", Host: target}
	p := &s3Proxy{ln: ln, addr: ln.Addr().String(), rp: httputil.NewSingleHostReverseProxy(u), tr: &http.Transport{}}
	p.rp.Transport = p.tr
	// With the server down the learner must see what it would see without the proxy: a broken
	// connection, not an answer.
	p.rp.ErrorHandler = func(http.ResponseWriter, *http.Request, error) { panic(http.ErrAbortHandler) }
	p.rp.ErrorLog = chaosDiscardLog()
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second, ErrorLog: chaosDiscardLog()}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		_ = p.srv.Serve(ln)
	}()
	return p, nil
}

// arm makes the proxy hold the next checkpoint commit; the returned channel receives its path.
func (p *s3Proxy) arm() <-chan string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed = true
	p.held = make(chan string, 1)
	p.release = make(chan struct{})
	return p.held
}

// disarm lets a held request fail (its client is dead by then) and stops holding.
func (p *s3Proxy) disarm() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed = false
	if p.release != nil {
		close(p.release)
		p.release = nil
	}
}

func (p *s3Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/checkpoints/") && strings.HasSuffix(r.URL.Path, "/MANIFEST.json") {
		p.mu.Lock()
		hold, held, release := p.armed, p.held, p.release
		p.armed = false
		p.mu.Unlock()
		if hold {
			held <- r.URL.Path
			select {
			case <-release:
			case <-r.Context().Done():
			}
			panic(http.ErrAbortHandler)
		}
	}
	p.rp.ServeHTTP(w, r)
}

func (p *s3Proxy) close() {
	p.disarm()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err != nil {
		_ = p.srv.Close()
	}
	p.wg.Wait()
	p.tr.CloseIdleConnections()
}

func chaosDiscardLog() *log.Logger { return log.New(io.Discard, "", 0) }
