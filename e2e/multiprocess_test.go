package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/porttest"
	"github.com/bicot-rl/bicot/pkg/runstate"
)

// TestMultiProcessRun builds the four binaries and runs a run as separate OS processes: a NATS
// server (`coordinator nats-server`), three coordinators forming one raft cluster (`--peers`),
// two rollout workers, two reward workers and one learner (`--coordinators`: it finds the leader
// by itself) sharing a local store directory. After the first step the leading coordinator is
// killed with SIGKILL: the other two elect a leader (the failover time is logged), and every
// other process must exit 0 by itself once the run's last step is learned.
func TestMultiProcessRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds four binaries")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	pr := newProcessRun(ctx, t, tmp)
	root, bins, policyPath, expertDir := pr.root, pr.bins, pr.policy, pr.expertDir
	const steps = 3
	cfg := fmt.Sprintf(`run_id: mp1
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
wire: {ack_wait: 30s, heartbeat: 500ms}
`, filepath.Join(root, "data/prompts/train.jsonl"), steps, filepath.Join(tmp, "store"), policyPath,
		filepath.Join(root, "models/codebook.vq"), expertDir)
	cfgPath := filepath.Join(tmp, "run.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	type proc struct {
		name string
		cmd  *exec.Cmd
		out  *bytes.Buffer
		done chan error
	}
	var mu sync.Mutex
	var procs []*proc
	startProc := func(name, bin string, args ...string) *proc {
		var out bytes.Buffer
		cmd := exec.Command(bin, args...)
		cmd.Dir = tmp
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		p := &proc{name: name, cmd: cmd, out: &out, done: make(chan error, 1)}
		go func() { p.done <- cmd.Wait() }()
		mu.Lock()
		procs = append(procs, p)
		mu.Unlock()
		return p
	}
	defer func() {
		// Anything still running at the end failed to exit by itself: stop it and show its log.
		for _, p := range procs {
			select {
			case <-p.done:
			default:
				_ = p.cmd.Process.Kill()
				<-p.done
			}
			if t.Failed() {
				t.Logf("--- %s output:\n%s", p.name, lastLines(p.out.String(), 30))
			}
		}
	}()

	urlFile := filepath.Join(tmp, "nats.url")
	natsProc := startProc("nats-server", bins["coordinator"], "nats-server", "--port", "0", "--store-dir", filepath.Join(tmp, "nats"), "--url-file", urlFile)
	url := readURLFile(ctx, t, urlFile)
	common := []string{"run", "--config", cfgPath, "--nats", url, "--log-format", "json"}
	free := func() string { return porttest.Addr(t) }
	var peers, raftHTTP []string
	for i := range 3 {
		h := free()
		raftHTTP = append(raftHTTP, h)
		peers = append(peers, fmt.Sprintf("c%d=%s=%s", i, free(), h))
	}
	var coords []*proc
	for i := range 3 {
		coords = append(coords, startProc(fmt.Sprintf("coordinator-c%d", i), bins["coordinator"], append(common, "--http", free(),
			"--node-id", fmt.Sprintf("c%d", i), "--peers", strings.Join(peers, ","), "--raft-dir", filepath.Join(tmp, fmt.Sprintf("raft-c%d", i)))...))
	}
	// Each role's process serves its own /metrics: what a Prometheus scrapes, found below.
	metricsAt := map[string]string{"learner": free(), "rollout-1": free(), "reward-1": free()}
	roles := []*proc{
		startProc("learner", bins["learner"], append(common, "--coordinators", strings.Join(raftHTTP, ","), "--metrics-addr", metricsAt["learner"])...),
		startProc("rollout-1", bins["rollout-worker"], append(common, "--id", "rollout-1", "--metrics-addr", metricsAt["rollout-1"])...),
		startProc("rollout-2", bins["rollout-worker"], append(common, "--id", "rollout-2")...),
		startProc("reward-1", bins["reward-worker"], append(common, "--id", "reward-1", "--metrics-addr", metricsAt["reward-1"])...),
		startProc("reward-2", bins["reward-worker"], append(common, "--id", "reward-2")...),
	}

	// Kill the leader once step 0 is learned.
	for {
		if _, err := os.Stat(filepath.Join(tmp, "store", "mp1", "weights", "000000000001.bin")); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("step 0 not learned in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for name, want := range map[string][]string{
		"learner":   {`bicot_learner_steps_total{worker="learner"}`, `bicot_learner_seconds_total{phase="wait"`, "go_goroutines"},
		"rollout-1": {`bicot_rollout_samples_total{worker="rollout-1"}`, `bicot_rollout_busy_seconds_total`, "process_cpu_seconds_total"},
		"reward-1":  {`bicot_reward_samples_total{worker="reward-1"}`, `bicot_reward_per_expert_bucket`, `bicot_reward_expert_batch_seconds_bucket`},
	} {
		var body string
		for missing := want; len(missing) > 0; {
			if ctx.Err() != nil {
				t.Fatalf("%s's /metrics lacks %v:\n%s", name, missing, lastLines(body, 20))
			}
			resp, err := http.Get("http://" + metricsAt[name] + "/metrics")
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				body = string(b)
			}
			missing = missing[:0:0]
			for _, w := range want {
				if !strings.Contains(body, w) {
					missing = append(missing, w)
				}
			}
			if len(missing) > 0 {
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	rs, err := runstate.NewClient(raftHTTP, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	li, err := rs.LeaderInfo(ctx)
	if err != nil || li.LeaderID == "" {
		t.Fatalf("leader: %+v %v", li, err)
	}
	var killed int
	fmt.Sscanf(li.LeaderID, "c%d", &killed)
	if err := coords[killed].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	<-coords[killed].done
	coords[killed].done <- nil
	var failover time.Duration
	for failover == 0 {
		for i, h := range raftHTTP {
			if i == killed {
				continue
			}
			one, err := runstate.NewClient([]string{h}, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			lctx, lcancel := context.WithTimeout(ctx, 200*time.Millisecond)
			info, err := one.LeaderInfo(lctx)
			lcancel()
			one.Close()
			if err == nil && info.IsLeader {
				failover = time.Since(killedAt)
			}
		}
		if time.Since(killedAt) > 10*time.Second {
			t.Fatal("no new leader within 10 s of killing the old one")
		}
	}
	t.Logf("coordinator c%d (leader) killed with SIGKILL after step 0; new leader after %v", killed, failover.Round(time.Millisecond))
	for i, p := range coords {
		if i != killed {
			roles = append(roles, p)
		}
	}
	for _, p := range roles {
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
	_ = natsProc.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-natsProc.done; err != nil {
		t.Fatalf("nats-server exited with %v", err)
	}
	natsProc.done <- nil
	if n := len(metricsRecords(t, filepath.Join(tmp, "store"), "mp1")); n != steps {
		t.Fatalf("the run's metrics have %d lines, want %d", n, steps)
	}
	// The learner's checkpoints hold the coordinator's run state and data cursor.
	for _, part := range []string{"runstate", "cursor", "trainer", "MANIFEST.json"} {
		if _, err := os.Stat(filepath.Join(tmp, "store", "mp1", "checkpoints", "000000000001", part)); err != nil {
			t.Errorf("checkpoint part: %v", err)
		}
	}
	for _, p := range roles[1:3] {
		if !strings.Contains(p.out.String(), "policy loaded") {
			t.Errorf("%s never loaded a policy", p.name)
		}
	}

	// The finished run continues for one more step with `coordinator resume STORE/RUN --local`,
	// from the checkpoint (and run state) the cluster wrote.
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bins["coordinator"], "resume", filepath.Join(tmp, "store", "mp1"), "--local", "--steps", fmt.Sprint(steps+1),
		"--log-level", "info")
	cmd.Dir = tmp
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("coordinator resume: %v\n%s", err, lastLines(out.String(), 30))
	}
	for _, want := range []string{"resuming from checkpoint", fmt.Sprintf("step %d/%d", steps+1, steps+1)} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("coordinator resume output lacks %q:\n%s", want, lastLines(out.String(), 30))
		}
	}
	if n := len(metricsRecords(t, filepath.Join(tmp, "store"), "mp1")); n != steps+1 {
		t.Errorf("the run's metrics after resuming: %d lines, want %d", n, steps+1)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
