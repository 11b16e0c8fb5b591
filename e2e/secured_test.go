package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bicot-rl/bicot/pkg/porttest"
	"github.com/bicot-rl/bicot/pkg/secure"
	"github.com/bicot-rl/bicot/pkg/tlstest"
)

// TestSecuredRunKeepsSecrets runs a whole run as separate processes with every secret set, the
// way docs/security.md deploys one: NATS over mutual TLS with one user per role (passwords in
// the environment, the server's users file naming only the variables), the coordinator's raft
// endpoint and status API behind tokens over mutual TLS, and an expert server called with
// basic-auth credentials in its URL. The run must finish; the status API must refuse a request
// without the token and a client without a certificate; and no secret may appear in any
// process's output, in any file the run wrote (the store with its checkpoints and config.yaml,
// the raft data, NATS's storage) or in any answer of the APIs.
func TestSecuredRunKeepsSecrets(t *testing.T) {
	if testing.Short() {
		t.Skip("builds four binaries")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	pr := newProcessRun(ctx, t, tmp)
	certs, err := tlstest.Write(tmp)
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{
		"NATS_PW_COORDINATOR": "nats-pw-coordinator-7Hq2",
		"NATS_PW_ROLLOUT":     "nats-pw-rollout-9Kd1",
		"NATS_PW_REWARD":      "nats-pw-reward-3Mx8",
		"NATS_PW_LEARNER":     "nats-pw-learner-5Tz4",
		"BICOT_API_TOKEN":     "api-token-2Wv6",
		"BICOT_CLUSTER_TOKEN": "cluster-token-8Rb3",
		"EXPERT_PW":           "expert-pw-4Nc7",
	}
	free := func() string { return porttest.Addr(t) }

	users := "users:\n"
	for _, role := range []string{"coordinator", "rollout", "reward", "learner"} {
		users += fmt.Sprintf("  - {user: %s, password_env: NATS_PW_%s, role: %s}\n", role, strings.ToUpper(role), role)
	}
	usersFile := filepath.Join(tmp, "users.yaml")
	if err := os.WriteFile(usersFile, []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	// The expert server sits behind a proxy that wants the basic-auth credentials of its URL
	// and counts the calls that bring them.
	expertAddr := free()
	var expertCalls atomic.Int64
	proxyLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target, _ := url.Parse("http://" + expertAddr)
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "expert" || p != secrets["EXPERT_PW"] {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		expertCalls.Add(1)
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = proxy.Serve(proxyLn) }()
	defer proxy.Close()
	const steps = 2
	cfg := fmt.Sprintf(`run_id: sec1
seed: 3
prompts: %s
prompts_per_step: 2
group_size: 4
prompts_per_task: 1
steps: %d
sampling: {temperature: 1, cfg_weight: 3, max_plan_tokens: 6}
checkpoint_every: 1
store: %s
policy_init: %s
codebook: %s
experts: %s
expert_urls: {orm: "http://expert:%s@%s"}
wire: {ack_wait: 30s, heartbeat: 500ms}
`, filepath.Join(pr.root, "data/prompts/train.jsonl"), steps, filepath.Join(tmp, "store"), pr.policy,
		filepath.Join(pr.root, "models/codebook.vq"), pr.expertDir, secrets["EXPERT_PW"], proxyLn.Addr())
	// The run's config file is the operator's input and holds the expert's password; it is the
	// one file the search below leaves out.
	cfgPath := filepath.Join(tmp, "input", "run.yaml")
	if err := os.MkdirAll(filepath.Dir(cfgPath), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	type proc struct {
		name string
		cmd  *exec.Cmd
		out  *bytes.Buffer
		done chan error
	}
	var procs []*proc
	start := func(name, bin string, env []string, args ...string) *proc {
		var out bytes.Buffer
		cmd := exec.Command(bin, args...)
		cmd.Dir = tmp
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		p := &proc{name: name, cmd: cmd, out: &out, done: make(chan error, 1)}
		go func() { p.done <- cmd.Wait() }()
		procs = append(procs, p)
		return p
	}
	defer func() {
		for _, p := range procs {
			select {
			case err := <-p.done:
				p.done <- err
			default:
				_ = p.cmd.Process.Kill()
				<-p.done
			}
			if t.Failed() {
				t.Logf("--- %s output:\n%s", p.name, lastLines(p.out.String(), 30))
			}
		}
	}()
	wait := func(p *proc) {
		t.Helper()
		select {
		case err := <-p.done:
			p.done <- err
			if err != nil {
				t.Fatalf("%s exited with %v", p.name, err)
			}
		case <-ctx.Done():
			t.Fatalf("%s did not finish", p.name)
		}
	}

	var env []string
	for k, v := range secrets {
		env = append(env, k+"="+v)
	}
	urlFile := filepath.Join(tmp, "nats.url")
	start("nats-server", pr.bins["coordinator"], env, "nats-server", "--port", "0", "--url-file", urlFile,
		"--store-dir", filepath.Join(tmp, "nats"), "--users", usersFile,
		"--tls-cert", certs.ServerCert, "--tls-key", certs.ServerKey, "--tls-ca", certs.CA, "--tls-verify")
	natsURL := readURLFile(ctx, t, urlFile)
	natsTLS := []string{"--nats", natsURL, "--nats-ca", certs.CA, "--nats-cert", certs.ClientCert, "--nats-key", certs.ClientKey}
	clusterTLS := []string{"--tls-ca", certs.CA, "--tls-cert", certs.ServerCert, "--tls-key", certs.ServerKey}
	roleEnv := func(role string) []string {
		return append([]string{"BICOT_NATS_PASSWORD=" + secrets["NATS_PW_"+strings.ToUpper(role)]},
			"BICOT_API_TOKEN="+secrets["BICOT_API_TOKEN"], "BICOT_CLUSTER_TOKEN="+secrets["BICOT_CLUSTER_TOKEN"])
	}
	common := func(role string) []string {
		return append([]string{"run", "--config", cfgPath, "--log-format", "json", "--nats-user", role}, natsTLS...)
	}
	start("expert", pr.bins["reward-worker"], nil, "serve-expert", "--expert", "orm", "--addr", expertAddr, "--models", pr.expertDir)
	apiAddr, raftHTTP := free(), free()
	coord := start("coordinator", pr.bins["coordinator"], roleEnv("coordinator"), append(append(common("coordinator"), clusterTLS...),
		"--http", apiAddr, "--raft-http", raftHTTP, "--raft-dir", filepath.Join(tmp, "raft"), "--keep-serving")...)
	workers := []*proc{
		start("learner", pr.bins["learner"], roleEnv("learner"), append(append(common("learner"), clusterTLS...), "--coordinators", raftHTTP)...),
		start("rollout", pr.bins["rollout-worker"], roleEnv("rollout"), append(common("rollout"), "--id", "rollout-1")...),
		start("reward", pr.bins["reward-worker"], roleEnv("reward"), append(common("reward"), "--id", "reward-1")...),
	}
	for _, p := range workers {
		wait(p)
	}

	// The status API: refused without the token or without a client certificate, answered
	// with both; every answer searched for secrets.
	withCert, _, err := secure.Transport(secure.TLSFiles{CA: certs.CA, Cert: certs.ClientCert, Key: certs.ClientKey}, "")
	if err != nil {
		t.Fatal(err)
	}
	withBoth, _, err := secure.Transport(secure.TLSFiles{CA: certs.CA, Cert: certs.ClientCert, Key: certs.ClientKey}, secrets["BICOT_API_TOKEN"])
	if err != nil {
		t.Fatal(err)
	}
	noCert, _, err := secure.Transport(secure.TLSFiles{CA: certs.CA}, secrets["BICOT_API_TOKEN"])
	if err != nil {
		t.Fatal(err)
	}
	get := func(rt http.RoundTripper, url string) (int, string, error) {
		resp, err := (&http.Client{Transport: rt, Timeout: 10 * time.Second}).Get(url)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	if code, _, err := get(withCert, "https://"+apiAddr+"/v1/status"); err != nil || code != http.StatusUnauthorized {
		t.Errorf("status API without the token: %d %v, want 401", code, err)
	}
	if _, _, err := get(noCert, "https://"+apiAddr+"/v1/status"); err == nil {
		t.Error("status API answered a client without a certificate")
	}
	// The coordinator applies the learner's last step_done from the event stream, maybe a moment
	// after the learner has exited.
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, body, err := get(withBoth, "https://"+apiAddr+"/v1/status"); err == nil && strings.Contains(body, `"done": true`) {
			break
		}
	}
	var answers []string
	for _, path := range []string{"/v1/status", "/v1/runstate", "/metrics", "/healthz"} {
		code, body, err := get(withBoth, "https://"+apiAddr+path)
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET %s: %d %v", path, code, err)
		}
		answers = append(answers, "GET "+path+": "+body)
	}
	if !strings.Contains(answers[0], `"done": true`) {
		t.Errorf("status after the run: %s", lastLines(answers[0], 20))
	}
	clusterRT, _, err := secure.Transport(secure.TLSFiles{CA: certs.CA, Cert: certs.ClientCert, Key: certs.ClientKey}, secrets["BICOT_CLUSTER_TOKEN"])
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/raft/state", "/raft/leader"} {
		code, body, err := get(clusterRT, "https://"+raftHTTP+path)
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET %s: %d %v", path, code, err)
		}
		answers = append(answers, "GET "+path+": "+body)
	}
	_ = coord.cmd.Process.Signal(syscall.SIGTERM)
	wait(coord)
	for _, p := range procs[:2] {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
		p.done <- nil
	}

	if _, err := os.Stat(filepath.Join(tmp, "store", "sec1", "checkpoints", fmt.Sprintf("%012d", steps-1), "MANIFEST.json")); err != nil {
		t.Errorf("the run's last checkpoint: %v", err)
	}
	if expertCalls.Load() == 0 {
		t.Error("the remote expert was never called with its credentials")
	}
	leak := func(where, text string) {
		for name, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s holds %s", where, name)
			}
		}
	}
	for _, p := range procs {
		leak(p.name+"'s output", p.out.String())
	}
	for _, a := range answers {
		leak(strings.SplitN(a, ":", 2)[0], a)
	}
	files := 0
	err = filepath.WalkDir(tmp, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path == cfgPath || path == usersFile {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		leak(path, string(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 20 {
		t.Errorf("searched only %d files", files)
	}
	t.Logf("%d expert calls; searched %d files, %d process outputs and %d API answers for %d secrets", expertCalls.Load(), files, len(procs), len(answers), len(secrets))
}
