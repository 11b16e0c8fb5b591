package runstate

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/bicot-rl/bicot/pkg/porttest"
	"github.com/bicot-rl/bicot/pkg/secure"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// An apply raft accepted just before it shut down is never answered (runstate.Node.await).
		goleak.IgnoreAnyFunction("github.com/bicot-rl/bicot/pkg/runstate.(*Node).await.func1"),
	)
}

func testLog(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel).With().Timestamp().Logger()
}

func openNode(t *testing.T, id, raftAddr, dir string, bootstrap bool) *Node {
	t.Helper()
	n, err := Open(NodeConfig{ID: id, RaftAddr: raftAddr, HTTPAddr: "127.0.0.1:0", DataDir: dir, Bootstrap: bootstrap}, testLog(t))
	if err != nil {
		t.Fatalf("open %s: %v", id, err)
	}
	return n
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustApply(t *testing.T, ap interface {
	Apply(context.Context, Command) (Result, error)
}, cmd Command) Result {
	t.Helper()
	r, err := ap.Apply(ctxT(t, 20*time.Second), cmd)
	if err != nil {
		t.Fatalf("apply %s: %v", cmd.Type, err)
	}
	return r
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func TestSingleNodeApplySnapshotRestart(t *testing.T) {
	dir := t.TempDir()
	n := openNode(t, "c1", "127.0.0.1:0", dir, true)
	addr := n.RaftAddr()
	if _, err := n.WaitLeader(ctxT(t, 10*time.Second)); err != nil {
		n.Shutdown()
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "single node leads", n.IsLeader)
	script := runScript()
	for _, c := range script[:6] {
		if r := mustApply(t, n, c); r.Error != "" {
			t.Fatalf("%s rejected: %s", c.Type, r.Error)
		}
	}
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for _, c := range script[6:] {
		mustApply(t, n, c)
	}
	_, err := n.Apply(ctxT(t, 5*time.Second), NewInitRun(t0, InitRun{RunID: "other", PromptCount: 1}))
	if !errors.Is(err, ErrRejected) {
		t.Fatalf("conflicting InitRun error = %v, want ErrRejected", err)
	}
	want := n.State()
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}

	// Restart from the data dir: snapshot + replay of the log after it.
	n2 := openNode(t, "c1", addr, dir, true)
	defer n2.Shutdown()
	waitFor(t, 10*time.Second, "restarted node leads", n2.IsLeader)
	if err := n2.Barrier(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	got := n2.State()
	// The restart appends its own entries (member record); compare the run itself.
	got.Applied, want.Applied = 0, 0
	if !reflect.DeepEqual(got.Groups, want.Groups) || got.Cursor != want.Cursor || got.Step != want.Step ||
		got.PolicyVersion != want.PolicyVersion || !reflect.DeepEqual(got.Checkpoints, want.Checkpoints) ||
		got.RunID != want.RunID || !reflect.DeepEqual(got.Workers, want.Workers) {
		t.Fatalf("state after restart differs:\n got %+v\nwant %+v", got, want)
	}
}

// cluster is three coordinators on loopback: c1 bootstraps, c2 and c3 join as voters.
type cluster struct {
	t     *testing.T
	nodes map[string]*Node
	dirs  map[string]string
	addrs map[string]string
}

func newCluster(t *testing.T) *cluster {
	c := &cluster{t: t, nodes: map[string]*Node{}, dirs: map[string]string{}, addrs: map[string]string{}}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.Shutdown()
		}
	})
	for i, id := range []string{"c1", "c2", "c3"} {
		c.dirs[id] = t.TempDir()
		n := openNode(t, id, "127.0.0.1:0", c.dirs[id], i == 0)
		c.nodes[id] = n
		c.addrs[id] = n.RaftAddr()
		if i == 0 {
			waitFor(t, 10*time.Second, "c1 leads", n.IsLeader)
			continue
		}
		if err := c.nodes["c1"].AddVoter(ctxT(t, 10*time.Second), id, n.RaftAddr(), n.HTTPAddr()); err != nil {
			t.Fatalf("add %s: %v", id, err)
		}
	}
	return c
}

func (c *cluster) leader() *Node {
	for _, n := range c.nodes {
		if n.IsLeader() {
			return n
		}
	}
	return nil
}

func (c *cluster) followers() []*Node {
	var out []*Node
	for _, n := range c.nodes {
		if !n.IsLeader() {
			out = append(out, n)
		}
	}
	return out
}

func (c *cluster) httpAddrs() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.HTTPAddr())
	}
	return out
}

// converged waits until every running node has applied the same state.
func (c *cluster) converged() State {
	var st State
	waitFor(c.t, 10*time.Second, "replicas converge", func() bool {
		var first *State
		for _, n := range c.nodes {
			s := n.State()
			if first == nil {
				first = &s
				continue
			}
			if s.Applied != first.Applied || !reflect.DeepEqual(s, *first) {
				return false
			}
		}
		st = *first
		return true
	})
	return st
}

func TestClusterFailoverForwardingRestart(t *testing.T) {
	c := newCluster(t)
	var ld *Node
	waitFor(t, 10*time.Second, "a leader", func() bool { ld = c.leader(); return ld != nil })
	servers, err := ld.Servers()
	if err != nil || len(servers) != 3 {
		t.Fatalf("servers = %v, %v; want 3", servers, err)
	}
	// The nodes that were following a moment ago (leadership may move on a loaded machine;
	// Apply works on any node either way).
	var fol []*Node
	for _, n := range c.nodes {
		if n != ld {
			fol = append(fol, n)
		}
	}
	// Commands applied on a follower are forwarded to the leader.
	mustApply(t, fol[0], NewInitRun(t0, InitRun{RunID: "r1", Seed: 1, PromptCount: 1000}))
	r := mustApply(t, fol[1], NewDispatchBatch(t0, DispatchBatch{BatchID: "b0", Step: 0, Count: 4}))
	if r.Noop || len(r.Groups) != 4 {
		t.Fatalf("forwarded dispatch = %+v", r)
	}
	// The same dispatch retried through the other follower is not applied again.
	r2 := mustApply(t, fol[0], NewDispatchBatch(t0, DispatchBatch{BatchID: "b0", Step: 0, Count: 4}))
	if !r2.Noop || !reflect.DeepEqual(r2.Groups, r.Groups) {
		t.Fatalf("retried dispatch = %+v, want no-op with the same groups", r2)
	}

	// A worker-side client that only knows the HTTP addresses.
	cl, err := NewClient(c.httpAddrs(), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	// Concurrent dispatches through every node and the client, each batch id sent twice.
	const batches = 12
	var wg sync.WaitGroup
	errs := make(chan error, 2*batches)
	appliers := []interface {
		Apply(context.Context, Command) (Result, error)
	}{c.nodes["c1"], c.nodes["c2"], c.nodes["c3"], cl}
	for i := range batches {
		for rep := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ap := appliers[(i+rep)%len(appliers)]
				_, err := ap.Apply(ctxT(t, 20*time.Second), NewDispatchBatch(t0, DispatchBatch{BatchID: fmt.Sprintf("s0-%d", i), Step: 0, Count: 5}))
				if err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent dispatch: %v", err)
	}
	st := c.converged()
	if want := int64(4 + batches*5); st.Cursor.Offset != want || len(st.Groups) != int(want) {
		t.Fatalf("cursor %d, %d groups; want %d of each (a command applied twice?)", st.Cursor.Offset, len(st.Groups), want)
	}

	// Stop the leader: the others elect a new one and the client follows.
	old := c.leader()
	oldID, oldRaft, oldDir := old.ID(), old.RaftAddr(), c.dirs[old.ID()]
	stopped := time.Now()
	if err := old.Shutdown(); err != nil {
		t.Fatal(err)
	}
	delete(c.nodes, oldID)
	waitFor(t, 10*time.Second, "new leader elected", func() bool { return c.leader() != nil })
	t.Logf("re-election after stopping leader %s took %v", oldID, time.Since(stopped).Round(time.Millisecond))
	learned := make([]string, 0, 4)
	for _, g := range r.Groups {
		learned = append(learned, g.Key())
	}
	done := NewStepDone(t0.Add(time.Minute), StepDone{Step: 0, Learned: learned})
	if res := mustApply(t, cl, done); res.Noop || res.Step != 1 {
		t.Fatalf("StepDone after failover = %+v", res)
	}
	if res := mustApply(t, cl, done); !res.Noop || res.Step != 1 {
		t.Fatalf("retried StepDone = %+v, want no-op", res)
	}
	mustApply(t, c.followers()[0], NewCommitCheckpoint(t0.Add(time.Minute), CommitCheckpoint{Step: 1, Key: "r1/checkpoints/1", PolicyVersion: 1}))
	cst, err := cl.State(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if cst.Step != 1 || cst.PolicyVersion != 1 || len(cst.Checkpoints) != 1 {
		t.Fatalf("client state = step %d policy %d checkpoints %v", cst.Step, cst.PolicyVersion, cst.Checkpoints)
	}

	// The old leader comes back from its data dir and catches up.
	n := openNode(t, oldID, oldRaft, oldDir, false)
	c.nodes[oldID] = n
	st = c.converged()
	if st.Step != 1 || len(st.Groups) != batches*5 || len(st.Checkpoints) != 1 {
		t.Fatalf("after rejoin: step %d, %d groups, %d checkpoints", st.Step, len(st.Groups), len(st.Checkpoints))
	}

	// Membership: remove a follower, the remaining two still commit.
	rm := c.followers()[0]
	if err := c.followers()[1].RemoveServer(ctxT(t, 10*time.Second), rm.ID()); err != nil {
		t.Fatalf("remove %s: %v", rm.ID(), err)
	}
	if err := rm.Shutdown(); err != nil {
		t.Fatal(err)
	}
	delete(c.nodes, rm.ID())
	mustApply(t, cl, NewHeartbeat(t0.Add(time.Minute), Heartbeat{WorkerID: "w1", Role: "rollout", TTL: time.Minute}))
	st = c.converged()
	if _, ok := st.Members[rm.ID()]; ok || len(st.Workers) != 1 {
		t.Fatalf("after removal: members %v workers %v", st.Members, st.Workers)
	}
}

func TestClientNoCluster(t *testing.T) {
	cl, err := NewClient([]string{"127.0.0.1:1"}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	_, err = cl.Apply(ctxT(t, 300*time.Millisecond), NewExpireLeases(t0))
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("apply with no cluster = %v, want a deadline error", err)
	}
	if _, err := NewClient(nil, testLog(t)); err == nil {
		t.Fatal("client without addresses accepted")
	}
	if _, err := cl.Apply(context.Background(), Command{Type: "nope", Version: 1, At: t0}); !errors.Is(err, ErrRejected) {
		t.Fatalf("invalid command error = %v, want ErrRejected", err)
	}
}

func TestOpenBadConfig(t *testing.T) {
	for _, cfg := range []NodeConfig{
		{RaftAddr: "127.0.0.1:0", DataDir: t.TempDir()},
		{ID: "x", DataDir: t.TempDir()},
		{ID: "x", RaftAddr: "127.0.0.1:0"},
		{ID: "x", RaftAddr: "0.0.0.0:0", DataDir: t.TempDir()},
	} {
		if n, err := Open(cfg, testLog(t)); err == nil {
			n.Shutdown()
			t.Errorf("Open(%+v) succeeded", cfg)
		}
	}
}

// Three nodes that all know the full peer list from their config bootstrap together; a follower
// forwards through the peers' configured HTTP addresses.
func TestStaticBootstrap(t *testing.T) {
	bootstrapThree(t, "", secure.TLSFiles{})
}

// bootstrapThree opens nodes a, b and c with the full peer list (and the token and TLS files
// given), waits for a leader, applies a run through a follower (so it is forwarded) and waits for
// it on every node. The nodes shut down when the test ends.
func bootstrapThree(t *testing.T, token string, files secure.TLSFiles) ([]Peer, map[string]*Node) {
	t.Helper()
	var peers []Peer
	for _, id := range []string{"a", "b", "c"} {
		peers = append(peers, Peer{ID: id, RaftAddr: porttest.Addr(t), HTTPAddr: porttest.Addr(t)})
	}
	nodes := map[string]*Node{}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.Shutdown()
		}
	})
	for _, p := range peers {
		n, err := Open(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, HTTPAddr: p.HTTPAddr, DataDir: t.TempDir(), Bootstrap: true,
			Peers: peers, Token: token, TLS: files}, testLog(t))
		if err != nil {
			t.Fatalf("open %s: %v", p.ID, err)
		}
		nodes[p.ID] = n
	}
	waitFor(t, 15*time.Second, "a leader among a, b, c", func() bool {
		for _, n := range nodes {
			if n.IsLeader() {
				return true
			}
		}
		return false
	})
	var fol *Node
	for _, n := range nodes {
		if !n.IsLeader() {
			fol = n
		}
	}
	mustApply(t, fol, NewInitRun(t0, InitRun{RunID: "r", PromptCount: 10}))
	waitFor(t, 10*time.Second, "run replicated everywhere", func() bool {
		for _, n := range nodes {
			if n.State().RunID != "r" {
				return false
			}
		}
		return true
	})
	return peers, nodes
}

// pendingFuture is an apply raft accepted and never answers (what an apply queued just before
// raft shut down gets from hashicorp/raft: its future has no shutdown channel).
type pendingFuture struct{ raft.ApplyFuture }

func (pendingFuture) Error() error { select {} }

// A node shutting down does not wait for ever on such an apply (Shutdown waits for the goroutines
// that apply, so it hung): await returns raft's shutdown error once raft is down.
func TestAwaitReturnsWhenRaftIsDown(t *testing.T) {
	n := &Node{raftDown: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- n.await(pendingFuture{}) }()
	select {
	case err := <-done:
		t.Fatalf("await returned %v before raft was down", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(n.raftDown)
	select {
	case err := <-done:
		if !errors.Is(err, raft.ErrRaftShutdown) {
			t.Fatalf("await: %v, want raft.ErrRaftShutdown", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("await still waiting after raft shut down")
	}
}
