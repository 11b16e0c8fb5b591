package runstate

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// applyAll feeds cmds to f as raft log entries starting at index 1 and returns the results.
func applyAll(t *testing.T, f *FSM, cmds ...Command) []Result {
	t.Helper()
	var out []Result
	base := f.State().Applied
	for i, c := range cmds {
		data, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		r := f.Apply(&raft.Log{Index: base + uint64(i) + 1, Type: raft.LogCommand, Data: data}).(Result)
		out = append(out, r)
	}
	return out
}

func runScript() []Command {
	return []Command{
		NewInitRun(t0, InitRun{RunID: "r1", Seed: 7, Config: json.RawMessage(`{"g":8}`), PromptCount: 5}),
		NewDispatchBatch(t0.Add(time.Second), DispatchBatch{BatchID: "b0", Step: 0, Count: 3}),
		NewDispatchBatch(t0.Add(2*time.Second), DispatchBatch{BatchID: "b1", Step: 1, Count: 3}),
		NewGroupsScored(t0.Add(3*time.Second), "0/0", "0/1"),
		NewRedispatch(t0.Add(4*time.Second), Redispatch{Key: "0/2", Attempt: 2}),
		NewHeartbeat(t0.Add(5*time.Second), Heartbeat{WorkerID: "w1", Role: "rollout", TTL: 10 * time.Second}),
		NewHeartbeat(t0.Add(5*time.Second), Heartbeat{WorkerID: "w2", Role: "reward", TTL: 2 * time.Second}),
		NewStepDone(t0.Add(6*time.Second), StepDone{Step: 0, Learned: []string{"0/0", "0/1", "0/2"}}),
		NewCommitCheckpoint(t0.Add(7*time.Second), CommitCheckpoint{Step: 1, Key: "r1/checkpoints/000000000001/MANIFEST.json", PolicyVersion: 1, EvalScore: 0.4}),
		NewExpireLeases(t0.Add(8 * time.Second)),
	}
}

func TestApplyScript(t *testing.T) {
	f := NewFSM()
	res := applyAll(t, f, runScript()...)
	for i, r := range res {
		if r.Error != "" {
			t.Fatalf("command %d rejected: %s", i, r.Error)
		}
	}
	st := f.State()
	if st.RunID != "r1" || st.Seed != 7 || string(st.Config) != `{"g":8}` || !st.Started.Equal(t0) {
		t.Fatalf("run = %q seed %d config %s started %v", st.RunID, st.Seed, st.Config, st.Started)
	}
	if st.Step != 1 || st.PolicyVersion != 1 {
		t.Fatalf("step %d policy %d, want 1 1", st.Step, st.PolicyVersion)
	}
	// 6 prompts from a file of 5: the cursor wrapped once.
	if st.Cursor != (Cursor{Epoch: 1, Offset: 1}) {
		t.Fatalf("cursor = %+v, want epoch 1 offset 1", st.Cursor)
	}
	if len(st.Groups) != 3 {
		t.Fatalf("groups in flight = %v, want step 1's three", st.Groups)
	}
	g, ok := st.Groups["1/0"]
	if !ok || g.Epoch != 1 || g.BatchID != "b1" || g.Attempts != 1 || g.Status != GroupDispatched {
		t.Fatalf("group 1/0 = %+v (present %v), want epoch 1 of batch b1", g, ok)
	}
	if g := st.Groups["1/3"]; g.Epoch != 0 || !g.DispatchedAt.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("group 1/3 = %+v, want epoch 0 dispatched at t0+2s", g)
	}
	if _, ok := st.Batches["b0"]; ok {
		t.Fatal("batch id of a finished step was kept")
	}
	if len(st.Checkpoints) != 1 || st.Checkpoints[0].Step != 1 || !st.Checkpoints[0].Time.Equal(t0.Add(7*time.Second)) {
		t.Fatalf("checkpoints = %+v", st.Checkpoints)
	}
	if len(st.Workers) != 1 || st.Workers["w1"].Role != "rollout" {
		t.Fatalf("workers after expiry = %+v, want only w1", st.Workers)
	}
	if got := res[len(res)-1].Expired; !reflect.DeepEqual(got, []string{"w2"}) {
		t.Fatalf("expired = %v, want [w2]", got)
	}
	if st.Applied != uint64(len(res)) {
		t.Fatalf("applied index %d, want %d", st.Applied, len(res))
	}
}

func TestApplyIsDeterministic(t *testing.T) {
	a, b := NewFSM(), NewFSM()
	applyAll(t, a, runScript()...)
	applyAll(t, b, runScript()...)
	var ba, bb bytes.Buffer
	if err := EncodeSnapshot(&ba, a.State()); err != nil {
		t.Fatal(err)
	}
	if err := EncodeSnapshot(&bb, b.State()); err != nil {
		t.Fatal(err)
	}
	if ba.String() != bb.String() {
		t.Fatalf("two replicas diverged:\n%s\n%s", ba.String(), bb.String())
	}
}

func TestRetriedCommandsApplyOnce(t *testing.T) {
	f := NewFSM()
	applyAll(t, f, runScript()[:3]...)
	before := f.State()

	res := applyAll(t, f,
		NewDispatchBatch(t0.Add(time.Hour), DispatchBatch{BatchID: "b1", Step: 1, Count: 3}),
		NewRedispatch(t0.Add(time.Hour), Redispatch{Key: "0/2", Attempt: 1}),
	)
	if !res[0].Noop || len(res[0].Groups) != 3 || res[0].Groups[0].Key() != "1/3" {
		t.Fatalf("retried dispatch = %+v, want a no-op returning the first assignment", res[0])
	}
	if !res[1].Noop {
		t.Fatalf("redispatch of an attempt already made = %+v, want no-op", res[1])
	}
	after := f.State()
	if after.Cursor != before.Cursor || !reflect.DeepEqual(after.Groups, before.Groups) {
		t.Fatalf("retries changed the state: cursor %+v -> %+v", before.Cursor, after.Cursor)
	}

	done := NewStepDone(t0.Add(time.Hour), StepDone{Step: 0, PolicyVersion: 3, Learned: []string{"0/0"}})
	res = applyAll(t, f, done, done)
	if res[0].Noop || res[0].Step != 1 || res[0].PolicyVersion != 3 {
		t.Fatalf("first StepDone = %+v", res[0])
	}
	if !res[1].Noop || res[1].Step != 1 || res[1].PolicyVersion != 3 {
		t.Fatalf("retried StepDone = %+v, want no-op at step 1", res[1])
	}
}

func TestRejections(t *testing.T) {
	cases := []struct {
		name string
		cmd  Command
		want string
	}{
		{"dispatch before init", NewDispatchBatch(t0, DispatchBatch{BatchID: "x", Count: 1}), "no run"},
		{"other run", NewInitRun(t0, InitRun{RunID: "r2", PromptCount: 3}), "already initialised"},
		{"batch too big", NewDispatchBatch(t0, DispatchBatch{BatchID: "x", Count: 6}), "count 6"},
		{"learned step", NewDispatchBatch(t0, DispatchBatch{BatchID: "late", Step: 0, Count: 1}), "already learned"},
		{"future step done", NewStepDone(t0, StepDone{Step: 5}), "run is at step 1"},
		{"policy goes back", NewStepDone(t0, StepDone{Step: 1, PolicyVersion: 1}), "does not advance"},
		{"unknown group", NewGroupsScored(t0, "9/9"), "not in flight"},
		{"attempt gap", NewRedispatch(t0, Redispatch{Key: "1/3", Attempt: 5}), "want 2"},
		{"no ttl", NewHeartbeat(t0, Heartbeat{WorkerID: "w"}), "ttl"},
		{"no checkpoint key", NewCommitCheckpoint(t0, CommitCheckpoint{Step: 1}), "empty checkpoint key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := NewFSM()
			if c.name != "dispatch before init" {
				applyAll(t, f, runScript()[:9]...)
			}
			before := f.State()
			r := applyAll(t, f, c.cmd)[0]
			if !strings.Contains(r.Error, c.want) {
				t.Fatalf("error = %q, want it to mention %q", r.Error, c.want)
			}
			if !errors.Is(r.Err(), ErrRejected) {
				t.Fatalf("Err() = %v, want ErrRejected", r.Err())
			}
			after := f.State()
			after.Applied = before.Applied
			if !reflect.DeepEqual(before, after) {
				t.Fatalf("a rejected command changed the state")
			}
		})
	}
}

func TestMalformedEntries(t *testing.T) {
	f := NewFSM()
	bad := [][]byte{
		[]byte("not json"),
		[]byte(`{"type":"init_run","version":2,"at":"2026-01-01T00:00:00Z","init_run":{"run_id":"r","prompt_count":1}}`),
		[]byte(`{"type":"init_run","version":1,"init_run":{"run_id":"r","prompt_count":1}}`),
		[]byte(`{"type":"launch","version":1,"at":"2026-01-01T00:00:00Z"}`),
		[]byte(`{"type":"init_run","version":1,"at":"2026-01-01T00:00:00Z"}`),
	}
	for i, b := range bad {
		r := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: b}).(Result)
		if r.Error == "" {
			t.Errorf("entry %q applied, want a rejection", b)
		}
	}
	if st := f.State(); st.RunID != "" {
		t.Fatalf("malformed entries changed the run: %+v", st)
	}
}

func TestSnapshotRestore(t *testing.T) {
	f := NewFSM()
	applyAll(t, f, runScript()...)
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	// A later command must not leak into the persisted snapshot.
	applyAll(t, f, NewHeartbeat(t0.Add(time.Hour), Heartbeat{WorkerID: "late", TTL: time.Second}))

	g := NewFSM()
	if err := g.Restore(nopCloser{bytes.NewReader(sink.Bytes())}); err != nil {
		t.Fatal(err)
	}
	want := NewFSM()
	applyAll(t, want, runScript()...)
	if !reflect.DeepEqual(g.State(), want.State()) {
		t.Fatalf("restored state differs:\n got %+v\nwant %+v", g.State(), want.State())
	}
	// The restored FSM goes on applying like the original.
	applyAll(t, g, NewDispatchBatch(t0.Add(time.Hour), DispatchBatch{BatchID: "b2", Step: 1, Count: 2}))
	if c := g.State().Cursor; c != (Cursor{Epoch: 1, Offset: 3}) {
		t.Fatalf("cursor after restore + dispatch = %+v", c)
	}

	if err := g.Restore(nopCloser{bytes.NewReader([]byte(`{"format":9,"state":{}}`))}); err == nil {
		t.Fatal("restore of an unknown snapshot format succeeded")
	}
}

type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Close() error  { return nil }
func (m *memSink) Cancel() error { m.cancelled = true; return nil }

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

// Rewind takes the state back to a resume point: step, version and cursor as given, later groups
// and batches as recorded, checkpoints after it dropped, every group from then on under attempts
// above any used before; the same rewind again is a no-op, one ahead of the run is refused.
// applier applies commands to *s as the next log entries, failing the test on a rejection.
func applier(t *testing.T, s *State) func(Command) Result {
	return func(c Command) Result {
		t.Helper()
		r := s.apply(s.Applied+1, c)
		if r.Error != "" {
			t.Fatalf("%s: %s", c.Type, r.Error)
		}
		return r
	}
}

func TestRewind(t *testing.T) {
	s := newState()
	at := time.Unix(100, 0)
	mustApply := applier(t, &s)
	mustApply(NewInitRun(at, InitRun{RunID: "r", Seed: 1, PromptCount: 10}))
	mustApply(NewDispatchBatch(at, DispatchBatch{BatchID: "s0", Step: 0, Count: 2}))
	mustApply(NewRedispatch(at, Redispatch{Key: GroupKey(0, 0), Attempt: 2}))
	mustApply(NewRedispatch(at, Redispatch{Key: GroupKey(0, 0), Attempt: 3}))
	mustApply(NewStepDone(at, StepDone{Step: 0, PolicyVersion: 1, Learned: []string{GroupKey(0, 0), GroupKey(0, 1)}}))
	mustApply(NewCommitCheckpoint(at, CommitCheckpoint{Step: 0, Key: "ck0", PolicyVersion: 1}))
	snap := s.Clone() // what a checkpoint of step 0 records
	mustApply(NewDispatchBatch(at, DispatchBatch{BatchID: "s1", Step: 1, Count: 2}))
	mustApply(NewStepDone(at, StepDone{Step: 1, PolicyVersion: 2, Learned: []string{GroupKey(1, 2), GroupKey(1, 3)}}))
	mustApply(NewCommitCheckpoint(at, CommitCheckpoint{Step: 1, Key: "ck1", PolicyVersion: 2}))
	mustApply(NewDispatchBatch(at, DispatchBatch{BatchID: "s2", Step: 2, Count: 2}))

	rw := ResumePoint("learner-2", snap, 0, 1)
	if rw.Step != 1 || rw.PolicyVersion != 1 || rw.Cursor != snap.Cursor || len(rw.Groups) != 0 {
		t.Fatalf("resume point %+v", rw)
	}
	if r := s.apply(s.Applied+1, NewRewind(at, Rewind{ID: "ahead", Step: 5, PolicyVersion: 5})); r.Error == "" {
		t.Error("a rewind ahead of the run was applied")
	}
	// The state is ahead of the resume point, so the rewind hands everything out under attempts
	// past the 3 used: a learner resuming there takes samples of dispatch attempt 3 and up only
	// (the wire's attempt is the group's attempts less one).
	if !s.AheadOf(rw) || s.AttemptFloor(rw) != 3 {
		t.Errorf("before the rewind: ahead %v, attempt floor %d, want true and 3", s.AheadOf(rw), s.AttemptFloor(rw))
	}
	if fresh := (Rewind{ID: "fresh", Step: 2, PolicyVersion: 2}); s.AheadOf(fresh) || s.AttemptFloor(fresh) != 0 {
		t.Errorf("a resume point at the state's progress: ahead %v, attempt floor %d, want false and 0", s.AheadOf(fresh), s.AttemptFloor(fresh))
	}
	mustApply(NewRewind(at, rw))
	if s.AheadOf(rw) || s.AttemptFloor(rw) != 3 {
		t.Errorf("after the rewind: ahead %v, attempt floor %d, want false and 3", s.AheadOf(rw), s.AttemptFloor(rw))
	}
	if s.Step != 1 || s.PolicyVersion != 1 || s.Cursor != snap.Cursor || len(s.Groups) != 0 || len(s.Batches) != 0 {
		t.Fatalf("after rewind: step %d version %d cursor %+v groups %v batches %v", s.Step, s.PolicyVersion, s.Cursor, s.Groups, s.Batches)
	}
	if cp, _ := s.LatestCheckpoint(); cp.Key != "ck0" {
		t.Errorf("latest checkpoint %q, want ck0 (ck1 is past the rewind)", cp.Key)
	}
	// Step 1 is dispatched again: the same prompts (cursor) under attempts above the 3 used.
	r := mustApply(NewDispatchBatch(at, DispatchBatch{BatchID: "s1", Step: 1, Count: 2}))
	if len(r.Groups) != 2 || r.Groups[0].PromptIndex != 2 || r.Groups[0].Attempts != 4 {
		t.Fatalf("re-dispatched step 1: %+v, want prompts 2 and 3 at attempt 4", r.Groups)
	}
	if r := mustApply(NewRewind(at, rw)); !r.Noop {
		t.Error("the same rewind again changed the state")
	}
}

// TestFinalStepEndsTheRun: a step reported as final (the learner's time budget) ends the run
// before its step count; the report retried is a no-op, a later step is refused, and a rewind to
// an earlier step (a learner resuming before the final step) opens the run again.
func TestFinalStepEndsTheRun(t *testing.T) {
	s := newState()
	at := time.Unix(100, 0)
	mustApply := applier(t, &s)
	mustApply(NewInitRun(at, InitRun{RunID: "r", Seed: 1, PromptCount: 10}))
	mustApply(NewStepDone(at, StepDone{Step: 0, PolicyVersion: 1}))
	snap := s.Clone()
	if s.Ended || s.Over(10) || !s.Over(1) {
		t.Fatalf("after step 0 of 10: ended %v, over(10) %v, over(1) %v", s.Ended, s.Over(10), s.Over(1))
	}
	final := NewStepDone(at, StepDone{Step: 1, PolicyVersion: 2, Final: true})
	mustApply(final)
	if !s.Ended || !s.Over(10) || s.Step != 2 {
		t.Fatalf("after the final step 1: ended %v, over(10) %v, step %d", s.Ended, s.Over(10), s.Step)
	}
	if r := mustApply(final); !r.Noop || !s.Ended {
		t.Errorf("the final report retried: %+v, ended %v", r, s.Ended)
	}
	if r := s.apply(s.Applied+1, NewStepDone(at, StepDone{Step: 2, PolicyVersion: 3})); !strings.Contains(r.Error, "ended with step 1") {
		t.Errorf("a step after the final one: %q", r.Error)
	}
	// The final report again onto a state restored with the step but not the end (a
	// coordinator resumed from the final checkpoint's snapshot) ends the run.
	s = s.Clone()
	s.Ended = false
	if r := mustApply(final); r.Noop || !s.Ended {
		t.Errorf("the final report onto a restored state: %+v, ended %v", r, s.Ended)
	}
	mustApply(NewRewind(at, ResumePoint("learner-2", snap, 0, 1)))
	if s.Ended || s.Step != 1 || s.Over(10) {
		t.Errorf("rewound to step 1: ended %v, step %d", s.Ended, s.Step)
	}
}
