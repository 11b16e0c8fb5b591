package coordinator

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/ckpt"
	"github.com/bicot-rl/bicot/pkg/porttest"
	"github.com/bicot-rl/bicot/pkg/runstate"
	"github.com/bicot-rl/bicot/pkg/store/local"
)

// snapshotAt builds the run state a learner stores with the checkpoint of step 4 of a run with
// P = 2, staleness 1: steps 0-3 learned, step 4 trained (scored, not yet done), step 5 dispatched.
func snapshotAt(t *testing.T) runstate.State {
	t.Helper()
	f := runstate.NewFSM()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	i := uint64(0)
	apply := func(c runstate.Command) runstate.Result {
		t.Helper()
		i++
		data, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		r := f.Apply(rlog(i, data)).(runstate.Result)
		if r.Error != "" {
			t.Fatalf("%s: %s", c.Type, r.Error)
		}
		return r
	}
	apply(runstate.NewInitRun(now, runstate.InitRun{RunID: "r1", Seed: 3, PromptCount: 7}))
	apply(runstate.NewHeartbeat(now, runstate.Heartbeat{WorkerID: "w", Role: "rollout", TTL: time.Hour}))
	for s := int64(0); s <= 5; s++ {
		r := apply(runstate.NewDispatchBatch(now, runstate.DispatchBatch{BatchID: fmt.Sprintf("s%d-b0", s), Step: s, Count: 2}))
		if s < 4 {
			var keys []string
			for _, g := range r.Groups {
				keys = append(keys, g.Key())
			}
			apply(runstate.NewStepDone(now, runstate.StepDone{Step: s, Learned: keys}))
		}
	}
	apply(runstate.NewGroupsScored(now, "4/1", "4/2"))
	return f.State()
}

// TestResumeStateAndSeededCluster turns a checkpoint's run-state snapshot into the state to
// resume from, seeds three raft directories with it and starts a three-node cluster on them: a
// leader is elected, every node holds the resumed state, and the cluster applies new commands.
func TestResumeStateAndSeededCluster(t *testing.T) {
	snap := snapshotAt(t)
	m := ckpt.Manifest{Run: "r1", Step: 4, PolicyVersion: 5, Key: ckpt.ManifestKey("r1", 4)}
	st := ResumeState(snap, m)
	if st.Step != 5 || st.PolicyVersion != 5 || st.Cursor != snap.Cursor {
		t.Fatalf("resumed step %d version %d cursor %+v; want 5, 5, %+v", st.Step, st.PolicyVersion, st.Cursor, snap.Cursor)
	}
	if len(st.Groups) != 2 || len(st.Workers) != 0 || len(st.Checkpoints) != 1 {
		t.Fatalf("resumed groups %v workers %v checkpoints %v; want step 5's two groups, no leases, one checkpoint", st.Groups, st.Workers, st.Checkpoints)
	}
	for _, g := range st.Groups {
		if g.Step != 5 || g.Status != runstate.GroupDispatched || g.Attempts != 2 {
			t.Errorf("group %s: step %d status %s attempts %d; want step 5, dispatched, attempt 2 (a new message id)", g.Key(), g.Step, g.Status, g.Attempts)
		}
	}
	if _, ok := st.Batches["s5-b0"]; !ok || len(st.Batches) != 1 {
		t.Errorf("batches %v, want only step 5's", st.Batches)
	}

	dir := t.TempDir()
	var peers []runstate.Peer
	for i := range 3 {
		peers = append(peers, runstate.Peer{ID: fmt.Sprintf("n%d", i), RaftAddr: porttest.Addr(t), HTTPAddr: porttest.Addr(t)})
	}
	for _, p := range peers {
		if err := SeedRaft(filepath.Join(dir, p.ID), peers, st); err != nil {
			t.Fatal(err)
		}
	}
	if err := SeedRaft(filepath.Join(dir, peers[0].ID), peers, st); err == nil {
		t.Error("seeding a directory twice was accepted")
	}
	var nodes []*runstate.Node
	for _, p := range peers {
		n, err := runstate.Open(runstate.NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, HTTPAddr: p.HTTPAddr,
			DataDir: filepath.Join(dir, p.ID), Bootstrap: true, Peers: peers}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	defer func() {
		for _, n := range nodes {
			_ = n.Shutdown()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, n := range nodes {
		if _, err := n.WaitLeader(ctx); err != nil {
			t.Fatal(err)
		}
		got := n.State()
		if got.RunID != "r1" || got.Step != 5 || got.Cursor != st.Cursor || len(got.Groups) != 2 {
			t.Errorf("node %s restored step %d cursor %+v groups %d", n.ID(), got.Step, got.Cursor, len(got.Groups))
		}
	}
	r, err := nodes[2].Apply(ctx, runstate.NewStepDone(time.Now(), runstate.StepDone{Step: 5, Learned: []string{"5/5", "5/6"}}))
	if err != nil {
		t.Fatal(err)
	}
	if r.Step != 6 || r.PolicyVersion != 6 {
		t.Errorf("after StepDone: step %d version %d, want 6, 6", r.Step, r.PolicyVersion)
	}
}

// TestLoadResumeSkipsDamagedCheckpoint: the newest checkpoint without its run-state part's
// bytes intact is skipped and the previous one is used.
func TestLoadResumeSkipsDamagedCheckpoint(t *testing.T) {
	ctx := context.Background()
	st, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := runstate.EncodeSnapshot(&b, snapshotAt(t)); err != nil {
		t.Fatal(err)
	}
	for step := int64(3); step <= 4; step++ {
		if _, err := ckpt.Save(ctx, st, "r1", step, map[string][]byte{ckpt.PartRunState: b.Bytes(), "config": []byte("steps: 9\n")},
			ckpt.Meta{PolicyVersion: step + 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Put(ctx, ckpt.Dir("r1", 4)+ckpt.PartRunState, bytes.NewReader([]byte("{}")), 2); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	r, err := LoadResume(ctx, st, "r1", zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	if r.Manifest.Step != 3 || r.State.Step != 4 || r.State.PolicyVersion != 4 || r.Config.Steps != 9 {
		t.Errorf("resumed from step %d: state step %d version %d, config steps %d; want 3, 4, 4, 9", r.Manifest.Step, r.State.Step, r.State.PolicyVersion, r.Config.Steps)
	}
	if !bytes.Contains(logs.Bytes(), []byte("skipping corrupted checkpoint")) {
		t.Errorf("no log line for the skipped checkpoint:\n%s", logs.String())
	}
	if _, err := LoadResume(ctx, st, "nothing", zerolog.Nop()); err == nil {
		t.Error("resuming a run without checkpoints was accepted")
	}
}

func rlog(i uint64, data []byte) *raft.Log {
	return &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: data}
}
