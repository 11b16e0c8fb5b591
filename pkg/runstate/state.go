// Package runstate is the coordinator's replicated run state: what run is going on, which step and
// policy version it is at, where the prompt cursor stands, which prompt groups are in flight, which
// checkpoints are committed and which workers hold leases. It is a hashicorp/raft finite-state
// machine (fsm.go) fed by versioned JSON commands (commands.go), a Node that runs raft over TCP with a
// durable bolt log and file snapshots (node.go), a small HTTP endpoint through which followers forward
// commands to the leader (http.go), and a Client that workers use to find and follow the leader
// given any list of coordinator addresses (client.go).
//
// Every command carries its own time and every command that a caller may retry is idempotent
// (batch ids, attempt numbers, step numbers), so a command that is applied once, forwarded twice or
// retried after a leader change changes the state exactly once.
package runstate

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
)

// GroupStatus is where a prompt group is in its life: dispatched to rollout, scored by reward
// workers, or learned (consumed by a learner step; learned groups are dropped at StepDone).
type GroupStatus string

// Group statuses.
const (
	GroupDispatched GroupStatus = "dispatched"
	GroupScored     GroupStatus = "scored"
	GroupLearned    GroupStatus = "learned"
)

// Cursor is the position in the prompt file: Offset is the index of the next prompt to dispatch,
// Epoch counts completed passes over the file.
type Cursor struct {
	Epoch  int64 `json:"epoch"`
	Offset int64 `json:"offset"`
}

// Group is one prompt in flight: G samples of one prompt at one step.
type Group struct {
	Step         int64       `json:"step"`
	PromptIndex  int64       `json:"prompt_index"`
	Epoch        int64       `json:"epoch"`
	BatchID      string      `json:"batch_id"`
	DispatchedAt time.Time   `json:"dispatched_at"`
	Attempts     int         `json:"attempts"`
	Status       GroupStatus `json:"status"`
}

// Key is the group's identity, "step/promptIndex".
func (g Group) Key() string { return GroupKey(g.Step, g.PromptIndex) }

// GroupKey builds the key of the group for prompt promptIndex dispatched at step.
func GroupKey(step, promptIndex int64) string { return fmt.Sprintf("%d/%d", step, promptIndex) }

// Checkpoint is a committed checkpoint: Key is the manifest key (or the prefix) in the object store.
type Checkpoint struct {
	Step          int64     `json:"step"`
	Key           string    `json:"key"`
	PolicyVersion int64     `json:"policy_version"`
	EvalScore     float64   `json:"eval_score"`
	Time          time.Time `json:"time"`
}

// Lease is a worker's claim to be alive until Expires.
type Lease struct {
	Role    string    `json:"role"`
	Expires time.Time `json:"expires"`
}

// Member is how to reach a coordinator besides raft: its HTTP address for forwarded commands.
type Member struct {
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr"`
}

// State is the whole replicated run state. The zero State is a cluster with no run yet.
type State struct {
	RunID         string          `json:"run_id"`
	Seed          uint64          `json:"seed"`
	Config        json.RawMessage `json:"config,omitempty"`
	Started       time.Time       `json:"started"`
	Step          int64           `json:"step"`
	PolicyVersion int64           `json:"policy_version"`
	// Ended says the learner ended the run with step Step-1 before the configured step count
	// (its time budget, config.TimeBudget): nothing more is dispatched.
	Ended       bool              `json:"ended,omitempty"`
	Cursor      Cursor            `json:"cursor"`
	PromptCount int64             `json:"prompt_count"`
	Groups      map[string]Group  `json:"groups"`
	Batches     map[string]int64  `json:"batches"` // batch id -> step, so a retried dispatch is a no-op
	Checkpoints []Checkpoint      `json:"checkpoints"`
	Workers     map[string]Lease  `json:"workers"`
	Members     map[string]Member `json:"members"`
	Applied     uint64            `json:"applied"` // raft index of the last applied command
	// AttemptBase is added to every group's attempts from the last Rewind on, and MaxAttempts is
	// the highest attempt number any group reached: a rewound run's message ids never repeat.
	AttemptBase int    `json:"attempt_base,omitempty"`
	MaxAttempts int    `json:"max_attempts,omitempty"`
	LastRewind  string `json:"last_rewind,omitempty"` // the last Rewind's id
}

// Over says whether the run of steps steps is over: all of them learned, or ended early.
func (s State) Over(steps int) bool { return s.Ended || s.Step >= int64(steps) }

func newState() State {
	return State{
		Groups:  map[string]Group{},
		Batches: map[string]int64{},
		Workers: map[string]Lease{},
		Members: map[string]Member{},
	}
}

// Clone returns a deep copy that shares nothing with s.
func (s State) Clone() State {
	c := s
	c.Config = slices.Clone(s.Config)
	c.Groups = maps.Clone(s.Groups)
	c.Batches = maps.Clone(s.Batches)
	c.Checkpoints = slices.Clone(s.Checkpoints)
	c.Workers = maps.Clone(s.Workers)
	c.Members = maps.Clone(s.Members)
	if c.Groups == nil {
		c.Groups = map[string]Group{}
	}
	if c.Batches == nil {
		c.Batches = map[string]int64{}
	}
	if c.Workers == nil {
		c.Workers = map[string]Lease{}
	}
	if c.Members == nil {
		c.Members = map[string]Member{}
	}
	return c
}

// GroupsByStatus returns the groups with status st, ordered by key (step, then prompt index).
func (s State) GroupsByStatus(st GroupStatus) []Group {
	var out []Group
	for _, g := range s.Groups {
		if g.Status == st {
			out = append(out, g)
		}
	}
	sortGroups(out)
	return out
}

// LatestCheckpoint returns the committed checkpoint with the highest step.
func (s State) LatestCheckpoint() (Checkpoint, bool) {
	if len(s.Checkpoints) == 0 {
		return Checkpoint{}, false
	}
	return s.Checkpoints[len(s.Checkpoints)-1], true
}

func sortGroups(gs []Group) {
	slices.SortFunc(gs, func(a, b Group) int {
		if a.Step != b.Step {
			return cmpInt(a.Step, b.Step)
		}
		return cmpInt(a.PromptIndex, b.PromptIndex)
	})
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
