package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/local/localtest"
	"github.com/bicot-rl/bicot/pkg/natsd"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/coordinator"
	"github.com/bicot-rl/bicot/pkg/learner"
	"github.com/bicot-rl/bicot/pkg/porttest"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/rewardworker"
	"github.com/bicot-rl/bicot/pkg/rolloutworker"
	"github.com/bicot-rl/bicot/pkg/runstate"
	"github.com/bicot-rl/bicot/pkg/store/local"
)

// coordinatorNode is one coordinator of the cluster: its raft node and coordinator service.
type coordinatorNode struct {
	node   *runstate.Node
	co     *coordinator.Coordinator
	cancel context.CancelFunc
	done   chan struct{}
}

func (n *coordinatorNode) stop() {
	n.cancel()
	<-n.done
	_ = n.node.Shutdown()
}

// TestThreeCoordinatorsSurviveLeaderLoss runs a run with three coordinators (three raft nodes over
// TCP on loopback, each with its coordinator service), one rollout and one reward worker and the
// learner, all over embedded NATS. Mid-run the leading coordinator is stopped (its scheduling and
// its raft node): another is elected, takes over scheduling from the replicated state, and the run
// completes with every step learned exactly once (learner's accounting) and the replicated state
// at the last step with nothing in flight. The measured failover time is logged.
func TestThreeCoordinatorsSurviveLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("a full pipeline run with three coordinators; skipped with -short")
	}
	e := sharedEnv.Get(t)
	c := localtest.Config(t, 4)
	c.RunID = "ha3"
	c.Wire.DispatchTick, c.Wire.PollWait = config.Duration(50*time.Millisecond), config.Duration(2*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	log := zerolog.Nop()

	srv, err := natsd.Start(natsd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	var conns []func()
	defer func() {
		for _, f := range conns {
			f()
		}
	}()

	ps, err := prompts.ReadFile(c.Prompts)
	if err != nil {
		t.Fatal(err)
	}
	st, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var peers []runstate.Peer
	for i := range 3 {
		peers = append(peers, runstate.Peer{ID: fmt.Sprintf("c%d", i), RaftAddr: porttest.Addr(t), HTTPAddr: porttest.Addr(t)})
	}
	dir := t.TempDir()
	nodes := make([]*coordinatorNode, 3)
	var openWG sync.WaitGroup
	openErr := make([]error, 3)
	for i, p := range peers {
		openWG.Add(1)
		go func() {
			defer openWG.Done()
			n, err := runstate.Open(runstate.NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, HTTPAddr: p.HTTPAddr,
				DataDir: filepath.Join(dir, p.ID), Bootstrap: true, Peers: peers}, log)
			openErr[i] = err
			nodes[i] = &coordinatorNode{node: n}
		}()
	}
	openWG.Wait()
	for i, err := range openErr {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	for _, n := range nodes {
		defer n.node.Shutdown()
	}
	t0 := time.Now()
	if _, err := nodes[0].node.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("first election: %v", time.Since(t0).Round(time.Millisecond))

	for i, n := range nodes {
		nc, cjs, err := bus.Connect(ctx, srv.URL(), bus.ConnectOptions{Name: peers[i].ID})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, nc.Close)
		co, err := coordinator.New(ctx, coordinator.Deps{JS: cjs, Node: n.node, Prompts: ps, HTTPAddr: "127.0.0.1:0", Log: log}, c)
		if err != nil {
			t.Fatal(err)
		}
		cctx, ccancel := context.WithCancel(ctx)
		n.co, n.cancel, n.done = co, ccancel, make(chan struct{})
		go func() {
			defer close(n.done)
			if err := co.Run(cctx); err != nil {
				t.Errorf("coordinator %s: %v", peers[i].ID, err)
			}
		}()
		defer n.cancel()
	}

	addrs := make([]string, len(peers))
	for i, p := range peers {
		addrs[i] = p.HTTPAddr
	}
	client, err := runstate.NewClient(addrs, log)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer wcancel()
	nc, ljs, err := bus.Connect(ctx, srv.URL(), bus.ConnectOptions{Name: "learner"})
	if err != nil {
		t.Fatal(err)
	}
	conns = append(conns, nc.Close)
	learner, err := learner.New(ctx, learner.Deps{JS: ljs, Backend: e.Backend, Store: st, Init: e.Policy,
		RunState: learner.RunStateFromCluster(client), Log: log}, c)
	if err != nil {
		t.Fatal(err)
	}
	learnErr := make(chan error, 1)
	go func() { learnErr <- learner.Run(wctx) }()
	nc, rjs, err := bus.Connect(ctx, srv.URL(), bus.ConnectOptions{Name: "rollout"})
	if err != nil {
		t.Fatal(err)
	}
	conns = append(conns, nc.Close)
	rw, err := rolloutworker.New(ctx, rolloutworker.Deps{ID: "rollout-0", JS: rjs, Backend: e.Backend, Store: st, Log: log}, c)
	if err != nil {
		t.Fatal(err)
	}
	nc, sjs, err := bus.Connect(ctx, srv.URL(), bus.ConnectOptions{Name: "reward"})
	if err != nil {
		t.Fatal(err)
	}
	conns = append(conns, nc.Close)
	sw, err := rewardworker.New(ctx, rewardworker.Deps{ID: "reward-0", JS: sjs, Ensemble: e.Ensemble, Codebook: e.Codebook, Log: log}, c)
	if err != nil {
		t.Fatal(err)
	}
	for _, run := range []func(context.Context) error{rw.Run, sw.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(wctx); err != nil && wctx.Err() == nil {
				t.Errorf("worker: %v", err)
			}
		}()
	}

	// Mid-run (step 1 learned, step 2 dispatched or in flight), stop the leader.
	for learner.NextStep() < 2 {
		if ctx.Err() != nil {
			t.Fatal("step 1 not learned in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
	old := -1
	for i, n := range nodes {
		if n.node.IsLeader() {
			old = i
		}
	}
	if old < 0 {
		t.Fatal("no leader mid-run")
	}
	stopped := time.Now()
	nodes[old].stop()
	var newLeader int
	for newLeader = -1; newLeader < 0; {
		for i, n := range nodes {
			if i != old && n.node.IsLeader() {
				newLeader = i
			}
		}
		if time.Since(stopped) > 10*time.Second {
			t.Fatal("no new leader within 10 s of stopping the old one")
		}
		time.Sleep(time.Millisecond)
	}
	failover := time.Since(stopped)
	t.Logf("leader %s stopped at step %d; %s elected after %v", peers[old].ID, learner.NextStep(), peers[newLeader].ID, failover.Round(time.Millisecond))

	select {
	case err := <-learnErr:
		if err != nil {
			t.Fatalf("learner: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("run did not complete after the failover")
	}
	survivor := nodes[newLeader]
	select {
	case <-survivor.co.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the new leader did not see the run finish")
	}
	localtest.CheckLearned(t, c, learner.Accounting())
	rs := survivor.node.State()
	if rs.Step != int64(c.Steps) || rs.PolicyVersion != int64(c.Steps) || len(rs.Groups) != 0 {
		t.Errorf("replicated state at the end: step %d, version %d, %d groups in flight; want %d, %d, 0",
			rs.Step, rs.PolicyVersion, len(rs.Groups), c.Steps, c.Steps)
	}
	if since := survivor.co.LeaderSince(); since.IsZero() {
		t.Error("the new leader never took over scheduling")
	}
	// Every survivor names the same leader, one of them. With 200 ms timeouts on a busy machine
	// leadership may move again between the survivors (allowed), so views may briefly disagree.
	var problem string
	for try := 0; try < 30; try++ {
		problem = ""
		leaders, ids := 0, map[string]bool{}
		for i, n := range nodes {
			if i == old {
				continue
			}
			s := n.co.Status(ctx)
			if s.Leader {
				leaders++
				if s.LeaderID != peers[i].ID || s.LeaderRunState != peers[i].HTTPAddr {
					problem += fmt.Sprintf("leader %s names %q at %q; ", peers[i].ID, s.LeaderID, s.LeaderRunState)
				}
			}
			ids[s.LeaderID] = true
			if !s.Done {
				problem += fmt.Sprintf("%s not done; ", peers[i].ID)
			}
		}
		if leaders != 1 || len(ids) != 1 || ids[peers[old].ID] {
			problem += fmt.Sprintf("%d leaders, leader ids %v (stopped: %s)", leaders, ids, peers[old].ID)
		}
		if problem == "" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if problem != "" {
		t.Errorf("survivors' status: %s", problem)
	}

	for i, n := range nodes {
		if i != old {
			n.cancel()
			<-n.done
		}
	}
	wcancel()
}
