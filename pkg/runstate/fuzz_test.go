package runstate

import (
	"bytes"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// maxApplyAlloc bounds what applying a fuzz input's commands may allocate: a dispatch is at most a
// task's worth of groups, so even many of them stay far below it.
const maxApplyAlloc = 256 << 20

// allocated is the number of bytes fn allocates.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// seedLog is a run's first commands, one encoded command per line.
func seedLog(f *testing.F) [][]byte {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cmds := []Command{
		NewInitRun(t0, InitRun{RunID: "run1", Seed: 7, Config: json.RawMessage(`{"steps":3}`), PromptCount: 5}),
		NewSetMember(t0, SetMember{ID: "c0", RaftAddr: "127.0.0.1:7000", HTTPAddr: "127.0.0.1:7001"}),
		NewHeartbeat(t0, Heartbeat{WorkerID: "rollout-0", Role: "rollout", TTL: 15 * time.Second}),
		NewDispatchBatch(t0.Add(time.Second), DispatchBatch{BatchID: "s0-b0", Step: 0, Count: 3}),
		NewDispatchBatch(t0.Add(time.Second), DispatchBatch{BatchID: "s1-b0", Step: 1, Count: 4}),
		NewRedispatch(t0.Add(time.Minute), Redispatch{Key: "0/1", Attempt: 2}),
		NewGroupsScored(t0.Add(2*time.Minute), "0/0", "0/1", "0/2"),
		NewStepDone(t0.Add(3*time.Minute), StepDone{Step: 0, PolicyVersion: 1, Learned: []string{"0/0", "0/1", "0/2"}}),
		NewCommitCheckpoint(t0.Add(4*time.Minute), CommitCheckpoint{Step: 0, Key: "run1/checkpoints/000000000000/MANIFEST.json", PolicyVersion: 1, EvalScore: 0.5}),
		NewExpireLeases(t0.Add(time.Hour)),
		NewRewind(t0.Add(2*time.Hour), Rewind{ID: "learner-2", Step: 1, PolicyVersion: 1, Cursor: Cursor{Epoch: 0, Offset: 3},
			Groups: []Group{{Step: 1, PromptIndex: 3, BatchID: "s1-b0", Attempts: 1, Status: GroupDispatched}}, Batches: map[string]int64{"s1-b0": 1}}),
		NewSetMember(t0.Add(3*time.Hour), SetMember{ID: "c0", Remove: true}),
	}
	lines := make([][]byte, len(cmds))
	for i, c := range cmds {
		b, err := c.Encode()
		if err != nil {
			f.Fatal(err)
		}
		lines[i] = b
	}
	return lines
}

// checkSnapshot encodes st as a snapshot and decodes it again, as raft does when it compacts its
// log and when a follower installs the leader's snapshot.
func checkSnapshot(t *testing.T, st State) {
	var buf bytes.Buffer
	if err := EncodeSnapshot(&buf, st); err != nil {
		t.Fatalf("state cannot be snapshotted: %v", err)
	}
	back, err := DecodeSnapshot(&buf)
	if err != nil {
		t.Fatalf("snapshot of the state is refused: %v", err)
	}
	if back.Step != st.Step || back.PolicyVersion != st.PolicyVersion || back.Cursor != st.Cursor || len(back.Groups) != len(st.Groups) {
		t.Fatalf("snapshot changed the state: step %d/%d, version %d/%d, cursor %v/%v, %d/%d groups",
			back.Step, st.Step, back.PolicyVersion, st.PolicyVersion, back.Cursor, st.Cursor, len(back.Groups), len(st.Groups))
	}
}

// FuzzApply: raft log entries, one per line, as any client of a coordinator's HTTP endpoint
// (/raft/apply) proposes them and every replica applies them.
func FuzzApply(f *testing.F) {
	lines := seedLog(f)
	f.Add(bytes.Join(lines, []byte("\n")))
	for _, l := range lines {
		f.Add(l)
	}
	f.Add(bytes.Join([][]byte{lines[0], lines[3], lines[3], lines[4], lines[7], lines[7]}, []byte("\n")))
	f.Add(bytes.Join(lines[:4], []byte("\n"))[:len(bytes.Join(lines[:4], []byte("\n")))-7])
	f.Add([]byte(`{"type":"dispatch_batch","version":1,"at":"2026-01-02T03:04:05Z","dispatch_batch":{"batch_id":"b","step":0,"count":3},"init_run":{"run_id":"r","prompt_count":2}}`))
	f.Add([]byte(`{"type":"init_run","version":2,"at":"2026-01-02T03:04:05Z","init_run":{"run_id":"r","prompt_count":2}}`))
	f.Add([]byte(`{"type":"heartbeat","version":1,"at":"0001-01-01T00:00:00Z","heartbeat":{"worker_id":"w","ttl":1}}`))
	f.Add([]byte(`{"type":"init_run","version":1,"at":"2026-01-02T03:04:05Z","init_run":{"run_id":"r","prompt_count":9223372036854775807,"config":"x"}}`))
	f.Add([]byte("null\n{}\n[]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fsm := NewFSM()
		n := allocated(func() {
			for i, line := range bytes.Split(data, []byte("\n")) {
				r := fsm.Apply(&raft.Log{Type: raft.LogCommand, Index: uint64(i + 1), Data: line}).(Result)
				if _, err := DecodeCommand(line); err != nil && r.Error == "" {
					t.Fatalf("entry %d: undecodable command applied without an error: %v", i+1, err)
				}
			}
		})
		if n > maxApplyAlloc {
			t.Fatalf("applying %d bytes of commands allocated %d bytes", len(data), n)
		}
		checkSnapshot(t, fsm.State())
	})
}

// FuzzDecodeSnapshot: a run-state snapshot, as a follower receives it from the leader over raft and
// the coordinator reads the copy stored with a checkpoint when it resumes a run.
func FuzzDecodeSnapshot(f *testing.F) {
	fsm := NewFSM()
	for i, l := range seedLog(f) {
		fsm.Apply(&raft.Log{Type: raft.LogCommand, Index: uint64(i + 1), Data: l})
	}
	var buf bytes.Buffer
	if err := EncodeSnapshot(&buf, fsm.State()); err != nil {
		f.Fatal(err)
	}
	good := buf.Bytes()
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte(`{"format":1,"state":{}}`))
	f.Add([]byte(`{"format":1,"state":{"run_id":"r","prompt_count":0,"cursor":{"offset":-3}}}`))
	f.Add([]byte(`{"format":1,"state":{"run_id":"r","prompt_count":2,"checkpoints":[{"step":5},{"step":1}]}}`))
	f.Add([]byte(`{"format":2,"state":{}}`))
	f.Add([]byte(strings.Repeat("[", 64)))
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	// What the restored state goes on to apply.
	next := []Command{
		NewDispatchBatch(t0, DispatchBatch{BatchID: "x0", Step: 1, Count: 2}),
		NewRedispatch(t0, Redispatch{Key: "1/3", Attempt: 2}),
		NewGroupsScored(t0, "1/3"),
		NewStepDone(t0, StepDone{Step: 1, Learned: []string{"1/3", "1/4"}}),
		NewCommitCheckpoint(t0, CommitCheckpoint{Step: 1, Key: "k", PolicyVersion: 2}),
		NewHeartbeat(t0, Heartbeat{WorkerID: "w", TTL: time.Second}),
		NewExpireLeases(t0.Add(time.Hour)),
		NewRewind(t0, Rewind{ID: "fuzz", Step: 1, Cursor: Cursor{Offset: 1}}),
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := DecodeSnapshot(bytes.NewReader(data))
		if err != nil {
			return
		}
		_ = st.GroupsByStatus(GroupDispatched)
		_, _ = st.LatestCheckpoint()
		n := allocated(func() {
			for i, c := range next {
				st.apply(st.Applied+uint64(i)+1, c)
			}
		})
		if n > maxApplyAlloc {
			t.Fatalf("applying commands to a %d-byte snapshot allocated %d bytes", len(data), n)
		}
		checkSnapshot(t, st)
	})
}
