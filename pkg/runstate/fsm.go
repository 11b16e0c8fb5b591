package runstate

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/bicot-rl/bicot/pkg/config"
)

// FSM is the raft state machine over State. Apply is deterministic: it reads only the log entry
// (the command carries its time) and the current state.
type FSM struct {
	mu sync.RWMutex
	st State
	// stepped is signalled (never blocking, one pending signal kept) when an entry moves the
	// run to another step, so the leader dispatches the next step's tasks at once instead of at
	// its next tick.
	stepped chan struct{}
}

// NewFSM returns an FSM holding the empty state.
func NewFSM() *FSM { return &FSM{st: newState(), stepped: make(chan struct{}, 1)} }

// Stepped delivers a signal after an applied entry changed the run's step.
func (f *FSM) Stepped() <-chan struct{} { return f.stepped }

// State returns a deep copy of the applied state.
func (f *FSM) State() State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.Clone()
}

func (f *FSM) memberHTTP(id string) (string, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	m, ok := f.st.Members[id]
	if !ok || m.HTTPAddr == "" {
		return "", false
	}
	return m.HTTPAddr, true
}

// Apply implements raft.FSM. It returns a Result (never an error value), so every replica and the
// proposer see the same outcome.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return Result{Index: l.Index}
	}
	cmd, err := DecodeCommand(l.Data)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.st.Applied = l.Index
		return Result{Index: l.Index, Step: f.st.Step, PolicyVersion: f.st.PolicyVersion, Error: err.Error()}
	}
	before := f.st.Step
	r := f.st.apply(l.Index, cmd)
	if f.st.Step != before {
		select {
		case f.stepped <- struct{}{}:
		default:
		}
	}
	return r
}

// Snapshot implements raft.FSM: the state is copied under the lock and encoded in Persist, which
// raft runs concurrently with later Applies.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{st: f.State()}, nil
}

// Restore implements raft.FSM.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, err := DecodeSnapshot(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.st = st
	f.mu.Unlock()
	return nil
}

// snapshotFormat versions the snapshot encoding, like CommandVersion does for log entries.
const snapshotFormat = 1

type snapshotFile struct {
	Format int   `json:"format"`
	State  State `json:"state"`
}

// EncodeSnapshot writes st in the snapshot format.
func EncodeSnapshot(w io.Writer, st State) error {
	if err := json.NewEncoder(w).Encode(snapshotFile{Format: snapshotFormat, State: st}); err != nil {
		return fmt.Errorf("encode run-state snapshot: %w", err)
	}
	return nil
}

// DecodeSnapshot reads a snapshot written by EncodeSnapshot.
func DecodeSnapshot(r io.Reader) (State, error) {
	var sf snapshotFile
	if err := json.NewDecoder(r).Decode(&sf); err != nil {
		return State{}, fmt.Errorf("decode run-state snapshot: %w", err)
	}
	if sf.Format != snapshotFormat {
		return State{}, fmt.Errorf("run-state snapshot format %d, this build reads %d", sf.Format, snapshotFormat)
	}
	return sf.State.Clone(), nil
}

type fsmSnapshot struct{ st State }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := EncodeSnapshot(sink, s.st); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// apply changes the state by one command. Rejections leave the state untouched apart from Applied.
func (s *State) apply(index uint64, c Command) Result {
	s.Applied = index
	var r Result
	var err error
	switch c.Type {
	case CmdInitRun:
		r, err = s.initRun(c)
	case CmdDispatchBatch:
		r, err = s.dispatchBatch(c)
	case CmdRedispatch:
		r, err = s.redispatch(c)
	case CmdGroupsScored:
		r, err = s.groupsScored(c)
	case CmdStepDone:
		r, err = s.stepDone(c)
	case CmdCommitCheckpoint:
		r, err = s.commitCheckpoint(c)
	case CmdHeartbeat:
		r, err = s.heartbeat(c)
	case CmdExpireLeases:
		r = s.expireLeases(c)
	case CmdSetMember:
		r, err = s.setMember(c)
	case CmdRewind:
		r, err = s.rewind(c)
	default:
		err = fmt.Errorf("unknown command type %q", c.Type)
	}
	if err != nil {
		r = Result{Error: fmt.Sprintf("%s: %v", c.Type, err)}
	}
	r.Index = index
	r.Step = s.Step
	r.PolicyVersion = s.PolicyVersion
	return r
}

func (s *State) initRun(c Command) (Result, error) {
	p := c.InitRun
	if p.RunID == "" {
		return Result{}, fmt.Errorf("empty run id")
	}
	if p.PromptCount <= 0 {
		return Result{}, fmt.Errorf("prompt count %d, want > 0", p.PromptCount)
	}
	if len(p.Config) > 0 && !json.Valid(p.Config) {
		return Result{}, fmt.Errorf("run %s: config is not valid JSON", p.RunID)
	}
	if s.RunID != "" {
		if s.RunID == p.RunID {
			return Result{Noop: true}, nil
		}
		return Result{}, fmt.Errorf("run %s already initialised, refusing run %s", s.RunID, p.RunID)
	}
	s.RunID = p.RunID
	s.Seed = p.Seed
	s.Config = slices.Clone(p.Config)
	s.PromptCount = p.PromptCount
	s.Started = c.At
	return Result{}, nil
}

func (s *State) dispatchBatch(c Command) (Result, error) {
	p := c.DispatchBatch
	switch {
	case s.RunID == "":
		return Result{}, fmt.Errorf("no run initialised")
	case p.BatchID == "":
		return Result{}, fmt.Errorf("empty batch id")
	case p.Count <= 0 || p.Count > config.MaxPromptsPerTask || int64(p.Count) > s.PromptCount:
		// A batch is one rollout task: the bound keeps a command of a few bytes from making every
		// replica allocate (and replay, after each restart) billions of groups.
		return Result{}, fmt.Errorf("batch %s: count %d, want 1..%d (the prompts in the file, at most %d per task)",
			p.BatchID, p.Count, min(s.PromptCount, config.MaxPromptsPerTask), config.MaxPromptsPerTask)
	}
	if step, ok := s.Batches[p.BatchID]; ok {
		var gs []Group
		for _, g := range s.Groups {
			if g.BatchID == p.BatchID {
				gs = append(gs, g)
			}
		}
		// In dispatch order, as the first answer listed them.
		slices.SortFunc(gs, func(a, b Group) int {
			if a.Epoch != b.Epoch {
				return cmpInt(a.Epoch, b.Epoch)
			}
			return cmpInt(a.PromptIndex, b.PromptIndex)
		})
		if step != p.Step {
			return Result{}, fmt.Errorf("batch %s already dispatched for step %d, not %d", p.BatchID, step, p.Step)
		}
		return Result{Noop: true, Groups: gs}, nil
	}
	if p.Step < s.Step {
		return Result{}, fmt.Errorf("batch %s: step %d is already learned (run is at step %d)", p.BatchID, p.Step, s.Step)
	}
	// Check every key first so a rejected batch moves nothing.
	cur := s.Cursor
	keys := make([]int64, 0, p.Count)
	for range p.Count {
		if _, dup := s.Groups[GroupKey(p.Step, cur.Offset)]; dup {
			return Result{}, fmt.Errorf("batch %s: group %s already in flight", p.BatchID, GroupKey(p.Step, cur.Offset))
		}
		keys = append(keys, cur.Offset)
		cur = s.advance(cur)
	}
	epochs := s.Cursor
	gs := make([]Group, 0, p.Count)
	for _, idx := range keys {
		g := Group{
			Step: p.Step, PromptIndex: idx, Epoch: epochs.Epoch, BatchID: p.BatchID,
			DispatchedAt: c.At, Attempts: 1 + s.AttemptBase, Status: GroupDispatched,
		}
		s.MaxAttempts = max(s.MaxAttempts, g.Attempts)
		s.Groups[g.Key()] = g
		gs = append(gs, g)
		epochs = s.advance(epochs)
	}
	s.Cursor = cur
	s.Batches[p.BatchID] = p.Step
	return Result{Groups: gs}, nil
}

func (s *State) advance(c Cursor) Cursor {
	c.Offset++
	if c.Offset >= s.PromptCount {
		c.Offset = 0
		c.Epoch++
	}
	return c
}

func (s *State) redispatch(c Command) (Result, error) {
	p := c.Redispatch
	g, ok := s.Groups[p.Key]
	if !ok {
		return Result{}, fmt.Errorf("group %q not in flight", p.Key)
	}
	switch {
	case p.Attempt <= g.Attempts:
		return Result{Noop: true, Groups: []Group{g}}, nil
	case p.Attempt != g.Attempts+1:
		return Result{}, fmt.Errorf("group %s: attempt %d after %d attempts, want %d", p.Key, p.Attempt, g.Attempts, g.Attempts+1)
	case g.Status == GroupLearned:
		return Result{}, fmt.Errorf("group %s already learned", p.Key)
	}
	g.Attempts = p.Attempt
	s.MaxAttempts = max(s.MaxAttempts, g.Attempts)
	g.DispatchedAt = c.At
	g.Status = GroupDispatched
	s.Groups[p.Key] = g
	return Result{Groups: []Group{g}}, nil
}

func (s *State) groupsScored(c Command) (Result, error) {
	for _, k := range c.GroupsScored.Keys {
		if _, ok := s.Groups[k]; !ok {
			return Result{}, fmt.Errorf("group %q not in flight", k)
		}
	}
	var changed []Group
	for _, k := range c.GroupsScored.Keys {
		g := s.Groups[k]
		if g.Status == GroupDispatched {
			g.Status = GroupScored
			s.Groups[k] = g
			changed = append(changed, g)
		}
	}
	return Result{Noop: len(changed) == 0, Groups: changed}, nil
}

func (s *State) stepDone(c Command) (Result, error) {
	p := c.StepDone
	switch {
	case s.RunID == "":
		return Result{}, fmt.Errorf("no run initialised")
	case p.Step < s.Step:
		if p.Final && p.Step == s.Step-1 && !s.Ended {
			// The last step's report again, from a learner resumed from its checkpoint, onto
			// a state that had the step but not the end (restored from the checkpoint's
			// snapshot, taken before the step was reported).
			s.Ended = true
			return Result{}, nil
		}
		return Result{Noop: true}, nil
	case p.Step > s.Step:
		return Result{}, fmt.Errorf("step %d finished but the run is at step %d", p.Step, s.Step)
	case s.Ended:
		return Result{}, fmt.Errorf("step %d finished but the run ended with step %d", p.Step, s.Step-1)
	}
	pv := p.PolicyVersion
	if pv == 0 {
		pv = s.PolicyVersion + 1
	}
	if pv <= s.PolicyVersion {
		return Result{}, fmt.Errorf("step %d: policy version %d does not advance %d", p.Step, pv, s.PolicyVersion)
	}
	var learned []Group
	for _, k := range p.Learned {
		if g, ok := s.Groups[k]; ok {
			g.Status = GroupLearned
			learned = append(learned, g)
			delete(s.Groups, k)
		}
	}
	s.Step++
	s.PolicyVersion = pv
	s.Ended = p.Final
	// Batch ids of finished steps can go: a dispatch for a finished step is refused anyway.
	for id, step := range s.Batches {
		if step < s.Step {
			delete(s.Batches, id)
		}
	}
	sortGroups(learned)
	return Result{Groups: learned}, nil
}

func (s *State) commitCheckpoint(c Command) (Result, error) {
	p := c.CommitCheckpoint
	if p.Key == "" {
		return Result{}, fmt.Errorf("step %d: empty checkpoint key", p.Step)
	}
	cp := Checkpoint{Step: p.Step, Key: p.Key, PolicyVersion: p.PolicyVersion, EvalScore: p.EvalScore, Time: c.At}
	i, found := slices.BinarySearchFunc(s.Checkpoints, p.Step, func(c Checkpoint, step int64) int { return cmpInt(c.Step, step) })
	if found {
		old := s.Checkpoints[i]
		if old.Key == cp.Key && old.PolicyVersion == cp.PolicyVersion && old.EvalScore == cp.EvalScore {
			return Result{Noop: true}, nil
		}
		s.Checkpoints[i] = cp
		return Result{}, nil
	}
	s.Checkpoints = slices.Insert(s.Checkpoints, i, cp)
	return Result{}, nil
}

func (s *State) heartbeat(c Command) (Result, error) {
	p := c.Heartbeat
	if p.WorkerID == "" {
		return Result{}, fmt.Errorf("empty worker id")
	}
	if p.TTL <= 0 {
		return Result{}, fmt.Errorf("worker %s: lease ttl %v, want > 0", p.WorkerID, p.TTL)
	}
	exp := c.At.Add(p.TTL)
	if exp.Year() > 9999 {
		// Such a time has no JSON form: the state could never be snapshotted again.
		return Result{}, fmt.Errorf("worker %s: lease ttl %v from %s ends after the year 9999", p.WorkerID, p.TTL, c.At.Format(time.RFC3339))
	}
	if old, ok := s.Workers[p.WorkerID]; ok && old.Expires.After(exp) {
		// A delayed, older heartbeat never shortens a lease.
		exp = old.Expires
	}
	s.Workers[p.WorkerID] = Lease{Role: p.Role, Expires: exp}
	return Result{}, nil
}

func (s *State) expireLeases(c Command) Result {
	var gone []string
	for id, l := range s.Workers {
		if !l.Expires.After(c.At) {
			gone = append(gone, id)
			delete(s.Workers, id)
		}
	}
	slices.Sort(gone)
	return Result{Expired: gone, Noop: len(gone) == 0}
}

func (s *State) setMember(c Command) (Result, error) {
	p := c.SetMember
	if p.ID == "" {
		return Result{}, fmt.Errorf("empty member id")
	}
	if p.Remove {
		if _, ok := s.Members[p.ID]; !ok {
			return Result{Noop: true}, nil
		}
		delete(s.Members, p.ID)
		return Result{}, nil
	}
	m := Member{RaftAddr: p.RaftAddr, HTTPAddr: p.HTTPAddr}
	if s.Members[p.ID] == m {
		return Result{Noop: true}, nil
	}
	s.Members[p.ID] = m
	return Result{}, nil
}

func (s *State) rewind(c Command) (Result, error) {
	p := c.Rewind
	switch {
	case s.RunID == "":
		return Result{}, fmt.Errorf("no run initialised")
	case p.ID == "":
		return Result{}, fmt.Errorf("empty rewind id")
	case p.ID == s.LastRewind:
		return Result{Noop: true}, nil
	case p.Step < 0 || p.PolicyVersion < 0:
		return Result{}, fmt.Errorf("rewind %s: step %d, policy version %d", p.ID, p.Step, p.PolicyVersion)
	case p.Step > s.Step:
		return Result{}, fmt.Errorf("rewind %s: step %d is ahead of the run (step %d)", p.ID, p.Step, s.Step)
	case p.Cursor.Offset < 0 || p.Cursor.Offset >= s.PromptCount || p.Cursor.Epoch < 0:
		return Result{}, fmt.Errorf("rewind %s: cursor %+v outside the %d prompts", p.ID, p.Cursor, s.PromptCount)
	}
	s.LastRewind = p.ID
	s.AttemptBase = s.MaxAttempts
	if p.Step < s.Step {
		// The steps learned again include the one that ended the run; it ends it again.
		s.Ended = false
	}
	s.Step, s.PolicyVersion, s.Cursor = p.Step, p.PolicyVersion, p.Cursor
	s.Groups = map[string]Group{}
	var out []Group
	for _, g := range p.Groups {
		if g.Step < p.Step {
			continue
		}
		// Handed out again under a new attempt as soon as a coordinator republishes.
		g.Status, g.Attempts, g.DispatchedAt = GroupDispatched, 1+s.AttemptBase, c.At
		s.Groups[g.Key()] = g
		out = append(out, g)
	}
	if len(out) > 0 {
		s.MaxAttempts = 1 + s.AttemptBase
	}
	s.Batches = map[string]int64{}
	for id, step := range p.Batches {
		if step >= p.Step {
			s.Batches[id] = step
		}
	}
	var cps []Checkpoint
	for _, cp := range s.Checkpoints {
		if cp.Step < p.Step {
			cps = append(cps, cp)
		}
	}
	s.Checkpoints = cps
	sortGroups(out)
	return Result{Groups: out}, nil
}

// AheadOf says whether s holds progress past rw, where a restarted learner resumes: a later step
// or policy version, or a group of rw's step or later past dispatch. The coordinator rewinds such
// a state to rw; a state that is not ahead still has everything the learner needs in flight.
func (s State) AheadOf(rw Rewind) bool {
	if s.Step > rw.Step || s.PolicyVersion > rw.PolicyVersion {
		return true
	}
	for _, g := range s.Groups {
		if g.Step >= rw.Step && g.Status != GroupDispatched {
			return true
		}
	}
	return false
}

// AttemptFloor is the lowest dispatch attempt (bus.BatchTask.Attempt, a group's attempts less
// one) of the tasks the run hands out once the coordinator has answered a learner resuming at rw.
// A rewind dispatches every group under attempts past all used before, so the samples of lower
// attempts come from tasks handed out for the learner being replaced, past its checkpoint: the
// rewound run hands those prompts out again from its own cursor, and a learner that took the old
// samples would train a prompt the run's cursor still counts as unused. Without a rewind the
// attempts since the last one stay valid. (A group re-dispatched between reading s and the
// rewind gets an attempt at the floor and is not told apart.)
func (s State) AttemptFloor(rw Rewind) int {
	if s.LastRewind != rw.ID && s.AheadOf(rw) {
		return s.MaxAttempts
	}
	return s.AttemptBase
}

// ResumePoint is the Rewind to the state snap recorded with a checkpoint of step (trained, policy
// at version): the step after it, the cursor where it was and the groups and batches of later
// steps still in flight then. A learner resuming without a checkpoint rewinds to the start
// (step 0, version, cursor 0, nothing in flight) with an empty snap.
func ResumePoint(id string, snap State, step, version int64) Rewind {
	r := Rewind{ID: id, Step: step + 1, PolicyVersion: version, Cursor: snap.Cursor, Batches: map[string]int64{}}
	for _, g := range snap.Groups {
		if g.Step > step {
			r.Groups = append(r.Groups, g)
		}
	}
	sortGroups(r.Groups)
	for bid, s := range snap.Batches {
		if s > step {
			r.Batches[bid] = s
		}
	}
	return r
}
