package bus

// This file is how workers report to the coordinator: the event kinds, their payloads, the
// Reporter that publishes them with a heartbeat, and RunEnded, which tells a worker the run is over.

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Event kinds a worker reports.
const (
	EventStarted   = "started"
	EventHeartbeat = "heartbeat"
	EventTaskDone  = "task_done"
	EventError     = "error"
	EventStopped   = "stopped"
)

// Event kinds the learner reports besides the workers' started/heartbeat/task_done/stopped.
const (
	// EventGroupComplete: all G scored samples of a group reached the learner. Message: the
	// group key "step/prompt".
	EventGroupComplete = "group_complete"
	// EventStepDone: the learner trained a step and announced the new policy version. Message:
	// StepReport as JSON.
	EventStepDone = "step_done"
	// EventCheckpoint: a checkpoint was committed. Message: its manifest key.
	EventCheckpoint = "checkpoint"
	// EventStepResample: groups of a step tied and were filtered (grpo.filter_zero_std), fewer
	// than P informative ones are left, so the learner made no update yet and asks for fresh
	// prompts for the step, as many as it lacks (DAPO's dynamic sampling). Message:
	// ResampleRequest as JSON.
	EventStepResample = "step_resample"
	// EventLearnerResumed: a learner started and resumed from its newest checkpoint (or the
	// start). Message: the point it resumed at, a runstate.Rewind as JSON; the coordinator rewinds
	// the run state to it when the state is ahead (a restarted learner lost what it had not
	// checkpointed).
	EventLearnerResumed = "learner_resumed"
)

// ResampleRequest is the payload of a step_resample event.
type ResampleRequest struct {
	// Round numbers the request (1 for the first re-sampling of a step); with the step it makes
	// the dispatch idempotent.
	Round int `json:"round"`
	// Dropped are the group keys the round filtered out.
	Dropped []string `json:"dropped"`
	// Count is how many fresh prompts the step needs: P less the informative groups the learner
	// keeps. 0 (absent) means P.
	Count int `json:"count,omitempty"`
}

// Roles of the workers.
const (
	RoleRollout = "rollout"
	RoleReward  = "reward"
	RoleLearner = "learner"
)

// ValidRole reports whether r is a role that publishes events, each on its own subject
// (EventSubject).
func ValidRole(r string) bool {
	switch r {
	case RoleRollout, RoleReward, RoleLearner:
		return true
	}
	return false
}

// learnerOnly reports whether only the learner reports events of this kind: each moves the run
// state (a step learned, a rewind), so the coordinator takes them from the learner's subject alone.
func learnerOnly(kind string) bool {
	switch kind {
	case EventGroupComplete, EventStepDone, EventCheckpoint, EventStepResample, EventLearnerResumed:
		return true
	}
	return false
}

// CheckSender checks an event against the subject it arrived on: the subject's role must be the
// event's, and events that move the run state must come from the learner. With per-role NATS
// credentials (natsd.Permissions) the subject is what the server vouches for, so a worker cannot
// speak for another role.
func (e *Event) CheckSender(subject string) error {
	want := EventSubject(e.Run, e.Role)
	if subject != want {
		return fmt.Errorf("event %s of role %q from %q arrived on %s, not %s", e.Kind, e.Role, e.Worker, subject, want)
	}
	if learnerOnly(e.Kind) && e.Role != RoleLearner {
		return fmt.Errorf("event %s from %q: only the learner reports it, not role %q", e.Kind, e.Worker, e.Role)
	}
	return nil
}

// StepReport is the payload of a step_done event.
type StepReport struct {
	// Learned are the group keys ("step/prompt") the step trained on.
	Learned []string `json:"learned"`
	// Metrics are the step's statistics (loss, ratio, KL, rewards per expert, timings).
	Metrics map[string]float64 `json:"metrics,omitempty"`
	// Final: the learner ended the run with this step before its step count (time budget).
	Final bool `json:"final,omitempty"`
}

// Reporter publishes a worker's events to the coordinator and keeps a heartbeat going.
type Reporter struct {
	js     jetstream.JetStream
	run    string
	worker string
	role   string
	log    zerolog.Logger

	mu      sync.Mutex
	step    int64
	version int64
}

// NewReporter returns a reporter for one worker.
func NewReporter(js jetstream.JetStream, run, worker, role string, log zerolog.Logger) *Reporter {
	return &Reporter{js: js, run: run, worker: worker, role: role, log: log}
}

// SetProgress records what the next heartbeat says the worker is working on.
func (r *Reporter) SetProgress(step, version int64) {
	r.mu.Lock()
	r.step, r.version = step, version
	r.mu.Unlock()
}

// Emit publishes one event; failures are logged, not returned: progress reports must never stop
// the work itself. id, when not empty, de-duplicates the event.
func (r *Reporter) Emit(ctx context.Context, kind string, step, version int64, count int, msg, id string) {
	e := Event{Run: r.run, Kind: kind, Worker: r.worker, Role: r.role, Step: step, PolicyVersion: version,
		Count: count, Message: msg, ID: id}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := PublishEvent(pctx, r.js, e); err != nil {
		r.log.Warn().Err(err).Str("kind", kind).Msg("event not published")
	}
}

// EmitJSON is Emit with a JSON-encoded message.
func (r *Reporter) EmitJSON(ctx context.Context, kind string, step, version int64, v any, id string) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("event %s: %w", kind, err)
	}
	e := Event{Run: r.run, Kind: kind, Worker: r.worker, Role: r.role, Step: step, PolicyVersion: version,
		Message: string(b), ID: id}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := PublishEvent(pctx, r.js, e); err != nil {
		return err
	}
	return nil
}

// Heartbeat sends started, then a heartbeat every interval until ctx ends, then stopped.
func (r *Reporter) Heartbeat(ctx context.Context, interval time.Duration) {
	r.Emit(ctx, EventStarted, 0, 0, 0, "", "")
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.Emit(ctx, EventStopped, 0, 0, 0, "", "")
			return
		case <-t.C:
			r.mu.Lock()
			step, v := r.step, r.version
			r.mu.Unlock()
			r.Emit(ctx, EventHeartbeat, step, v, 0, "", "")
		}
	}
}

// RunEnded returns a context that is cancelled when the run's policy announcements show that
// all steps are learned (an announcement for step >= steps) or that the learner ended the run
// early (a final announcement), or when parent ends. Worker processes
// use it to exit by themselves at the end of a run. It may start before the run's streams exist:
// it waits for them (AwaitStreams) and retries until it watches.
func RunEnded(parent context.Context, js jetstream.JetStream, run string, steps int, log zerolog.Logger) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	go func() {
		for ctx.Err() == nil {
			if _, err := AwaitStreams(ctx, js, run, log); err == nil {
				err = WatchPolicy(ctx, js, run, func(p PolicyAnnounce) {
					if p.Step >= int64(steps) || p.Final {
						log.Info().Int64("step", p.Step).Int64("version", p.Version).Msg("run finished")
						cancel()
					}
				}, nil)
				if err == nil {
					return
				}
				log.Warn().Err(err).Msg("watching for the run's end")
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	return ctx, cancel
}
