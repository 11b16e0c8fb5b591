// Package coordinator is the coordinator service of a run. It owns the run through the replicated run
// state (pkg/runstate: a raft node, single-node in laptop mode), and:
//
//   - initialises the run (InitRun) and walks a data cursor over the prompt file in a
//     deterministic shuffled order per epoch (drawn from the run seed);
//   - dispatches each step as BatchTasks of PromptsPerTask prompts (DispatchBatch, then
//     bus.PublishTask) once the policy version allows it: with staleness k, step s goes out when
//     version >= s-k is current (k = 0: strictly on-policy, step s waits for version s);
//   - tracks every group until the learner reports it learned (group_complete -> GroupsScored,
//     step_done -> StepDone with the learned group keys and the new policy version), and
//     re-dispatches groups not scored within RedispatchAfter as single-prompt tasks with the next
//     attempt number (their samples are deterministic, the learner drops copies);
//   - records workers' leases from their heartbeats and committed checkpoints;
//   - serves GET /v1/status (JSON), GET /metrics (Prometheus, queue depth per pool included),
//     GET /healthz and the run's dashboard at / (pkg/dashboard, reading the run's store).
//
// Everything it decides is derived from the run state, so a restarted coordinator (or a new raft
// leader) carries on where the old one stopped; publishing again is harmless because task message
// ids are deterministic. With 3 or 5 coordinators every one runs this service over its own raft
// replica: only the leader schedules (it re-publishes the waiting tasks when it takes over),
// followers apply worker events through the leader, and all of them stop when the replicated
// state says the run is done. A step left short of P informative groups by DAPO filtering gets
// as many fresh prompts as the learner asks for (step_resample).
//
// resume.go turns a checkpoint's run-state snapshot into the state a resumed run starts from and
// seeds fresh raft directories with it (`coordinator resume`).
package coordinator

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/runstate"
	"github.com/bicot-rl/bicot/pkg/secure"
	"github.com/bicot-rl/bicot/pkg/store"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
)

// StateNode is the part of a runstate.Node the coordinator uses.
type StateNode interface {
	Apply(ctx context.Context, cmd runstate.Command) (runstate.Result, error)
	// ApplyAll commits several commands in order, batched where it can.
	ApplyAll(ctx context.Context, cmds []runstate.Command) ([]runstate.Result, []error)
	State() runstate.State
	IsLeader() bool
	// Stepped signals that an applied entry changed the run's step.
	Stepped() <-chan struct{}
}

// Deps are what a coordinator is given: its connection, its replica of the run state, the run's
// prompts and where to serve. Everything else comes from the run config, so laptop mode and the
// coordinator binary, which both call New, cannot configure it differently.
type Deps struct {
	JS jetstream.JetStream
	// Node is this coordinator's run-state replica (a raft node).
	Node StateNode
	// Prompts are the run's prompt file (cfg.Prompts), read by the caller.
	Prompts []prompts.Prompt
	// HTTPAddr serves the status API ("" = none; port 0 picks one, see Addr).
	HTTPAddr string
	// APIToken, when set, is the bearer token the status API requires (all but /healthz).
	APIToken string
	// TLS, when set, serves the status API over TLS (with a CA: mutual TLS).
	TLS secure.TLSFiles
	// Store is the run's store, from which the dashboard at / reads the learner's metrics, the
	// kept samples and the evaluation (nil: the page shows the status alone).
	Store store.Store
	// Metrics is the registry the status API serves at /metrics; the coordinator adds its series.
	// Nil: a registry of its own with the Go runtime and process collectors. Laptop mode passes
	// the one its other roles register in, so one endpoint shows them all.
	Metrics *prometheus.Registry
	Log     zerolog.Logger
}

// WorkerInfo is what the coordinator knows of a worker from its events.
type WorkerInfo struct {
	ID            string    `json:"id"`
	Role          string    `json:"role"`
	LastSeen      time.Time `json:"last_seen"`
	Step          int64     `json:"step"`
	PolicyVersion int64     `json:"policy_version"`
	TasksDone     int       `json:"tasks_done"`
	Stopped       bool      `json:"stopped,omitempty"`
}

// Coordinator runs one run.
type Coordinator struct {
	o     Deps
	every time.Duration // how often dispatch and re-dispatch are checked
	cfg   config.Config
	js    jetstream.JetStream
	topo  bus.Topology
	log   zerolog.Logger

	mu          sync.Mutex
	perms       map[int64][]int
	workers     map[string]*WorkerInfo
	lastMetrics map[string]float64
	redispatch  int
	dispatched  int
	leaderSince time.Time
	done        chan struct{}
	doneOnce    sync.Once

	// republishDue is set when a task recorded in the run state may not have been published (the
	// publish or the apply failed: the bus or raft was down); the next tick publishes every
	// waiting group's task again. Only Run's goroutine touches it.
	republishDue bool

	ln   net.Listener
	reg  *prometheus.Registry
	gMet *prometheus.GaugeVec
}

// New checks the run config and dependencies and names the run's streams; Listen serves the API
// and Run coordinates. ctx bounds set-up (none today: Run creates the streams).
func New(_ context.Context, o Deps, c config.Config) (*Coordinator, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.RunID == "" {
		return nil, errors.New("coordinator: run id is required")
	}
	log := logging.Component(o.Log, "coordinator").With().Str("run", c.RunID).Logger()
	o.Prompts = encodable(o.Prompts, c.Prompts, log)
	if len(o.Prompts) == 0 {
		return nil, fmt.Errorf("coordinator: no prompt of %s can be written in the policy's vocabulary", c.Prompts)
	}
	if c.PromptsPerStep > len(o.Prompts) {
		return nil, fmt.Errorf("coordinator: prompts_per_step %d exceeds the %d prompts of %s", c.PromptsPerStep, len(o.Prompts), c.Prompts)
	}
	if o.Node == nil {
		return nil, errors.New("coordinator: run-state node is required")
	}
	topo, err := bus.NewTopology(c.RunID)
	if err != nil {
		return nil, err
	}
	co := &Coordinator{o: o, every: c.Wire.DispatchTick.D(), cfg: c, js: o.JS, topo: topo, log: log,
		perms: map[int64][]int{}, workers: map[string]*WorkerInfo{}, lastMetrics: map[string]float64{}, done: make(chan struct{})}
	co.initMetrics()
	return co, nil
}

// Done is closed when the run has learned all its steps.
func (c *Coordinator) Done() <-chan struct{} { return c.done }

// Addr is the status API's address once Run has started it.
func (c *Coordinator) Addr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ln == nil {
		return ""
	}
	return c.ln.Addr().String()
}

// Listen opens the status API's listener before Run (so callers learn the address early).
func (c *Coordinator) Listen() error {
	if c.o.HTTPAddr == "" {
		return nil
	}
	sc, err := c.o.TLS.ServerConfig()
	if err != nil {
		return fmt.Errorf("coordinator: status API: %w", err)
	}
	ln, err := net.Listen("tcp", c.o.HTTPAddr)
	if err != nil {
		return fmt.Errorf("coordinator: listen %s: %w", c.o.HTTPAddr, err)
	}
	if sc != nil {
		ln = tls.NewListener(ln, sc)
	}
	c.mu.Lock()
	c.ln = ln
	c.mu.Unlock()
	return nil
}

// PromptOrder is the order in which a run of seed hands out the n prompts of its prompt file in
// epoch: offset i of the epoch is prompt PromptOrder(...)[i].
func PromptOrder(seed uint64, epoch int64, n int) []int {
	return rand.New(rand.NewPCG(seed, 0x70726f6d707473^uint64(epoch))).Perm(n)
}

// PromptAt returns the prompt at cursor position offset of epoch: the epoch's shuffled order,
// drawn from the run seed, so every coordinator (and a restarted one) sees the same order.
func (c *Coordinator) PromptAt(epoch, offset int64) prompts.Prompt {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.perms[epoch]
	if !ok {
		p = PromptOrder(c.cfg.Seed, epoch, len(c.o.Prompts))
		c.perms[epoch] = p
		if len(c.perms) > 4 {
			for e := range c.perms {
				if e < epoch-1 {
					delete(c.perms, e)
				}
			}
		}
	}
	return c.o.Prompts[p[offset]]
}

// checkPromptCount refuses a prompt file of another length than the one the run was started with
// (the replicated prompt count): its shuffled order would differ, and offsets of the run's cursor
// could point past its end. It waits for this replica to hold the run (a follower applies InitRun
// shortly after the leader).
func (c *Coordinator) checkPromptCount(ctx context.Context) error {
	for deadline := time.Now().Add(30 * time.Second); ; {
		st := c.o.Node.State()
		if st.RunID == c.cfg.RunID && st.PromptCount > 0 {
			if st.PromptCount != int64(len(c.o.Prompts)) {
				return fmt.Errorf("coordinator: run %s was started with %d prompts, but %s has %d usable ones now: restart it with the run's prompt file",
					c.cfg.RunID, st.PromptCount, c.cfg.Prompts, len(c.o.Prompts))
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("coordinator: run %s is not in this replica's state after 30 s", c.cfg.RunID)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Run initialises the run and coordinates it until ctx ends. It returns nil then; the run's end
// is signalled by Done (the coordinator keeps serving its API until ctx ends).
func (c *Coordinator) Run(ctx context.Context) error {
	if _, err := bus.EnsureStreams(ctx, c.js, c.cfg.RunID); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	cfgJSON, err := json.Marshal(c.cfg.Redacted())
	if err != nil {
		return err
	}
	if _, err := c.o.Node.Apply(ctx, runstate.NewInitRun(time.Now(), runstate.InitRun{
		RunID: c.cfg.RunID, Seed: c.cfg.Seed, Config: cfgJSON, PromptCount: int64(len(c.o.Prompts))})); err != nil {
		return fmt.Errorf("coordinator: init run: %w", err)
	}
	if err := c.checkPromptCount(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if c.ln == nil {
		if err := c.Listen(); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	if c.ln != nil {
		// The dashboard's browser presents the token as ?token= once, then as a cookie.
		h := secure.AcceptBrowserToken(c.o.APIToken, secure.RequireToken(c.o.APIToken, c.Handler(), "/healthz"))
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := srv.Serve(c.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				c.log.Error().Err(err).Msg("status API stopped")
			}
		}()
		go func() {
			defer wg.Done()
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		c.log.Info().Str("addr", c.ln.Addr().String()).Msg("status API listening")
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		lg := c.log
		// Every coordinator of a cluster fetches from the one durable events consumer and applies
		// through its node, which forwards to the leader. A short AckWait hands an event held by
		// a coordinator that died back to the others within seconds (InProgress covers an apply
		// that rides out an election).
		if err := bus.Consume(ctx, c.js, c.topo.Events, bus.Typed(c.onEvent),
			bus.ConsumeOptions{Fetchers: eventFetchers, AckWait: eventAckWait, PollWait: 2 * time.Second, RetryDelay: 200 * time.Millisecond, Logger: &lg}); err != nil {
			c.log.Error().Err(err).Msg("event consumer stopped")
		}
	}()
	t := time.NewTicker(c.every)
	defer t.Stop()
	lastExpire := time.Now()
	leading := false
	for ctx.Err() == nil {
		if st := c.o.Node.State(); st.RunID != "" && st.Over(c.cfg.Steps) {
			c.finish(st)
		}
		lead := c.o.Node.IsLeader()
		if lead != leading {
			leading = lead
			if lead {
				// A new leader takes over scheduling from the replicated state: tasks of groups
				// still waiting for rollout are published again with their message ids (lost
				// publishes are repaired, JetStream drops the rest as duplicates); stragglers are
				// re-dispatched by the tick as usual.
				c.log.Info().Msg("leading: scheduling the run")
				c.mu.Lock()
				c.leaderSince = time.Now()
				c.mu.Unlock()
				if err := c.republish(ctx); err != nil && ctx.Err() == nil {
					c.log.Warn().Err(err).Msg("re-publishing in-flight groups")
					c.republishDue = true
				}
			} else {
				c.log.Info().Msg("following: scheduling stopped")
			}
		}
		if lead {
			if err := c.tick(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn().Err(err).Msg("coordination tick")
			}
			if time.Since(lastExpire) > 10*time.Second {
				lastExpire = time.Now()
				if r, err := c.o.Node.Apply(ctx, runstate.NewExpireLeases(time.Now())); err == nil && len(r.Expired) > 0 {
					c.log.Info().Strs("workers", r.Expired).Msg("worker leases expired")
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-c.o.Node.Stepped():
			// A step ended: its successor's tasks go out now, not up to a tick later (in a
			// strictly on-policy run every worker waits for them).
		}
	}
	wg.Wait()
	return nil
}

// eventAckWait is the events consumer's AckWait.
const eventAckWait = 5 * time.Second

// eventFetchers events are handled at once: their raft applies, proposed together, share one log
// write (raft batches concurrent applies), which a run of many workers - a heartbeat each every
// few seconds, a group_complete per group - needs to keep up. Order among events does not
// matter: the state machine rejects what no longer applies (a group's completion after its step
// is done, a step reported twice).
const eventFetchers = 8

func (c *Coordinator) finish(st runstate.State) {
	c.doneOnce.Do(func() {
		c.log.Info().Int64("steps", st.Step).Int64("version", st.PolicyVersion).Msg("run complete")
		close(c.done)
	})
}

func batchID(step int64, i int) string { return fmt.Sprintf("s%d-b%d", step, i) }

// resampleBatchID names batch i of re-sampling round r of a step.
func resampleBatchID(step int64, round, i int) string {
	return fmt.Sprintf("s%d-r%d-b%d", step, round, i)
}

// LeaderSince is when this coordinator last became the leader (zero: never).
func (c *Coordinator) LeaderSince() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leaderSince
}

// tick dispatches what the policy version allows, re-dispatches stragglers and notices the end.
// A batch is recorded before it is published and never recorded twice, so when a publish fails
// (the NATS server restarting) the tasks of every waiting group go out again on the next tick,
// with their message ids, instead of waiting for the re-dispatch timeout.
func (c *Coordinator) tick(ctx context.Context) (err error) {
	st := c.o.Node.State()
	if st.Over(c.cfg.Steps) {
		c.finish(st)
		return nil
	}
	defer func() {
		if err != nil {
			c.republishDue = true
		}
	}()
	if c.republishDue {
		if err := c.republish(ctx); err != nil {
			return fmt.Errorf("re-publishing waiting tasks: %w", err)
		}
		c.republishDue = false
		c.log.Info().Msg("waiting tasks published again after a failed publish")
	}
	// Every batch due is recorded first, in one batch of raft entries, then published: a step of
	// many tasks costs one log write, not one per task.
	var (
		due  []runstate.Command
		dueD []runstate.DispatchBatch
	)
	last := min(int64(c.cfg.Steps)-1, st.PolicyVersion+int64(c.cfg.Staleness))
	for s := st.Step; s <= last; s++ {
		left := c.cfg.PromptsPerStep
		for i := 0; left > 0; i++ {
			n := min(left, c.cfg.PromptsPerTask)
			left -= n
			id := batchID(s, i)
			if _, ok := st.Batches[id]; ok {
				continue
			}
			d := runstate.DispatchBatch{BatchID: id, Step: s, Count: n}
			due, dueD = append(due, runstate.NewDispatchBatch(time.Now(), d)), append(dueD, d)
		}
	}
	results, errs := c.o.Node.ApplyAll(ctx, due)
	for i, d := range dueD {
		if errs[i] != nil {
			return fmt.Errorf("dispatch %s: %w", d.BatchID, errs[i])
		}
		if err := c.publish(ctx, d.Step, st.PolicyVersion, results[i].Groups, firstAttempt(results[i].Groups)); err != nil {
			return err
		}
		c.mu.Lock()
		c.dispatched++
		c.mu.Unlock()
		c.log.Debug().Int64("step", d.Step).Str("batch", d.BatchID).Int("prompts", d.Count).Msg("dispatched")
	}
	now := time.Now()
	for _, g := range st.GroupsByStatus(runstate.GroupDispatched) {
		if now.Sub(g.DispatchedAt) < c.cfg.RedispatchAfter.D() {
			continue
		}
		r, err := c.o.Node.Apply(ctx, runstate.NewRedispatch(now, runstate.Redispatch{Key: g.Key(), Attempt: g.Attempts + 1}))
		if err != nil {
			if errors.Is(err, runstate.ErrRejected) {
				continue
			}
			return fmt.Errorf("re-dispatch %s: %w", g.Key(), err)
		}
		if r.Noop || len(r.Groups) == 0 {
			continue
		}
		if err := c.publish(ctx, g.Step, st.PolicyVersion, r.Groups, r.Groups[0].Attempts-1); err != nil {
			return err
		}
		c.mu.Lock()
		c.redispatch++
		c.mu.Unlock()
		c.log.Warn().Str("group", g.Key()).Int("attempt", g.Attempts+1).Dur("after", now.Sub(g.DispatchedAt)).Msg("re-dispatched straggling group")
	}
	return nil
}

// publish sends one BatchTask for groups (all of one step).
func (c *Coordinator) publish(ctx context.Context, step, version int64, groups []runstate.Group, attempt int) error {
	if len(groups) == 0 {
		return nil
	}
	t := bus.BatchTask{Run: c.cfg.RunID, Step: step, PolicyVersion: version, G: c.cfg.GroupSize, Seed: c.cfg.Seed,
		Sampling: bus.SamplingFrom(c.cfg.Sampling), Attempt: attempt}
	for _, g := range groups {
		t.Prompts = append(t.Prompts, bus.PromptRef{Index: int(g.PromptIndex), Prompt: c.PromptAt(g.Epoch, g.PromptIndex)})
	}
	if _, err := bus.PublishTask(ctx, c.js, t); err != nil {
		return fmt.Errorf("publish task: %w", err)
	}
	return nil
}

// republish sends the tasks of every group still waiting for rollout again, with the message ids
// they had: lost publishes (a crash between recording and publishing) are repaired, and tasks
// JetStream already holds are dropped as duplicates.
func (c *Coordinator) republish(ctx context.Context) error {
	st := c.o.Node.State()
	batches := map[string][]runstate.Group{}
	for _, g := range st.GroupsByStatus(runstate.GroupDispatched) {
		if g.Attempts <= 1+st.AttemptBase {
			batches[g.BatchID] = append(batches[g.BatchID], g)
			continue
		}
		if err := c.publish(ctx, g.Step, st.PolicyVersion, []runstate.Group{g}, g.Attempts-1); err != nil {
			return err
		}
	}
	for _, gs := range batches {
		// A batch whose groups were partly re-dispatched gets a new message id here; the learner
		// drops the duplicate samples.
		sort.Slice(gs, func(i, j int) bool {
			if gs[i].Epoch != gs[j].Epoch {
				return gs[i].Epoch < gs[j].Epoch
			}
			return gs[i].PromptIndex < gs[j].PromptIndex
		})
		if err := c.publish(ctx, gs[0].Step, st.PolicyVersion, gs, firstAttempt(gs)); err != nil {
			return err
		}
	}
	return nil
}

// firstAttempt is the task attempt of groups dispatched together for the first time: 0 in a run
// never rewound, past every earlier attempt after a Rewind (runstate.State.AttemptBase).
func firstAttempt(gs []runstate.Group) int {
	if len(gs) == 0 {
		return 0
	}
	return gs[0].Attempts - 1
}

// rewind takes the run back to where a restarted learner resumes when the run state is ahead of
// it: a step, policy version or group the dead learner had taken past it would otherwise never be
// handed out again, and the run would wait for it for good. A learner starting a fresh run, or
// where the state still has everything in flight, changes nothing.
func (c *Coordinator) rewind(ctx context.Context, rw runstate.Rewind) error {
	st := c.o.Node.State()
	if !st.AheadOf(rw) {
		c.log.Info().Int64("step", rw.Step).Msg("learner (re)started where the run state is: nothing to rewind")
		return nil
	}
	r, err := c.o.Node.Apply(ctx, runstate.NewRewind(time.Now(), rw))
	if errors.Is(err, runstate.ErrRejected) {
		c.log.Warn().Err(err).Msg("rewind refused")
		return nil
	}
	if err != nil {
		return fmt.Errorf("rewind: %w", err)
	}
	if !r.Noop {
		c.log.Warn().Int64("from_step", st.Step).Int64("to_step", rw.Step).Int64("policy_version", rw.PolicyVersion).
			Int("groups_in_flight", len(r.Groups)).Msg("learner restarted behind the run: rewound to its checkpoint")
	}
	return c.republish(ctx)
}

// onEvent applies a worker's report to the run state.
func (c *Coordinator) onEvent(ctx context.Context, e *bus.Event, msg jetstream.Msg) error {
	if e.Run != c.cfg.RunID {
		return bus.Poison(fmt.Errorf("event of run %s at the coordinator of run %s", e.Run, c.cfg.RunID))
	}
	if err := e.CheckSender(msg.Subject()); err != nil {
		return bus.Poison(err)
	}
	c.mu.Lock()
	w := c.workers[e.Worker]
	if w == nil {
		c.makeRoomForWorker()
		w = &WorkerInfo{ID: e.Worker}
		c.workers[e.Worker] = w
	}
	w.Role = e.Role
	if e.Time.After(w.LastSeen) {
		w.LastSeen = e.Time
	}
	if e.Step > w.Step {
		w.Step = e.Step
	}
	if e.PolicyVersion > w.PolicyVersion {
		w.PolicyVersion = e.PolicyVersion
	}
	w.Stopped = e.Kind == bus.EventStopped
	if e.Kind == bus.EventTaskDone {
		w.TasksDone++
	}
	c.mu.Unlock()

	now := time.Now()
	apply := func(cmd runstate.Command) error {
		_, err := c.o.Node.Apply(ctx, cmd)
		if errors.Is(err, runstate.ErrRejected) {
			// Out of order or already applied elsewhere: the state is authoritative.
			c.log.Debug().Err(err).Str("kind", e.Kind).Msg("event not applied")
			return nil
		}
		return err
	}
	switch e.Kind {
	case bus.EventStarted, bus.EventHeartbeat:
		return apply(runstate.NewHeartbeat(now, runstate.Heartbeat{WorkerID: e.Worker, Role: e.Role,
			TTL: 3 * c.cfg.Wire.Heartbeat.D()}))
	case bus.EventGroupComplete:
		return apply(runstate.NewGroupsScored(now, e.Message))
	case bus.EventStepDone:
		var rep bus.StepReport
		if err := json.Unmarshal([]byte(e.Message), &rep); err != nil {
			return bus.Poison(fmt.Errorf("step_done event: %w", err))
		}
		// The metrics are recorded before the step is applied: applying the last step ends the
		// run (Done closes), and whoever reads the status then must see the last step's metrics.
		c.mu.Lock()
		c.lastMetrics = rep.Metrics
		c.mu.Unlock()
		c.setMetricGauges(rep.Metrics)
		if err := apply(runstate.NewStepDone(now, runstate.StepDone{Step: e.Step, PolicyVersion: e.PolicyVersion, Learned: rep.Learned, Final: rep.Final})); err != nil {
			return err
		}
		c.log.Info().Int64("step", e.Step).Int64("version", e.PolicyVersion).Int("groups", len(rep.Learned)).Msg("step done")
	case bus.EventStepResample:
		var rq bus.ResampleRequest
		if err := json.Unmarshal([]byte(e.Message), &rq); err != nil || rq.Round < 1 {
			return bus.Poison(fmt.Errorf("step_resample event: round %d: %v", rq.Round, err))
		}
		if rq.Count < 0 || rq.Count > c.cfg.PromptsPerStep {
			return bus.Poison(fmt.Errorf("step_resample event: step %d round %d asks for %d prompts, want 1..%d (prompts_per_step; 0 for all)",
				e.Step, rq.Round, rq.Count, c.cfg.PromptsPerStep))
		}
		return c.resample(ctx, e.Step, rq)
	case bus.EventLearnerResumed:
		var rw runstate.Rewind
		if err := json.Unmarshal([]byte(e.Message), &rw); err != nil || rw.ID == "" {
			return bus.Poison(fmt.Errorf("learner_resumed event: %v", err))
		}
		return c.rewind(ctx, rw)
	case bus.EventCheckpoint:
		return apply(runstate.NewCommitCheckpoint(now, runstate.CommitCheckpoint{Step: e.Step, Key: e.Message, PolicyVersion: e.PolicyVersion}))
	case bus.EventError:
		c.log.Warn().Str("worker", e.Worker).Str("error", e.Message).Msg("worker error")
	}
	return nil
}

// resample dispatches fresh prompts for a step that lacks informative groups (round rq.Round):
// the next rq.Count prompts of the data cursor (P when 0), recorded under batch ids of the round
// (so a repeated request is a no-op) and published with the current policy version, which the
// step did not advance.
func (c *Coordinator) resample(ctx context.Context, step int64, rq bus.ResampleRequest) error {
	count := rq.Count
	if count == 0 {
		count = c.cfg.PromptsPerStep
	}
	left := count
	for i := 0; left > 0; i++ {
		n := min(left, c.cfg.PromptsPerTask)
		left -= n
		id := resampleBatchID(step, rq.Round, i)
		r, err := c.o.Node.Apply(ctx, runstate.NewDispatchBatch(time.Now(), runstate.DispatchBatch{BatchID: id, Step: step, Count: n}))
		if errors.Is(err, runstate.ErrRejected) {
			c.log.Warn().Err(err).Str("batch", id).Msg("re-sampling batch not dispatched")
			return nil
		}
		if err != nil {
			return fmt.Errorf("dispatch %s: %w", id, err)
		}
		if err := c.publish(ctx, step, r.PolicyVersion, r.Groups, firstAttempt(r.Groups)); err != nil {
			return err
		}
	}
	c.log.Info().Int64("step", step).Int("round", rq.Round).Int("dropped", len(rq.Dropped)).Int("prompts", count).
		Msg("groups of the step tied: fresh prompts dispatched")
	return nil
}

// Workers returns what the coordinator knows of each worker, ordered by id.
func (c *Coordinator) Workers() []WorkerInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]WorkerInfo, 0, len(c.workers))
	for _, w := range c.workers {
		out = append(out, *w)
	}
	slices.SortFunc(out, func(a, b WorkerInfo) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}

// Redispatched counts groups handed out again.
func (c *Coordinator) Redispatched() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.redispatch
}

// MaxWorkers bounds the workers the coordinator remembers for its status: worker ids change with
// every restart (<kind>-<host>-<pid>), so a long run with elastic pools would otherwise grow the map for
// ever.
const MaxWorkers = 1024

// makeRoomForWorker forgets the least recently seen worker when MaxWorkers are remembered
// (c.mu held).
func (c *Coordinator) makeRoomForWorker() {
	if len(c.workers) < MaxWorkers {
		return
	}
	var oldest *WorkerInfo
	for _, w := range c.workers {
		if oldest == nil || w.LastSeen.Before(oldest.LastSeen) {
			oldest = w
		}
	}
	delete(c.workers, oldest.ID)
}

// encodable keeps the prompts the policy's tokenizer can encode (rollout workers refuse the others
// as poison, which would leave their groups re-dispatched forever). A prompt file in the reference
// format may hold words outside our world's vocabulary; they are skipped with a warning naming the
// first few.
func encodable(ps []prompts.Prompt, file string, log zerolog.Logger) []prompts.Prompt {
	vocab := tokenizer.New()
	out := make([]prompts.Prompt, 0, len(ps))
	var bad []string
	for i, p := range ps {
		if _, err := vocab.Encode(p.Prompt); err != nil {
			if len(bad) < 3 {
				bad = append(bad, fmt.Sprintf("prompt %d: %v", i+1, err))
			}
			continue
		}
		out = append(out, p)
	}
	if skipped := len(ps) - len(out); skipped > 0 {
		log.Warn().Str("file", file).Int("skipped", skipped).Int("kept", len(out)).Strs("examples", bad).
			Msg("prompts outside the policy's vocabulary are not used")
	}
	return out
}
