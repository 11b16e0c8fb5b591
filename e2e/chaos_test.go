package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/porttest"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/runstate"
	"github.com/bicot-rl/bicot/pkg/store/s3/s3test"
)

// chaosDurationEnv selects the full chaos run and its length (scripts/chaos.sh sets it); without
// it `go test ./e2e -run Chaos` runs the short variant that is part of the test suite.
const chaosDurationEnv = "BICOT_CHAOS_DURATION"

// chaosReportEnv names a file the report's JSON is also written to (scripts/chaos.sh).
const chaosReportEnv = "BICOT_CHAOS_REPORT"

// chaosLogsEnv names a directory for the processes' logs, which then outlive the test.
const chaosLogsEnv = "BICOT_CHAOS_LOGS"

// chaosOpenSteps is the full variant's run length: more steps than it can learn in its window
// (about 70 a minute on 2 cores), so that faults go on for the whole window, after which the run
// is stopped.
const chaosOpenSteps = 1_000_000

// chaosVariant is the shape and intensity of one chaos run.
type chaosVariant struct {
	Name            string           `json:"name"`
	Window          time.Duration    `json:"-"` // full: rounds of faults are started until then
	WindowText      string           `json:"window,omitempty"`
	Steps           int              `json:"steps"`
	PromptsPerStep  int              `json:"prompts_per_step"`
	GroupSize       int              `json:"group_size"`
	CheckpointEvery int              `json:"checkpoint_every"`
	Rollouts        int              `json:"rollout_workers"`
	Rewards         int              `json:"reward_workers"`
	KillEvery       [2]time.Duration `json:"-"` // a worker is killed after a pause drawn from this range
	NATSOutage      time.Duration    `json:"-"`
	S3Outage        time.Duration    `json:"-"`
	// StallLimit: the run fails when no step is learned for this long.
	StallLimit time.Duration `json:"-"`
	Deadline   time.Duration `json:"-"`
	// StopAfterWindow: the run does not end by itself; after the window and a few steps of
	// recovery every process is stopped with SIGTERM, and the steps learned by then are checked.
	StopAfterWindow bool `json:"stopped_after_window"`
}

func chaosVariantFromEnv(t *testing.T) chaosVariant {
	v := chaosVariant{Name: "short", Steps: 36, PromptsPerStep: 2, GroupSize: 4, CheckpointEvery: 3, Rollouts: 2, Rewards: 2,
		KillEvery: [2]time.Duration{3 * time.Second, 6 * time.Second}, NATSOutage: 5 * time.Second, S3Outage: 8 * time.Second,
		StallLimit: 2 * time.Minute, Deadline: 6 * time.Minute}
	raw := os.Getenv(chaosDurationEnv)
	if raw == "" {
		return v
	}
	d, err := time.ParseDuration(raw)
	if err != nil || d < time.Minute {
		t.Fatalf("%s=%q: want a duration of at least 1m", chaosDurationEnv, raw)
	}
	v.Name, v.Window, v.WindowText = "full", d, d.String()
	v.Steps, v.StopAfterWindow = chaosOpenSteps, true
	v.Rollouts, v.Rewards = 3, 2
	v.KillEvery = [2]time.Duration{3 * time.Second, 8 * time.Second}
	v.S3Outage = 30 * time.Second
	v.StallLimit = 3 * time.Minute
	v.Deadline = 2*d + 10*time.Minute
	return v
}

// TestChaos runs a run as separate OS processes - a NATS server with JetStream (`coordinator
// nats-server`), three coordinators (raft), a learner checkpointing to a real S3 server
// (versitygw), rollout and reward workers - and breaks it while it learns:
//
//   - rollout and reward workers are killed with SIGKILL every few seconds and new ones started;
//   - the learner is killed with SIGKILL in the middle of a checkpoint upload (an S3 proxy holds
//     its commit) and, in the full variant, also mid-step past its checkpoint, and started again:
//     it resumes from its newest checkpoint in S3 and the coordinators rewind the run to it;
//   - the raft leader is killed with SIGKILL and restarted on its raft directory;
//   - the S3 server is stopped (8 s short, 30 s full) and the NATS server killed for 5 s, each
//     then restarted on the same port and data;
//   - hostile messages go to every subject of the run (hostileKinds: garbage, out-of-range values,
//     wrong token counts, forged events and announcements the code must refuse).
//
// It then checks, from the learner's durable record (metrics.jsonl in S3, which names each step's
// groups), that every step learned exactly its P complete groups at the cursor positions the
// coordinators dispatched - no group lost, none learned twice - that no step waited longer than
// the stall limit, that every process not killed exited 0 and that every hostile message came to
// its documented end. The report (kills and restarts per role, outages, steps, groups, redeliveries,
// dead letters with reasons, hostile messages) is logged and written as JSON.
//
// Processes started while the NATS server is down wait for it (wire.connect_wait); any process
// that ends by itself before the run's end is a failure.
//
// `go test ./e2e -run Chaos` runs the short variant: 36 steps, one fault of each kind, and the
// run's own end (the learner exits 0 after the last step, the workers and coordinators follow),
// about a minute and a half on 2 cores. scripts/chaos.sh --duration 10m runs the full one
// (BICOT_CHAOS_DURATION): rounds of all the faults for that long on a run too long to finish,
// then a few steps without faults, then every process stopped with SIGTERM (each must exit 0),
// and every step learned by then checked the same way.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("builds four binaries and runs a run under faults")
	}
	v := chaosVariantFromEnv(t)
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), v.Deadline)
	defer cancel()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	s3srv := s3test.Start(t)
	pr := newProcessRun(ctx, t, tmp)
	bins := pr.bins
	cfgPath := chaosConfig(t, pr, tmp, v, s3srv.Bucket)

	x, err := newChaosRun(ctx, t, v, root, tmp, bins, cfgPath, s3srv)
	if err != nil {
		t.Fatal(err)
	}
	defer x.close()
	x.rep.SetupSeconds = time.Since(began).Seconds()
	if err := x.startCluster(); err != nil {
		t.Fatal(err)
	}
	x.runChaos()
	x.finish()
	x.rep.WallSeconds = time.Since(began).Seconds()
	x.writeReport()
	for _, f := range x.rep.Failures {
		t.Error(f)
	}
}

// chaosConfig writes the run config: a tiny policy, briefly trained experts, the S3 store (its
// endpoint and credentials come from each process's environment), wire timings short enough that
// the work a killed worker held comes back within seconds, and staleness 0, under which step s
// learns the cursor positions right after step s-1's (what checkMetrics counts against).
func chaosConfig(t *testing.T, pr processRun, tmp string, v chaosVariant, bucket string) string {
	root, policyPath, expertDir := pr.root, pr.policy, pr.expertDir
	cfg := fmt.Sprintf(`run_id: %s
seed: 11
prompts: %s
prompts_per_step: %d
group_size: %d
prompts_per_task: 1
steps: %d
staleness: 0
sampling: {temperature: 1, cfg_weight: 3, max_plan_tokens: 6}
checkpoint_every: %d
retention: {keep_last: 3, keep_weights: 4}
store: s3://%s/chaos
policy_init: %s
codebook: %s
experts: %s
redispatch_after: 60s
wire: {ack_wait: 6s, heartbeat: 500ms, retry_delay: 500ms, poll_wait: 2s, dispatch_tick: 100ms}
`, chaosRunID, filepath.Join(root, "data/prompts/train.jsonl"), v.PromptsPerStep, v.GroupSize, v.Steps, v.CheckpointEvery,
		bucket, policyPath, filepath.Join(root, "models/codebook.vq"), expertDir)
	p := filepath.Join(tmp, "run.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const chaosRunID = "chaos"

// chaosSlot is a place in the cluster that one process at a time fills: the NATS server, a
// coordinator, the learner, a worker. The supervisor restarts a slot whose process ended by
// itself (recording the crash) unless a fault holds it.
type chaosSlot struct {
	role string
	name func() string // the next process's name (workers get a new id each time)
	bin  string
	args func(name string) []string
	env  []string

	proc *chaosProc
	held bool // a fault owns the slot: it kills and restarts the process itself
	// failures counts the slot's processes that ended by themselves in a row; the next start
	// waits until retryAt.
	failures int
	retryAt  time.Time
}

// chaosRun is one chaos run: the processes, the faults and what they did.
type chaosRun struct {
	t     *testing.T
	ctx   context.Context
	v     chaosVariant
	root  string
	tmp   string
	bins  map[string]string
	cfg   string
	s3    *s3test.Server
	proxy *s3Proxy
	procs *chaosProcs
	rs    *runstate.Client
	start time.Time

	natsPort int
	natsURL  string
	natsDir  string
	raftHTTP []string
	peers    string

	mu        sync.Mutex
	slots     []*chaosSlot
	nats      *chaosSlot
	learner   *chaosSlot
	coords    []*chaosSlot
	workerSeq map[string]int
	state     runstate.State // the newest run state seen
	progress  time.Time      // when the run state's step last moved forward
	stopping  bool           // the run is being stopped: nothing is restarted
	hostiles  *hostilePublisher
	// redeliveries sums the queues' redeliveries across NATS restarts.
	redeliveries redeliveryCounter

	rep *chaosReport
}

func newChaosRun(ctx context.Context, t *testing.T, v chaosVariant, root, tmp string, bins map[string]string, cfg string, s3srv *s3test.Server) (*chaosRun, error) {
	logs := filepath.Join(tmp, "logs")
	if d := os.Getenv(chaosLogsEnv); d != "" {
		logs = d
	}
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return nil, err
	}
	proxy, err := newS3Proxy(s3srv.Endpoint)
	if err != nil {
		return nil, err
	}
	x := &chaosRun{t: t, ctx: ctx, v: v, root: root, tmp: tmp, bins: bins, cfg: cfg, s3: s3srv, proxy: proxy,
		procs: newChaosProcs(logs), workerSeq: map[string]int{}, rep: newChaosReport(v)}
	return x, nil
}

// close kills every process still running, printing the output of those that failed, and
// releases the clients.
func (x *chaosRun) close() {
	x.procs.shutdown()
	if x.t.Failed() {
		// The processes that failed, and the last learner, whose log tells where the run stood.
		for _, p := range x.procs.procs() {
			if (p.crashed() && !strings.Contains(p.tail(3), "no servers available")) || (x.learner != nil && p == x.learner.proc) {
				x.t.Logf("--- %s (%v) last lines:\n%s", p.name, p.err, p.tail(25))
			}
		}
	}
	if x.rs != nil {
		x.rs.Close()
	}
	x.proxy.close()
}

// s3Env is the S3 endpoint and credentials a process reads from its environment (the run
// config's store URL names only the bucket and prefix).
func (x *chaosRun) s3Env(endpoint string) []string {
	return []string{"BICOT_S3_ENDPOINT=" + endpoint, "BICOT_S3_ACCESS_KEY=" + x.s3.AccessKey, "BICOT_S3_SECRET_KEY=" + x.s3.SecretKey}
}

func (x *chaosRun) common() []string {
	return []string{"run", "--config", x.cfg, "--nats", x.natsURL, "--log-format", "json"}
}

// startCluster starts the NATS server, the coordinators, the learner and the workers, and the
// goroutines that watch and supervise them.
func (x *chaosRun) startCluster() error {
	port, err := porttest.Port()
	if err != nil {
		return err
	}
	x.natsPort, x.natsDir = port, filepath.Join(x.tmp, "nats")
	x.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", port)
	x.nats = &chaosSlot{role: "nats", name: chaosName("nats-server"), bin: x.bins["coordinator"], args: func(string) []string {
		return []string{"nats-server", "--port", fmt.Sprint(x.natsPort), "--store-dir", x.natsDir, "--url-file", x.natsURLFile()}
	}}
	var peers []string
	for i := range 3 {
		h := porttest.Addr(x.t)
		x.raftHTTP = append(x.raftHTTP, h)
		peers = append(peers, fmt.Sprintf("c%d=%s=%s", i, porttest.Addr(x.t), h))
	}
	x.peers = strings.Join(peers, ",")
	for i := range 3 {
		id := fmt.Sprintf("c%d", i)
		httpAddr := porttest.Addr(x.t)
		x.coords = append(x.coords, &chaosSlot{role: "coordinator", name: chaosName("coordinator-" + id), bin: x.bins["coordinator"],
			args: func(string) []string {
				return append(x.common(), "--http", httpAddr, "--node-id", id, "--peers", x.peers,
					"--raft-dir", filepath.Join(x.tmp, "raft-"+id))
			}})
	}
	// Only the learner goes through the proxy: the fault that needs it is the learner's.
	x.learner = &chaosSlot{role: "learner", name: chaosName("learner"), bin: x.bins["learner"], env: x.s3Env(x.proxy.addr),
		args: func(string) []string { return append(x.common(), "--coordinators", strings.Join(x.raftHTTP, ",")) }}
	x.slots = append(append([]*chaosSlot{x.nats}, x.coords...), x.learner)
	for range x.v.Rollouts {
		x.slots = append(x.slots, x.workerSlot("rollout", "rollout-worker"))
	}
	for range x.v.Rewards {
		x.slots = append(x.slots, x.workerSlot("reward", "reward-worker"))
	}
	if err := x.startNATS(); err != nil {
		return err
	}
	for _, s := range x.slots[1:] {
		if err := x.startSlot(s); err != nil {
			return err
		}
	}
	x.rs, err = runstate.NewClient(x.raftHTTP, zerolog.Nop())
	if err != nil {
		return err
	}
	x.start = time.Now()
	x.progress = x.start
	return nil
}

func chaosName(n string) func() string { return func() string { return n } }

func (x *chaosRun) workerSlot(role, bin string) *chaosSlot {
	return &chaosSlot{role: role, bin: x.bins[bin], env: x.s3Env(x.s3.Endpoint),
		name: func() string {
			x.workerSeq[role]++
			return fmt.Sprintf("%s-%d", role, x.workerSeq[role])
		},
		args: func(name string) []string { return append(x.common(), "--id", name) }}
}

func (x *chaosRun) natsURLFile() string { return filepath.Join(x.tmp, "nats.url") }

// startSlot starts the slot's next process.
func (x *chaosRun) startSlot(s *chaosSlot) error {
	x.mu.Lock()
	name := s.name()
	x.mu.Unlock()
	p, err := x.procs.start(s.role, name, s.bin, s.env, s.args(name)...)
	if err != nil {
		return err
	}
	x.mu.Lock()
	s.proc = p
	x.mu.Unlock()
	x.rep.started(s.role)
	return nil
}

// startNATS starts the NATS server on its port and store directory and waits until it listens.
func (x *chaosRun) startNATS() error {
	_ = os.Remove(x.natsURLFile())
	if err := x.startSlot(x.nats); err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(x.natsURLFile()); err == nil {
			return nil
		}
		if x.nats.proc.exited() {
			return fmt.Errorf("nats-server exited at start (%v): %s", x.nats.proc.err, x.nats.proc.tail(10))
		}
		if time.Now().After(deadline) || x.ctx.Err() != nil {
			return errors.New("nats-server did not listen within 60 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// since is the time since the cluster started, for the report.
func (x *chaosRun) since() float64 { return time.Since(x.start).Seconds() }

// runState returns the newest run state seen.
func (x *chaosRun) runState() runstate.State {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.state
}

// watch polls the run state, notes progress and fails the run when no step is learned for
// the stall limit.
func (x *chaosRun) watch(ctx context.Context, stop context.CancelCauseFunc) {
	last := int64(-1)
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := x.rs.State(pctx)
		cancel()
		now := time.Now()
		x.mu.Lock()
		if err == nil && st.RunID != "" {
			x.state = st
			if st.Step > last {
				if last >= 0 {
					x.progress = now
				}
			}
			last = st.Step
		}
		stall := now.Sub(x.progress)
		done := x.state.RunID != "" && x.state.Step >= int64(x.v.Steps)
		if !done {
			x.rep.noteStall(stall)
		}
		x.mu.Unlock()
		if !done && stall > x.v.StallLimit {
			stop(fmt.Errorf("stall: no step learned for %v (run state at step %d)", stall.Round(time.Second), last))
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// supervise restarts processes that ended by themselves (recording crashes and early exits)
// until ctx ends, as an orchestrator restarts failed pods: with a back-off that doubles while a
// slot keeps failing.
func (x *chaosRun) supervise(ctx context.Context) {
	for ctx.Err() == nil {
		x.mu.Lock()
		var ended []*chaosSlot
		for _, s := range x.slots {
			if !x.stopping && !s.held && s.proc != nil && s.proc.exited() && !s.proc.killed.Load() && time.Now().After(s.retryAt) {
				ended = append(ended, s)
			}
		}
		x.mu.Unlock()
		for _, s := range ended {
			p := s.proc
			if p.err == nil {
				// A clean exit is the run's end unless the run state (polled, so a moment
				// behind) still says otherwise a few seconds later.
				if x.runEnded() || time.Since(p.ended) < 5*time.Second {
					continue
				}
			}
			x.rep.exitedByItself(p, p.ended.Sub(x.start).Seconds())
			x.mu.Lock()
			if p.ended.Sub(p.started) > 20*time.Second {
				s.failures = 0
			}
			s.failures++
			s.retryAt = time.Now().Add(min(250*time.Millisecond<<s.failures, 8*time.Second))
			x.mu.Unlock()
			if s == x.nats {
				if err := x.startNATS(); err != nil {
					x.rep.fail("restarting the NATS server: %v", err)
				}
				continue
			}
			if err := x.startSlot(s); err != nil && ctx.Err() == nil {
				x.rep.fail("restarting %s: %v", s.role, err)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// runEnded says whether the run is over: the run state is at its last step, or the learner
// exited 0 (it does after the last step).
func (x *chaosRun) runEnded() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.state.RunID != "" && x.state.Step >= int64(x.v.Steps) {
		return true
	}
	p := x.learner.proc
	return p != nil && p.exited() && !p.killed.Load() && p.err == nil
}

// killWorkers kills a random rollout or reward worker every few seconds; the supervisor starts
// a new one in its place.
func (x *chaosRun) killWorkers(ctx context.Context) {
	for {
		gap := x.v.KillEvery[0] + time.Duration(rand.Int64N(int64(x.v.KillEvery[1]-x.v.KillEvery[0])))
		select {
		case <-ctx.Done():
			return
		case <-time.After(gap):
		}
		x.mu.Lock()
		var live []*chaosSlot
		for _, s := range x.slots {
			if (s.role == "rollout" || s.role == "reward") && s.proc != nil && !s.proc.exited() {
				live = append(live, s)
			}
		}
		x.mu.Unlock()
		if len(live) == 0 {
			continue
		}
		s := live[rand.IntN(len(live))]
		x.hold(s, true)
		s.proc.kill()
		x.rep.killed(s.role)
		// A new worker takes its place at once, as an autoscaler would start one.
		if err := x.startSlot(s); err != nil && ctx.Err() == nil {
			x.rep.fail("starting a %s worker: %v", s.role, err)
		}
		x.hold(s, false)
	}
}

// hold gives a fault the slot: the supervisor leaves it alone until release.
func (x *chaosRun) hold(s *chaosSlot, held bool) {
	x.mu.Lock()
	s.held = held
	x.mu.Unlock()
}

// waitFor polls cond until it holds, the run stalls or fails, or the deadline passes.
func (x *chaosRun) waitFor(ctx context.Context, what string, limit time.Duration, cond func(runstate.State) bool) error {
	deadline := time.Now().Add(limit)
	for {
		if cond(x.runState()) {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for %s: %w", what, context.Cause(ctx))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: not within %v (run state at step %d)", what, limit, x.runState().Step)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitProgress waits until the run has learned n more steps than it had when called (a step
// learned again after a rewind counts too: the state's step moves forward).
func (x *chaosRun) waitProgress(ctx context.Context, n int) error {
	x.mu.Lock()
	since := x.progress
	x.mu.Unlock()
	seen := 0
	for seen < n {
		err := x.waitFor(ctx, "progress", x.v.StallLimit, func(runstate.State) bool {
			x.mu.Lock()
			defer x.mu.Unlock()
			return x.progress.After(since) || x.state.Step >= int64(x.v.Steps)
		})
		if err != nil {
			return err
		}
		if x.runState().Step >= int64(x.v.Steps) {
			return nil
		}
		x.mu.Lock()
		since = x.progress
		x.mu.Unlock()
		seen++
	}
	return nil
}

// runChaos starts the background faults (worker kills, hostile messages) and the schedule of
// the others, and returns when the schedule is done.
func (x *chaosRun) runChaos() {
	runCtx, stop := context.WithCancelCause(x.ctx)
	defer stop(nil)
	var bg sync.WaitGroup
	bgCtx, bgStop := context.WithCancel(runCtx)
	bg.Add(3)
	go func() {
		defer bg.Done()
		x.watch(bgCtx, stop)
	}()
	go func() {
		defer bg.Done()
		x.countRedeliveries(bgCtx)
	}()
	go func() {
		defer bg.Done()
		x.supervise(bgCtx)
	}()
	defer func() {
		bgStop()
		bg.Wait()
	}()
	if err := x.waitFor(runCtx, "the first step", x.v.StallLimit, func(st runstate.State) bool { return st.Step >= 1 }); err != nil {
		x.rep.fail("%v", err)
		return
	}
	chaosCtx, chaosStop := context.WithCancel(runCtx)
	var faults sync.WaitGroup
	nc, js, err := bus.Connect(x.ctx, x.natsURL, bus.ConnectOptions{Name: "chaos-hostile"})
	if err != nil {
		x.rep.fail("hostile publisher: %v", err)
		chaosStop()
		return
	}
	defer nc.Close()
	topo, _ := bus.NewTopology(chaosRunID)
	ps, err := prompts.ReadFile(filepath.Join(x.root, "data/prompts/train.jsonl"))
	if err != nil || len(ps) == 0 {
		x.rep.fail("prompts: %v", err)
		chaosStop()
		return
	}
	x.hostiles = &hostilePublisher{js: js, topo: topo, start: x.start, env: func() hostileEnv {
		return hostileEnv{run: chaosRunID, steps: x.v.Steps, g: x.v.GroupSize, prompt: ps[0], state: x.runState()}
	}}
	faults.Add(2)
	go func() {
		defer faults.Done()
		x.killWorkers(chaosCtx)
	}()
	go func() {
		defer faults.Done()
		x.hostiles.run(chaosCtx, 1500*time.Millisecond, 3*time.Second)
	}()
	x.rep.ChaosStart = x.since()
	x.schedule(runCtx)
	chaosStop()
	faults.Wait()
	x.rep.ChaosSeconds = x.since() - x.rep.ChaosStart
	if err := context.Cause(runCtx); err != nil && x.ctx.Err() == nil && !errors.Is(err, context.Canceled) {
		x.rep.fail("%v", err)
		return
	}
	if x.v.StopAfterWindow {
		x.stopRun(runCtx)
		return
	}
	// The run goes on without faults to its end; the watchdog and supervisor still run.
	x.waitEnd(runCtx)
}

// stopRun ends an open-ended run after its window: once it has learned a few more steps without
// faults, the learner is stopped with SIGTERM, the run state read, then every other process
// stopped the same way; each must exit 0.
func (x *chaosRun) stopRun(ctx context.Context) {
	if err := x.waitProgress(ctx, 3); err != nil {
		x.rep.fail("after the last fault: %v", err)
		return
	}
	x.mu.Lock()
	x.stopping = true
	x.mu.Unlock()
	stop := func(p *chaosProc) {
		if p == nil || p.exited() {
			return
		}
		p.stopped.Store(true)
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			if p.err != nil {
				x.rep.fail("%s exited with %v after SIGTERM", p.name, p.err)
			}
		case <-time.After(60 * time.Second):
			x.rep.fail("%s did not stop within 60 s of SIGTERM", p.name)
		}
		x.rep.stopped(p.role)
	}
	stop(x.learner.proc)
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	st, err := x.rs.State(sctx)
	cancel()
	if err != nil {
		x.rep.fail("the run state after stopping the learner: %v", err)
	} else {
		x.mu.Lock()
		x.state = st
		x.mu.Unlock()
	}
	for _, p := range x.procs.procs() {
		if p.role != "nats" {
			stop(p)
		}
	}
}

// schedule runs the faults other than worker kills and hostile messages, one after another,
// each once the run has learned a step since the previous one recovered: the short variant one
// of each kind, the full variant rounds of them until its window has passed.
func (x *chaosRun) schedule(ctx context.Context) {
	type fault struct {
		name string
		run  func(context.Context) error
	}
	ckpt := fault{"learner killed during a checkpoint upload", x.killLearnerInCheckpoint}
	mid := fault{"learner killed mid-step", x.killLearnerMidStep}
	natsF := fault{"NATS server killed and restarted", x.natsOutage}
	leader := fault{"raft leader killed and restarted", x.killLeader}
	s3F := fault{"S3 server stopped and restarted", x.s3Outage}
	round := []fault{ckpt, natsF, leader, s3F}
	if x.v.Name == "full" {
		round = []fault{mid, natsF, leader, s3F, ckpt}
	}
	// Faults stop a few steps before the end, so that the last fault's recovery is seen.
	// A run that ends by itself must still be learning when the last fault comes.
	near := func() bool { return x.runState().Step >= int64(x.v.Steps)-3 }
	for r := 0; ; r++ {
		for _, f := range round {
			if ctx.Err() != nil {
				return
			}
			if r > 0 && (time.Since(x.start) > x.v.Window || near()) {
				return
			}
			if r == 0 && near() {
				x.rep.fail("the run reached step %d before the fault %q: too few steps for the schedule", x.runState().Step, f.name)
				return
			}
			at, step := x.since(), x.runState().Step
			if err := f.run(ctx); err != nil {
				x.rep.fail("%s: %v", f.name, err)
				return
			}
			if err := x.waitProgress(ctx, 1); err != nil {
				x.rep.fail("after %s: %v", f.name, err)
				return
			}
			x.rep.Faults = append(x.rep.Faults, chaosFault{What: f.name, AtSeconds: at, RunStep: step, RecoveredAfter: x.since() - at})
			pause := 500*time.Millisecond + time.Duration(rand.Int64N(int64(time.Second)))
			if x.v.Name == "full" {
				pause = 5*time.Second + time.Duration(rand.Int64N(int64(15*time.Second)))
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
		}
		if x.v.Name != "full" {
			return
		}
	}
}

// restartLearner starts the learner again after a kill and waits for it to report where it
// resumed.
func (x *chaosRun) restartLearner(kind string, runStep int64, heldPath string) error {
	delay := 300*time.Millisecond + time.Duration(rand.Int64N(int64(1500*time.Millisecond)))
	time.Sleep(delay)
	if err := x.startSlot(x.learner); err != nil {
		return err
	}
	x.hold(x.learner, false)
	x.rep.LearnerKills = append(x.rep.LearnerKills, chaosLearnerKill{Kind: kind, AtSeconds: x.since(), RunStep: runStep,
		HeldUpload: heldPath, proc: x.learner.proc})
	return nil
}

// killLearnerInCheckpoint arms the S3 proxy to hold the learner's next checkpoint commit and
// kills the learner while it waits for it.
func (x *chaosRun) killLearnerInCheckpoint(ctx context.Context) error {
	// After a first checkpoint, so that the new learner has one to resume from.
	if err := x.waitFor(ctx, "a first checkpoint", x.v.StallLimit, func(st runstate.State) bool {
		_, ok := st.LatestCheckpoint()
		return ok
	}); err != nil {
		return err
	}
	held := x.proxy.arm()
	defer x.proxy.disarm()
	var path string
	select {
	case path = <-held:
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-time.After(x.v.StallLimit):
		return errors.New("no checkpoint upload within the stall limit")
	}
	x.hold(x.learner, true)
	step := x.runState().Step
	x.learner.proc.kill()
	x.rep.killed("learner")
	x.proxy.disarm()
	return x.restartLearner("during checkpoint upload", step, path)
}

// killLearnerMidStep kills the learner at a random moment once it is at least one step past its
// newest checkpoint, so that the run state is ahead of where the new learner resumes.
func (x *chaosRun) killLearnerMidStep(ctx context.Context) error {
	err := x.waitFor(ctx, "a step past a checkpoint", x.v.StallLimit, func(st runstate.State) bool {
		cp, ok := st.LatestCheckpoint()
		return ok && st.Step >= cp.Step+2
	})
	if err != nil {
		return err
	}
	time.Sleep(time.Duration(rand.Int64N(int64(time.Second))))
	x.hold(x.learner, true)
	step := x.runState().Step
	x.learner.proc.kill()
	x.rep.killed("learner")
	return x.restartLearner("mid-step", step, "")
}

// natsOutage kills the NATS server and starts it again after the outage on the same port and
// store directory.
func (x *chaosRun) natsOutage(ctx context.Context) error {
	x.hold(x.nats, true)
	defer x.hold(x.nats, false)
	x.nats.proc.kill()
	x.rep.killed("nats")
	at := x.since()
	chaosSleep(ctx, x.v.NATSOutage)
	err := x.startNATS()
	x.rep.Outages = append(x.rep.Outages, chaosOutage{What: "nats", AtSeconds: at, Seconds: x.since() - at})
	return err
}

// s3Outage stops the S3 server and restarts it on the same address and data.
func (x *chaosRun) s3Outage(ctx context.Context) error {
	x.s3.Stop()
	x.rep.killed("s3")
	at := x.since()
	chaosSleep(ctx, x.v.S3Outage)
	err := x.s3.Restart()
	x.rep.started("s3")
	x.rep.Outages = append(x.rep.Outages, chaosOutage{What: "s3", AtSeconds: at, Seconds: x.since() - at})
	return err
}

// killLeader kills the raft leader, measures the election, and restarts the node on its raft
// directory a moment later.
func (x *chaosRun) killLeader(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	li, err := x.rs.LeaderInfo(lctx)
	cancel()
	if err != nil || li.LeaderID == "" {
		return fmt.Errorf("finding the leader: %+v %v", li, err)
	}
	var s *chaosSlot
	var idx int
	for i, c := range x.coords {
		if c.name() == "coordinator-"+li.LeaderID {
			s, idx = c, i
		}
	}
	if s == nil {
		return fmt.Errorf("leader %q is none of the coordinators", li.LeaderID)
	}
	x.hold(s, true)
	defer x.hold(s, false)
	s.proc.kill()
	x.rep.killed("coordinator")
	killed := time.Now()
	var failover time.Duration
	for failover == 0 {
		for i, h := range x.raftHTTP {
			if i == idx {
				continue
			}
			one, err := runstate.NewClient([]string{h}, zerolog.Nop())
			if err != nil {
				return err
			}
			octx, ocancel := context.WithTimeout(ctx, 300*time.Millisecond)
			info, err := one.LeaderInfo(octx)
			ocancel()
			one.Close()
			if err == nil && info.IsLeader {
				failover = time.Since(killed)
			}
		}
		if time.Since(killed) > 30*time.Second {
			return errors.New("no new leader within 30 s")
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
	}
	x.rep.LeaderKills = append(x.rep.LeaderKills, chaosLeaderKill{Node: li.LeaderID, AtSeconds: x.since(), FailoverSeconds: failover.Seconds()})
	chaosSleep(ctx, 2*time.Second)
	return x.startSlot(s)
}

func chaosSleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// waitEnd waits for the run to end by itself: the learner exits 0 after the last step, then the
// coordinators and workers see the end and exit 0 too.
func (x *chaosRun) waitEnd(ctx context.Context) {
	if err := x.waitFor(ctx, "the run's last step", x.v.Deadline, func(st runstate.State) bool {
		return st.Step >= int64(x.v.Steps)
	}); err != nil {
		x.rep.fail("%v", err)
		return
	}
	// The learner exits after the last step; the supervisor keeps running until then.
	if err := x.waitFor(ctx, "the learner's exit", 90*time.Second, func(runstate.State) bool {
		p := x.learner.proc
		return p != nil && p.exited()
	}); err != nil {
		x.rep.fail("%v", err)
	}
}

// waitExits waits, with nothing restarting them any more, for every process but the NATS server
// to exit by itself now that the run is over.
func (x *chaosRun) waitExits() {
	deadline := time.After(90 * time.Second)
	for _, p := range x.procs.procs() {
		if p.role == "nats" {
			continue
		}
		select {
		case <-p.done:
		case <-deadline:
			x.rep.fail("%s did not exit within 90 s of the run's end", p.name)
			return
		}
	}
}

// finish collects what the run left (dead letters, redeliveries, queued messages, metrics), stops
// the NATS server and checks the run.
func (x *chaosRun) finish() {
	x.waitExits()
	x.collectBus()
	if p := x.nats.proc; p != nil && !p.exited() {
		x.hold(x.nats, true)
		p.stopped.Store(true)
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			if p.err != nil {
				x.rep.fail("nats-server exited with %v", p.err)
			}
		case <-time.After(30 * time.Second):
			x.rep.fail("nats-server did not stop within 30 s of SIGTERM")
		}
		x.rep.stopped("nats")
	}
	x.collectProcs()
	x.checkMetrics()
}
