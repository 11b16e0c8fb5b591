package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/learner"
	"github.com/bicot-rl/bicot/pkg/runfiles"
	"github.com/bicot-rl/bicot/pkg/runstate"
	"github.com/bicot-rl/bicot/pkg/store/s3"
)

// chaosReport is what a chaos run did and found; its JSON is the run's record.
type chaosReport struct {
	mu sync.Mutex

	Variant      chaosVariant `json:"variant"`
	Passed       bool         `json:"passed"`
	Failures     []string     `json:"failures"`
	SetupSeconds float64      `json:"setup_seconds"` // building, models, S3 server
	WallSeconds  float64      `json:"wall_seconds"`  // the whole test
	ChaosStart   float64      `json:"chaos_start_seconds"`
	ChaosSeconds float64      `json:"chaos_seconds"` // how long faults were injected

	Roles        map[string]*chaosRoleCounts `json:"roles"`
	Crashes      []chaosCrash                `json:"crashes"` // processes that ended by themselves with an error, or early
	Faults       []chaosFault                `json:"faults"`
	Outages      []chaosOutage               `json:"outages"`
	LeaderKills  []chaosLeaderKill           `json:"leader_kills"`
	LearnerKills []chaosLearnerKill          `json:"learner_kills"`
	MaxStall     float64                     `json:"max_seconds_without_a_step"`

	StepsLearned       int `json:"steps_learned"`        // lines of the final metrics.jsonl
	StepsTrained       int `json:"steps_trained"`        // updates by every learner incarnation, relearned steps included
	Rewinds            int `json:"rewinds"`              // run state taken back to a restarted learner's checkpoint
	GroupsExpected     int `json:"groups_expected"`      // steps x P
	GroupsLearned      int `json:"groups_learned"`       // distinct groups in the final metrics
	GroupsLost         int `json:"groups_lost"`          // dispatched positions no step learned
	GroupsLearnedTwice int `json:"groups_learned_twice"` // extra copies of a group or step
	GroupsRedispatched int `json:"groups_redispatched"`  // straggling groups the coordinators handed out again
	ResampleRounds     int `json:"resample_rounds"`

	// Redeliveries are deliveries beyond each message's first, per queue, from the durable
	// consumers' counters (Consumers) at the end.
	Redeliveries map[string]uint64        `json:"redeliveries"`
	Consumers    map[string]chaosConsumer `json:"consumers"`
	DeadLetters  []chaosDeadLetter        `json:"dead_letters"` // of genuine messages of the run
	// DeadLetterReasons counts every dead letter (hostile ones included) by queue and reason.
	DeadLetterReasons map[string]int `json:"dead_letter_reasons"`
	Hostile           []*hostile     `json:"hostile"`
	HostileOutcomes   map[string]int `json:"hostile_outcomes"`

	queued map[string]string // hostile marker -> the queue still holding it at the end
}

type chaosRoleCounts struct {
	Started int `json:"started"`
	Killed  int `json:"killed"`  // by the chaos (SIGKILL; the S3 server: stopped)
	Crashed int `json:"crashed"` // ended by themselves with an error or before the run's end
	Clean   int `json:"exited_0"`
	Stopped int `json:"stopped"` // with SIGTERM at the end of an open-ended run (each exited 0 or is a failure)
}

type chaosCrash struct {
	Process   string  `json:"process"`
	AtSeconds float64 `json:"at_seconds"`
	Exit      string  `json:"exit"`
	// StartRefused names a dependency that was down when the process started (not a failure of
	// the run: the process is restarted, as an orchestrator would).
	StartRefused string `json:"start_refused,omitempty"`
	LogTail      string `json:"log_tail"`
}

type chaosFault struct {
	What           string  `json:"what"`
	AtSeconds      float64 `json:"at_seconds"`
	RunStep        int64   `json:"run_step"`
	RecoveredAfter float64 `json:"next_step_after_seconds"`
}

type chaosOutage struct {
	What      string  `json:"what"`
	AtSeconds float64 `json:"at_seconds"`
	Seconds   float64 `json:"seconds"`
}

type chaosLeaderKill struct {
	Node            string  `json:"node"`
	AtSeconds       float64 `json:"at_seconds"`
	FailoverSeconds float64 `json:"failover_seconds"`
}

type chaosLearnerKill struct {
	Kind       string  `json:"kind"`
	AtSeconds  float64 `json:"at_seconds"`
	RunStep    int64   `json:"run_step"`              // the run state's step when it was killed
	HeldUpload string  `json:"held_upload,omitempty"` // the checkpoint object it was writing
	ResumedAt  *int64  `json:"resumed_at_step"`       // where its successor resumed (nil: from the start)
	proc       *chaosProc
}

// chaosConsumer are a work queue's durable consumer's counters at the end of the run.
type chaosConsumer struct {
	DeliveredConsumerSeq uint64 `json:"delivered_consumer_seq"`
	DeliveredStreamSeq   uint64 `json:"delivered_stream_seq"`
	Pending              uint64 `json:"pending"`
	AckPending           int    `json:"ack_pending"`
	RedeliveredPending   int    `json:"redelivered_pending"`
}

type chaosDeadLetter struct {
	Queue      string `json:"queue"`
	Subject    string `json:"subject"`
	Deliveries uint64 `json:"deliveries"`
	Reason     string `json:"reason"`
}

func newChaosReport(v chaosVariant) *chaosReport {
	r := &chaosReport{Variant: v, Roles: map[string]*chaosRoleCounts{}, Redeliveries: map[string]uint64{}, Consumers: map[string]chaosConsumer{},
		DeadLetterReasons: map[string]int{}, HostileOutcomes: map[string]int{}, queued: map[string]string{}}
	for _, role := range []string{"nats", "s3", "coordinator", "learner", "rollout", "reward"} {
		r.Roles[role] = &chaosRoleCounts{}
	}
	return r
}

func (r *chaosReport) started(role string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Roles[role].Started++
}

func (r *chaosReport) killed(role string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Roles[role].Killed++
}

func (r *chaosReport) stopped(role string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Roles[role].Stopped++
}

func (r *chaosReport) fail(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
}

func (r *chaosReport) noteStall(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.MaxStall = max(r.MaxStall, d.Seconds())
}

// exitedByItself records a process that ended without the chaos killing it before the run's end:
// a crash, or an exit 0 too early (a worker that believed the run over).
func (r *chaosReport) exitedByItself(p *chaosProc, at float64) {
	exit := "exit 0 before the run's end"
	if p.err != nil {
		exit = p.err.Error()
	}
	tail := p.tail(12)
	c := chaosCrash{Process: p.name, AtSeconds: at, Exit: exit, LogTail: tail}
	// A process started while the NATS server is down waits for it (wire.connect_wait, 2 min),
	// so one that gave up is a failure like any other; StartRefused stays in the report's schema
	// for runs of older builds.
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Crashes = append(r.Crashes, c)
	r.Roles[p.role].Crashed++
	if c.StartRefused == "" {
		r.Failures = append(r.Failures, fmt.Sprintf("%s ended by itself (%s)", p.name, exit))
	}
}

var hostileMarker = regexp.MustCompile(`chaos-hostile-\d{4}`)

// collectBus reads what the run left on the NATS server: the dead letters (matched to the
// hostile messages that caused them), the consumers' redeliveries, and hostile messages still
// queued.
func (x *chaosRun) collectBus() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nc, js, err := bus.Connect(ctx, x.natsURL, bus.ConnectOptions{Name: "chaos-report"})
	if err != nil {
		x.rep.fail("reading the bus at the end: %v", err)
		return
	}
	defer nc.Close()
	topo, _ := bus.NewTopology(chaosRunID)
	hostileOutcome := map[string]string{}
	if err := chaosEachMessage(ctx, js, topo.DeadStream, func(m *jetstream.RawStreamMsg) {
		var d bus.DeadLetter
		if json.Unmarshal(m.Data, &d) != nil || d.Validate() != nil {
			if mk := hostileMarker.Find(m.Data); mk != nil {
				hostileOutcome[string(mk)] = "kept in the dead-letter stream as published"
			} else {
				x.rep.fail("an undecodable record on %s", m.Subject)
			}
			return
		}
		queue := strings.TrimPrefix(m.Subject, topo.DeadSubjectPrefix+".")
		x.rep.DeadLetterReasons[queue+": "+chaosReasonClass(d.Error)]++
		if mk := hostileMarker.Find(d.Data); mk != nil {
			hostileOutcome[string(mk)] = "dead-lettered by the " + queue + " pool: " + d.Error
			return
		}
		x.rep.DeadLetters = append(x.rep.DeadLetters, chaosDeadLetter{Queue: queue, Subject: d.Subject, Deliveries: d.Deliveries, Reason: d.Error})
	}); err != nil {
		x.rep.fail("reading dead letters: %v", err)
	}
	for _, q := range topo.Queues() {
		c, err := js.Consumer(ctx, q.Stream, q.Consumer)
		if err != nil {
			x.rep.fail("consumer %s: %v", q.Consumer, err)
			continue
		}
		info, err := c.Info(ctx)
		if err != nil {
			x.rep.fail("consumer %s: %v", q.Consumer, err)
			continue
		}
		x.rep.Consumers[q.Kind] = chaosConsumer{DeliveredConsumerSeq: info.Delivered.Consumer, DeliveredStreamSeq: info.Delivered.Stream,
			Pending: info.NumPending, AckPending: info.NumAckPending, RedeliveredPending: info.NumRedelivered}
		x.redeliveries.note(q.Kind, info)
		x.rep.Redeliveries[q.Kind] = x.redeliveries.total(q.Kind)
		_ = chaosEachMessage(ctx, js, q.Stream, func(m *jetstream.RawStreamMsg) {
			if mk := hostileMarker.Find(m.Data); mk != nil {
				x.rep.queued[string(mk)] = q.Kind
			}
		})
	}
	for _, h := range x.hostilesSent() {
		h.Outcome = hostileOutcome[h.Marker]
	}
}

// redeliveryCounter sums each queue's redeliveries from its durable consumer's counters: the
// consumer's sequence counts every delivery, the stream's each message once. A NATS server killed
// and restarted may come back with counters from its last flush, lower than before; what was
// counted up to then is kept.
type redeliveryCounter struct {
	mu   sync.Mutex
	base map[string]uint64
	last map[string]uint64
}

func (c *redeliveryCounter) note(kind string, info *jetstream.ConsumerInfo) {
	var n uint64
	if info.Delivered.Consumer > info.Delivered.Stream {
		n = info.Delivered.Consumer - info.Delivered.Stream
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.base == nil {
		c.base, c.last = map[string]uint64{}, map[string]uint64{}
	}
	if n < c.last[kind] {
		c.base[kind] += c.last[kind]
	}
	c.last[kind] = n
}

func (c *redeliveryCounter) total(kind string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.base[kind] + c.last[kind]
}

// countRedeliveries reads the consumers' counters every second until ctx ends.
func (x *chaosRun) countRedeliveries(ctx context.Context) {
	nc, js, err := bus.Connect(ctx, x.natsURL, bus.ConnectOptions{Name: "chaos-counters"})
	if err != nil {
		x.rep.fail("counting redeliveries: %v", err)
		return
	}
	defer nc.Close()
	topo, _ := bus.NewTopology(chaosRunID)
	for ctx.Err() == nil {
		for _, q := range topo.Queues() {
			ictx, cancel := context.WithTimeout(ctx, time.Second)
			if c, err := js.Consumer(ictx, q.Stream, q.Consumer); err == nil {
				if info, err := c.Info(ictx); err == nil {
					x.redeliveries.note(q.Kind, info)
				}
			}
			cancel()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (x *chaosRun) hostilesSent() []*hostile {
	if x.hostiles == nil {
		return nil
	}
	return x.hostiles.published()
}

// chaosReasonClass shortens a dead letter's reason to its kind (the message's key and values dropped),
// so the report can count them.
func chaosReasonClass(reason string) string {
	r := hostileMarker.ReplaceAllString(reason, "…")
	r = regexp.MustCompile(`chaos/[0-9/]+(/a\d+)?`).ReplaceAllString(r, "<key>")
	r = regexp.MustCompile(`-?\d+(\.\d+)?(e[+-]?\d+)?`).ReplaceAllString(r, "N")
	if len(r) > 140 {
		r = r[:140] + "…"
	}
	return r
}

// chaosEachMessage calls fn with every message a stream holds.
func chaosEachMessage(ctx context.Context, js jetstream.JetStream, stream string, fn func(*jetstream.RawStreamMsg)) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return err
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		fn(m)
	}
	return nil
}

// collectProcs counts the processes by role and reads their logs for what the report shows:
// where each learner resumed, the steps trained, the rewinds and re-dispatches.
func (x *chaosRun) collectProcs() {
	r := x.rep
	for _, p := range x.procs.procs() {
		switch {
		case !p.exited():
			// Killed by the clean-up: whatever it was doing, it did not finish by itself.
			if p.role != "nats" {
				r.fail("%s still running at the end", p.name)
			}
		case !p.killed.Load() && !p.stopped.Load() && p.err == nil:
			r.Roles[p.role].Clean++
		}
		if p.crashed() && !slices.ContainsFunc(r.Crashes, func(c chaosCrash) bool { return c.Process == p.name }) {
			r.exitedByItself(p, p.ended.Sub(x.start).Seconds())
		}
		p.logLines(func(line string) {
			var l struct {
				Message string `json:"message"`
				Step    *int64 `json:"step"`
			}
			if json.Unmarshal([]byte(line), &l) != nil {
				return
			}
			switch {
			case p.role == "learner" && l.Message == "step learned":
				r.StepsTrained++
			case p.role == "coordinator" && l.Message == "learner restarted behind the run: rewound to its checkpoint":
				r.Rewinds++
			case p.role == "coordinator" && l.Message == "re-dispatched straggling group":
				r.GroupsRedispatched++
			}
		})
	}
	for i := range r.LearnerKills {
		k := &r.LearnerKills[i]
		k.proc.logLines(func(line string) {
			var l struct {
				Message string `json:"message"`
				Step    int64  `json:"step"`
			}
			if json.Unmarshal([]byte(line), &l) == nil && l.Message == "resumed" && k.ResumedAt == nil {
				k.ResumedAt = &l.Step
			}
		})
	}
}

// checkMetrics reads the learner's durable record, metrics.jsonl in S3, and counts lost and
// twice-learned groups against the positions of the prompt cursor the coordinators dispatched:
// step s trains the last P of the P x (1 + resample rounds) positions that follow step s-1's.
func (x *chaosRun) checkMetrics() {
	r := x.rep
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := s3.New(x.s3.Config("chaos"), zerolog.Nop())
	if err != nil {
		r.fail("s3 store: %v", err)
		return
	}
	defer st.Close()
	lines, err := runfiles.ReadMetrics(ctx, st, chaosRunID)
	if err != nil {
		r.fail("metrics: %v", err)
		return
	}
	var recs []learner.StepRecord
	for _, line := range lines {
		var rec learner.StepRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			r.fail("metrics.jsonl line %q: %v", line, err)
			continue
		}
		recs = append(recs, rec)
	}
	r.countGroups(recs, x.runState())
}

// countGroups counts the groups of metrics.jsonl's lines (recs) against the prompt cursor, and
// the final run state's step and cursor against them.
func (r *chaosReport) countGroups(recs []learner.StepRecord, state runstate.State) {
	v := r.Variant
	byStep := map[int64][]learner.StepRecord{}
	last := int64(-1)
	for _, rec := range recs {
		byStep[rec.Step] = append(byStep[rec.Step], rec)
		last = max(last, rec.Step)
		r.StepsLearned++
	}
	// A run stopped after its window is checked up to the last step it learned.
	steps := int64(v.Steps)
	if v.StopAfterWindow {
		steps = last + 1
	}
	count := state.PromptCount
	if count <= 0 {
		r.fail("the run state was never read: no prompt count to check positions against")
		return
	}
	P, G := int64(v.PromptsPerStep), v.GroupSize
	r.GroupsExpected = int(steps) * v.PromptsPerStep
	var pos int64
	learnedAt := map[int64]int64{} // prompt index on the wire -> the cursor position (since the start) it was learned at
	for step := range steps {
		recs := byStep[step]
		delete(byStep, step)
		if len(recs) == 0 {
			r.GroupsLost += int(P)
			r.fail("step %d: not in metrics.jsonl (%d groups lost)", step, P)
			pos += P
			continue
		}
		if len(recs) > 1 {
			r.GroupsLearnedTwice += int(P) * (len(recs) - 1)
			r.fail("step %d: %d lines in metrics.jsonl", step, len(recs))
		}
		rec := recs[0]
		r.ResampleRounds += rec.ResampleRounds
		if rec.PolicyVersion != step+1 {
			r.fail("step %d: policy version %d, want %d", step, rec.PolicyVersion, step+1)
		}
		first := pos + int64(rec.ResampleRounds)*P
		want := map[int64]int64{} // prompt index on the wire (offset in its epoch) -> position since the start
		for i := range P {
			want[(first+i)%count] = first + i
		}
		seen := map[int64]int{}
		for _, g := range rec.Learned {
			p := int64(g.PromptIndex)
			seen[p]++
			if seen[p] > 1 {
				r.GroupsLearnedTwice++
				r.fail("step %d: prompt %d learned twice in the step", step, p)
				continue
			}
			at, ok := want[p]
			prev, before := learnedAt[p]
			switch {
			case ok:
				learnedAt[p] = at
			case before && prev/count == first/count:
				r.GroupsLearnedTwice++
				r.fail("step %d: learned prompt %d again (learned at cursor position %d already)", step, p, prev)
			default:
				r.fail("step %d: learned prompt %d, which the cursor did not dispatch for it (positions %d..%d)", step, p, first, first+P-1)
			}
			r.GroupsLearned++
			if g.Samples != G || len(g.SampleIndices) != G || !slices.IsSorted(g.SampleIndices) ||
				g.SampleIndices[0] != 0 || g.SampleIndices[G-1] != G-1 || len(slices.Compact(slices.Clone(g.SampleIndices))) != G {
				r.fail("step %d prompt %d: trained samples %v, want the %d samples 0..%d", step, p, g.SampleIndices, G, G-1)
			}
		}
		for p := range want {
			if seen[p] == 0 {
				r.GroupsLost++
				r.fail("step %d: prompt position %d dispatched and never learned", step, p)
			}
		}
		pos += P * int64(1+rec.ResampleRounds)
	}
	for step, recs := range byStep {
		r.fail("metrics.jsonl has %d line(s) of step %d, past the run's %d steps", len(recs), step, v.Steps)
	}
	cursor := state.Cursor.Epoch*count + state.Cursor.Offset
	if v.StopAfterWindow {
		// Stopped at any point: the learner may have stopped before or after reporting its last
		// step, and the step after it may be dispatched already (whole batches of P).
		if state.Step != steps-1 && state.Step != steps {
			r.fail("the run state is at step %d, the learner's record ends with step %d", state.Step, steps-1)
		}
		if cursor < pos || (cursor-pos)%P != 0 {
			r.fail("the run state's cursor is at position %d, the learned steps account for %d", cursor, pos)
		}
		return
	}
	// The coordinators' cursor ended where the learned steps say it must.
	if state.Step == int64(v.Steps) {
		if cursor != pos {
			r.fail("the run state's cursor is at position %d, the learned steps account for %d", cursor, pos)
		}
		if n := len(state.Groups); n != 0 {
			r.fail("%d groups still in flight in the final run state", n)
		}
	} else {
		r.fail("the last run state seen is at step %d of %d", state.Step, v.Steps)
	}
}

// checkHostiles gives every hostile message its outcome and fails those that did not come to
// their documented end.
func (x *chaosRun) checkHostiles() {
	r := x.rep
	earlyExit := slices.ContainsFunc(r.Crashes, func(c chaosCrash) bool { return strings.Contains(c.Exit, "before the run's end") })
	for _, h := range x.hostilesSent() {
		switch {
		case h.Outcome != "":
		case r.queued[h.Marker] != "":
			h.Outcome = "still queued at the run's end (no worker took it before the run ended)"
		case h.Expect == expectIgnored:
			h.Outcome = "consumed without a dead letter; the run's state and groups are as checked"
		case h.Expect == expectSkipped && !earlyExit:
			h.Outcome = "skipped by readers: no worker left the run early"
		default:
			h.Outcome = "NOT " + h.Expect
		}
		if strings.HasPrefix(h.Outcome, "NOT") {
			r.fail("hostile %s on %s (%s): %s", h.Marker, h.Subject, h.What, h.Outcome)
		}
		r.HostileOutcomes[h.Expect+" -> "+strings.SplitN(h.Outcome, ":", 2)[0]]++
	}
	r.Hostile = x.hostilesSent()
}

// writeReport completes the report, logs it as a table and writes its JSON into the test's
// directory and, when BICOT_CHAOS_REPORT names a file, there.
func (x *chaosRun) writeReport() {
	x.checkHostiles()
	r := x.rep
	if r.GroupsLost > 0 || r.GroupsLearnedTwice > 0 {
		r.fail("groups lost %d, learned twice %d: want 0 and 0", r.GroupsLost, r.GroupsLearnedTwice)
	}
	r.Passed = len(r.Failures) == 0
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		x.t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(x.tmp, "chaos-report.json"), os.Getenv(chaosReportEnv)} {
		if p == "" {
			continue
		}
		if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
			x.t.Errorf("writing the report: %v", err)
		}
	}
	x.t.Logf("chaos report (JSON: %s):\n%s", filepath.Join(x.tmp, "chaos-report.json"), r.table())
}

// table is the report as the text the test logs and scripts/chaos.sh prints.
func (r *chaosReport) table() string {
	var sb strings.Builder
	verdict := "PASS"
	if !r.Passed {
		verdict = "FAIL"
	}
	v := r.Variant
	fmt.Fprintf(&sb, "%s: %s variant, %d steps of P %d x G %d, checkpoint every %d; %.0f s of faults, %.0f s wall (%.0f s set-up)\n\n",
		verdict, v.Name, v.Steps, v.PromptsPerStep, v.GroupSize, v.CheckpointEvery, r.ChaosSeconds, r.WallSeconds, r.SetupSeconds)
	tw := tabwriter.NewWriter(&sb, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "| role\t started\t killed\t crashed\t exited 0\t stopped at the end\t")
	for _, role := range []string{"nats", "s3", "coordinator", "learner", "rollout", "reward"} {
		c := r.Roles[role]
		fmt.Fprintf(tw, "| %s\t %d\t %d\t %d\t %d\t %d\t\n", role, c.Started, c.Killed, c.Crashed, c.Clean, c.Stopped)
	}
	tw.Flush()
	sb.WriteString("\n")
	for _, f := range r.Faults {
		fmt.Fprintf(&sb, "- at %5.1f s (step %d): %s; next step learned %.1f s later\n", f.AtSeconds, f.RunStep, f.What, f.RecoveredAfter)
	}
	for _, o := range r.Outages {
		fmt.Fprintf(&sb, "- outage: %s down %.1f s from %.1f s\n", o.What, o.Seconds, o.AtSeconds)
	}
	for _, l := range r.LeaderKills {
		fmt.Fprintf(&sb, "- leader %s killed: new leader after %.2f s\n", l.Node, l.FailoverSeconds)
	}
	for _, k := range r.LearnerKills {
		resumed := "from the start"
		if k.ResumedAt != nil {
			resumed = fmt.Sprintf("at step %d", *k.ResumedAt)
		}
		held := ""
		if k.HeldUpload != "" {
			held = " (" + k.HeldUpload[strings.Index(k.HeldUpload, "checkpoints/"):] + " in flight)"
		}
		fmt.Fprintf(&sb, "- learner killed %s at run step %d%s: its successor resumed %s\n", k.Kind, k.RunStep, held, resumed)
	}
	fmt.Fprintf(&sb, "\nsteps learned %d (updates incl. relearned steps: %d), rewinds %d, longest wait for a step %.1f s\n",
		r.StepsLearned, r.StepsTrained, r.Rewinds, r.MaxStall)
	fmt.Fprintf(&sb, "groups: expected %d, learned %d, lost %d, learned twice %d; re-dispatched %d; resample rounds %d\n",
		r.GroupsExpected, r.GroupsLearned, r.GroupsLost, r.GroupsLearnedTwice, r.GroupsRedispatched, r.ResampleRounds)
	fmt.Fprintf(&sb, "redeliveries: tasks %d, samples %d, scored %d, events %d\n",
		r.Redeliveries[bus.KindTasks], r.Redeliveries[bus.KindSamples], r.Redeliveries[bus.KindScored], r.Redeliveries[bus.KindEvents])
	fmt.Fprintf(&sb, "dead letters of genuine messages: %d\n", len(r.DeadLetters))
	for _, d := range r.DeadLetters {
		fmt.Fprintf(&sb, "  - %s (%s, %d deliveries): %s\n", d.Queue, d.Subject, d.Deliveries, d.Reason)
	}
	sb.WriteString("dead letters by queue and reason (hostile ones included):\n")
	for _, k := range chaosSortedKeys(r.DeadLetterReasons) {
		fmt.Fprintf(&sb, "  %4d  %s\n", r.DeadLetterReasons[k], k)
	}
	fmt.Fprintf(&sb, "hostile messages: %d published\n", len(r.Hostile))
	for _, k := range chaosSortedKeys(r.HostileOutcomes) {
		fmt.Fprintf(&sb, "  %4d  %s\n", r.HostileOutcomes[k], k)
	}
	refused := 0
	for _, c := range r.Crashes {
		if c.StartRefused != "" {
			refused++
			continue
		}
		fmt.Fprintf(&sb, "crash: %s at %.1f s: %s\n%s\n", c.Process, c.AtSeconds, c.Exit, c.LogTail)
	}
	if refused > 0 {
		fmt.Fprintf(&sb, "processes that exited at start because the NATS server was down (restarted): %d\n", refused)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(&sb, "FAILURE: %s\n", f)
	}
	return sb.String()
}

func chaosSortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// The chaos run's verdict on groups: a clean record passes, and a lost step, a group learned twice
// (within a step or again at a later one), a partial group and a cursor that disagrees are each
// found and counted.
func TestChaosCountsLostAndTwiceLearnedGroups(t *testing.T) {
	v := chaosVariant{Steps: 3, PromptsPerStep: 2, GroupSize: 2}
	full := func(p int) learner.LearnedGroup {
		return learner.LearnedGroup{PromptIndex: p, Samples: 2, SampleIndices: []int{0, 1}}
	}
	clean := func() []learner.StepRecord {
		return []learner.StepRecord{
			{Step: 0, PolicyVersion: 1, Learned: []learner.LearnedGroup{full(0), full(1)}},
			{Step: 1, PolicyVersion: 2, Learned: []learner.LearnedGroup{full(2), full(3)}},
			{Step: 2, PolicyVersion: 3, Learned: []learner.LearnedGroup{full(4), full(5)}},
		}
	}
	end := runstate.State{Step: 3, PromptCount: 100, Cursor: runstate.Cursor{Offset: 6}}
	for _, tc := range []struct {
		name        string
		recs        func() []learner.StepRecord
		state       runstate.State
		lost, twice int
		fails       bool
	}{
		{"clean", clean, end, 0, 0, false},
		{"a step missing", func() []learner.StepRecord { r := clean(); return append(r[:1], r[2:]...) }, end, 2, 0, true},
		{"a step twice", func() []learner.StepRecord { r := clean(); return append(r, r[1]) }, end, 0, 2, true},
		{"a group twice in a step", func() []learner.StepRecord {
			r := clean()
			r[1].Learned[1] = full(2)
			return r
		}, end, 1, 1, true},
		{"a group learned again a step later", func() []learner.StepRecord {
			r := clean()
			r[2].Learned[0] = full(3)
			return r
		}, end, 1, 1, true},
		{"a partial group", func() []learner.StepRecord {
			r := clean()
			r[0].Learned[0] = learner.LearnedGroup{PromptIndex: 0, Samples: 1, SampleIndices: []int{1}}
			return r
		}, end, 0, 0, true},
		{"the cursor elsewhere", clean, runstate.State{Step: 3, PromptCount: 100, Cursor: runstate.Cursor{Offset: 8}}, 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newChaosReport(v)
			r.countGroups(tc.recs(), tc.state)
			if r.GroupsLost != tc.lost || r.GroupsLearnedTwice != tc.twice || (len(r.Failures) > 0) != tc.fails {
				t.Errorf("lost %d, twice %d, failures %q; want %d, %d, failing %v", r.GroupsLost, r.GroupsLearnedTwice, r.Failures, tc.lost, tc.twice, tc.fails)
			}
		})
	}
}
