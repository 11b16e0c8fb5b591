package runstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// CommandVersion is the command encoding this build writes and applies. A node refuses (as a
// deterministic rejection, never a panic) entries of a version it does not know, so a mixed-version
// cluster cannot silently diverge.
const CommandVersion = 1

// CommandType names a command.
type CommandType string

// Command types.
const (
	CmdInitRun          CommandType = "init_run"
	CmdDispatchBatch    CommandType = "dispatch_batch"
	CmdRedispatch       CommandType = "redispatch"
	CmdGroupsScored     CommandType = "groups_scored"
	CmdStepDone         CommandType = "step_done"
	CmdCommitCheckpoint CommandType = "commit_checkpoint"
	CmdHeartbeat        CommandType = "heartbeat"
	CmdExpireLeases     CommandType = "expire_leases"
	CmdSetMember        CommandType = "set_member"
	CmdRewind           CommandType = "rewind"
)

// Command is one raft log entry. Exactly the payload field that matches Type is set. At is the
// command's time, chosen by whoever proposes it: Apply never reads the clock, so every replica
// computes the same state.
type Command struct {
	Type    CommandType `json:"type"`
	Version int         `json:"version"`
	At      time.Time   `json:"at"`

	InitRun          *InitRun          `json:"init_run,omitempty"`
	DispatchBatch    *DispatchBatch    `json:"dispatch_batch,omitempty"`
	Redispatch       *Redispatch       `json:"redispatch,omitempty"`
	GroupsScored     *GroupsScored     `json:"groups_scored,omitempty"`
	StepDone         *StepDone         `json:"step_done,omitempty"`
	CommitCheckpoint *CommitCheckpoint `json:"commit_checkpoint,omitempty"`
	Heartbeat        *Heartbeat        `json:"heartbeat,omitempty"`
	ExpireLeases     *ExpireLeases     `json:"expire_leases,omitempty"`
	SetMember        *SetMember        `json:"set_member,omitempty"`
	Rewind           *Rewind           `json:"rewind,omitempty"`
}

// InitRun starts a run. Re-applying it for the same run id is a no-op; a different run id is
// rejected, so two coordinators racing to start runs cannot overwrite each other.
type InitRun struct {
	RunID       string          `json:"run_id"`
	Seed        uint64          `json:"seed"`
	Config      json.RawMessage `json:"config,omitempty"` // opaque to this package
	PromptCount int64           `json:"prompt_count"`     // prompts in the training file; the cursor wraps here
}

// DispatchBatch assigns the next Count prompts (from the cursor, wrapping into the next epoch) to
// step Step as one batch. BatchID makes it idempotent: a retried dispatch returns the groups it
// assigned the first time and moves nothing.
type DispatchBatch struct {
	BatchID string `json:"batch_id"`
	Step    int64  `json:"step"`
	Count   int    `json:"count"`
}

// Redispatch hands a straggling group out again. Attempt is the attempt number this dispatch
// starts (the group's current attempts + 1), which makes a retried Redispatch a no-op.
type Redispatch struct {
	Key     string `json:"key"`
	Attempt int    `json:"attempt"`
}

// GroupsScored marks groups whose rewards are all in.
type GroupsScored struct {
	Keys []string `json:"keys"`
}

// StepDone records that the learner finished step Step having learned the groups in Learned: the
// step advances by one, the policy version becomes PolicyVersion (0: current + 1) and the learned
// groups are dropped. A StepDone for an already finished step is a no-op, so a retried apply never
// learns a step twice.
type StepDone struct {
	Step          int64    `json:"step"`
	PolicyVersion int64    `json:"policy_version"`
	Learned       []string `json:"learned"`
	// Final: the learner ends the run with this step (State.Ended).
	Final bool `json:"final,omitempty"`
}

// CommitCheckpoint records a checkpoint whose manifest is durably written.
type CommitCheckpoint struct {
	Step          int64   `json:"step"`
	Key           string  `json:"key"`
	PolicyVersion int64   `json:"policy_version"`
	EvalScore     float64 `json:"eval_score"`
}

// Heartbeat renews (or takes) a worker's lease until At + TTL.
type Heartbeat struct {
	WorkerID string        `json:"worker_id"`
	Role     string        `json:"role"`
	TTL      time.Duration `json:"ttl"`
}

// ExpireLeases drops every lease that expired at or before the command's time.
type ExpireLeases struct{}

// SetMember records (or, with Remove, forgets) how to reach a coordinator over HTTP, so followers
// can forward commands to whoever leads.
type SetMember struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr"`
	Remove   bool   `json:"remove,omitempty"`
}

// Rewind takes the run back to where a restarted learner resumes (its newest checkpoint, or the
// start): the step and policy version after it, the prompt cursor and the in-flight groups and
// batches of later steps as that checkpoint recorded them. Everything the state held beyond it is
// dropped, and every group from then on is dispatched under attempt numbers higher than any used
// before, so its tasks and samples get message ids JetStream has not seen: the dead learner's
// groups are handed out and learned again, none twice by the new learner. ID (the learner's
// incarnation) makes it idempotent.
type Rewind struct {
	ID            string           `json:"id"`
	Step          int64            `json:"step"`
	PolicyVersion int64            `json:"policy_version"`
	Cursor        Cursor           `json:"cursor"`
	Groups        []Group          `json:"groups,omitempty"`
	Batches       map[string]int64 `json:"batches,omitempty"`
}

// Result is what applying a command produced. A command the state refuses (bad input, out of order)
// yields a Result with Error set on every replica alike; Apply turns it into an ErrRejected error.
type Result struct {
	Index         uint64   `json:"index"`
	Noop          bool     `json:"noop,omitempty"` // the command had already taken effect
	Groups        []Group  `json:"groups,omitempty"`
	Expired       []string `json:"expired,omitempty"`
	Step          int64    `json:"step"`
	PolicyVersion int64    `json:"policy_version"`
	Error         string   `json:"error,omitempty"`
}

// ErrRejected wraps a command the run state refused.
var ErrRejected = errors.New("command rejected")

// Err returns the rejection as an error, nil when the command was accepted.
func (r Result) Err() error {
	if r.Error == "" {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrRejected, r.Error)
}

func newCommand(t CommandType, at time.Time) Command {
	return Command{Type: t, Version: CommandVersion, At: at.UTC()}
}

// NewInitRun builds an InitRun command.
func NewInitRun(at time.Time, c InitRun) Command {
	cmd := newCommand(CmdInitRun, at)
	cmd.InitRun = &c
	return cmd
}

// NewDispatchBatch builds a DispatchBatch command.
func NewDispatchBatch(at time.Time, c DispatchBatch) Command {
	cmd := newCommand(CmdDispatchBatch, at)
	cmd.DispatchBatch = &c
	return cmd
}

// NewRedispatch builds a Redispatch command.
func NewRedispatch(at time.Time, c Redispatch) Command {
	cmd := newCommand(CmdRedispatch, at)
	cmd.Redispatch = &c
	return cmd
}

// NewGroupsScored builds a GroupsScored command.
func NewGroupsScored(at time.Time, keys ...string) Command {
	cmd := newCommand(CmdGroupsScored, at)
	cmd.GroupsScored = &GroupsScored{Keys: keys}
	return cmd
}

// NewStepDone builds a StepDone command.
func NewStepDone(at time.Time, c StepDone) Command {
	cmd := newCommand(CmdStepDone, at)
	cmd.StepDone = &c
	return cmd
}

// NewCommitCheckpoint builds a CommitCheckpoint command.
func NewCommitCheckpoint(at time.Time, c CommitCheckpoint) Command {
	cmd := newCommand(CmdCommitCheckpoint, at)
	cmd.CommitCheckpoint = &c
	return cmd
}

// NewHeartbeat builds a Heartbeat command.
func NewHeartbeat(at time.Time, c Heartbeat) Command {
	cmd := newCommand(CmdHeartbeat, at)
	cmd.Heartbeat = &c
	return cmd
}

// NewExpireLeases builds an ExpireLeases command.
func NewExpireLeases(at time.Time) Command {
	cmd := newCommand(CmdExpireLeases, at)
	cmd.ExpireLeases = &ExpireLeases{}
	return cmd
}

// NewSetMember builds a SetMember command.
func NewSetMember(at time.Time, c SetMember) Command {
	cmd := newCommand(CmdSetMember, at)
	cmd.SetMember = &c
	return cmd
}

// NewRewind builds a Rewind command.
func NewRewind(at time.Time, c Rewind) Command {
	cmd := newCommand(CmdRewind, at)
	cmd.Rewind = &c
	return cmd
}

// Validate checks the command's shape (not its fit to the current state): a known type and version,
// a time, and exactly the matching payload.
func (c Command) Validate() error {
	if c.Version != CommandVersion {
		return fmt.Errorf("command %q: version %d, this build applies version %d", c.Type, c.Version, CommandVersion)
	}
	if c.At.IsZero() {
		return fmt.Errorf("command %q: no time (At)", c.Type)
	}
	payloads := map[CommandType]bool{
		CmdInitRun:          c.InitRun != nil,
		CmdDispatchBatch:    c.DispatchBatch != nil,
		CmdRedispatch:       c.Redispatch != nil,
		CmdGroupsScored:     c.GroupsScored != nil,
		CmdStepDone:         c.StepDone != nil,
		CmdCommitCheckpoint: c.CommitCheckpoint != nil,
		CmdHeartbeat:        c.Heartbeat != nil,
		CmdExpireLeases:     c.ExpireLeases != nil,
		CmdSetMember:        c.SetMember != nil,
		CmdRewind:           c.Rewind != nil,
	}
	set, known := payloads[c.Type]
	if !known {
		return fmt.Errorf("unknown command type %q", c.Type)
	}
	if !set {
		return fmt.Errorf("command %q: missing its payload", c.Type)
	}
	n := 0
	for _, v := range payloads {
		if v {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("command %q: %d payloads set, want exactly one", c.Type, n)
	}
	return nil
}

// Encode returns the command's log-entry bytes.
func (c Command) Encode() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode command %q: %w", c.Type, err)
	}
	return b, nil
}

// DecodeCommand parses log-entry bytes.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if err := json.Unmarshal(b, &c); err != nil {
		return Command{}, fmt.Errorf("decode command: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Command{}, err
	}
	return c, nil
}
