package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/config"
)

// Queue kinds: the work-queue pools of a run.
const (
	KindTasks   = "tasks"   // coordinator -> rollout workers (BatchTask)
	KindSamples = "samples" // rollout workers -> reward workers (Sample)
	KindScored  = "scored"  // reward workers -> learner (ScoredSample)
	KindEvents  = "events"  // every worker -> coordinator (Event), on one subject per role
)

// SubjectPrefix begins every subject of the wire: bicot.<run>.<kind>.
const SubjectPrefix = "bicot"

// Queue names one work queue: a stream, the subject publishers use, the durable pull consumer
// the pool shares, and where its dead letters go.
type Queue struct {
	Run         string
	Kind        string
	Stream      string
	Subject     string
	Consumer    string
	DeadSubject string
}

// Topology is every stream and subject of one run.
type Topology struct {
	Run     string
	Tasks   Queue
	Samples Queue
	Scored  Queue
	Events  Queue

	// DeadStream keeps dead letters of every queue, on subjects DeadSubjectPrefix + "." + kind.
	DeadStream        string
	DeadSubjectPrefix string

	// PolicyStream keeps the latest PolicyAnnounce on PolicySubject (one message per subject).
	PolicyStream  string
	PolicySubject string
}

func streamName(run, kind string) string {
	return "BICOT_" + run + "_" + strings.ToUpper(kind)
}

// Subject returns the subject of a kind in a run: bicot.<run>.<kind>.
func Subject(run, kind string) string { return SubjectPrefix + "." + run + "." + kind }

// EventSubject is where a role publishes its events: bicot.<run>.events.<role>. One subject per
// role lets the NATS server's permissions (natsd.Permissions) decide who may speak as whom, and the
// coordinator refuses an event whose role is not its subject's (a rollout worker's credentials
// cannot report a step as learned).
func EventSubject(run, role string) string { return Subject(run, KindEvents) + "." + role }

// NewTopology names the streams and subjects of a run without touching the server.
func NewTopology(run string) (Topology, error) {
	if err := config.ValidateRunID(run); err != nil {
		return Topology{}, err
	}
	t := Topology{
		Run:               run,
		DeadStream:        streamName(run, "dead"),
		DeadSubjectPrefix: Subject(run, "dead"),
		PolicyStream:      streamName(run, "policy"),
		PolicySubject:     Subject(run, "policy"),
	}
	q := func(kind, consumer string) Queue {
		return Queue{
			Run:         run,
			Kind:        kind,
			Stream:      streamName(run, kind),
			Subject:     Subject(run, kind),
			Consumer:    consumer,
			DeadSubject: t.DeadSubjectPrefix + "." + kind,
		}
	}
	t.Tasks = q(KindTasks, "rollout")
	t.Samples = q(KindSamples, "reward")
	t.Scored = q(KindScored, "learner")
	t.Events = q(KindEvents, "coordinator")
	t.Events.Subject = Subject(run, KindEvents) + ".>"
	return t, nil
}

// Queues lists the run's work queues.
func (t Topology) Queues() []Queue { return []Queue{t.Tasks, t.Samples, t.Scored, t.Events} }

// StreamOptions tune the streams EnsureStreams creates.
type StreamOptions struct {
	// Replicas per stream on a clustered server; default 1.
	Replicas int
	// Storage: jetstream.FileStorage (default) or jetstream.MemoryStorage.
	Storage jetstream.StorageType
	// DedupWindow: how long JetStream remembers a Nats-Msg-Id; default 10 min, longer than the
	// slowest redelivery path so a re-published sample is recognised.
	DedupWindow time.Duration
	// EventsMaxAge bounds the events stream if nobody consumes it; default 1 h.
	EventsMaxAge time.Duration
	// DeadMaxAge keeps dead letters for inspection; default 7 days.
	DeadMaxAge time.Duration
	// MaxMsgSize per message; default DefaultMaxPayload.
	MaxMsgSize int32
	// MaxBytes bounds each stream's storage; default DefaultStreamBytes. A full work queue
	// refuses new messages (publishers see the error and retry: backpressure, nothing dropped);
	// a full dead-letter or events stream drops its oldest.
	MaxBytes int64
}

// DefaultStreamBytes is each stream's storage bound: thousands of samples (a few KB each, a few
// hundred KB with an attached PNG), more than a run holds in flight (P x G per step, a few steps
// ahead). JetStream reserves it against the server's storage when the stream is created, so it
// is kept modest: a run's seven streams reserve under 1 GiB.
const DefaultStreamBytes = 128 << 20

func (o *StreamOptions) defaults() error {
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Replicas < 1 || o.Replicas > 5 {
		return fmt.Errorf("stream replicas %d: want 1-5", o.Replicas)
	}
	if o.DedupWindow == 0 {
		o.DedupWindow = 10 * time.Minute
	}
	if o.EventsMaxAge == 0 {
		o.EventsMaxAge = time.Hour
	}
	if o.DeadMaxAge == 0 {
		o.DeadMaxAge = 7 * 24 * time.Hour
	}
	if o.MaxMsgSize == 0 {
		o.MaxMsgSize = DefaultMaxPayload
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultStreamBytes
	}
	if o.DedupWindow < 0 || o.EventsMaxAge < 0 || o.DeadMaxAge < 0 || o.MaxMsgSize < 0 || o.MaxBytes < 0 {
		return errors.New("stream options: negative duration or size")
	}
	return nil
}

// EnsureStreams creates (or updates to the current definition) every stream of a run with default
// options, and each work queue's durable consumer if it does not exist yet. It is idempotent: every role calls it at start-up.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, run string) (Topology, error) {
	return EnsureStreamsWith(ctx, js, run, StreamOptions{})
}

// EnsureStreamsWith is EnsureStreams with explicit options.
func EnsureStreamsWith(ctx context.Context, js jetstream.JetStream, run string, o StreamOptions) (Topology, error) {
	t, err := NewTopology(run)
	if err != nil {
		return Topology{}, err
	}
	if err := o.defaults(); err != nil {
		return Topology{}, err
	}
	cfgs := streamConfigs(t, o)
	// Look before creating: a stream already as defined is left alone, so a role whose NATS
	// permissions only let it read stream information (every worker's, natsd.Permissions) finds
	// the streams the coordinator created.
	for _, c := range cfgs {
		if s, err := js.Stream(ctx, c.Name); err == nil && sameStream(s.CachedInfo().Config, c) {
			continue
		}
		if _, err := js.CreateOrUpdateStream(ctx, c); err != nil {
			return Topology{}, fmt.Errorf("ensure stream %s: %w", c.Name, err)
		}
	}
	// Durable consumers exist from the start so queue depth is measurable (an autoscaler can
	// scale a pool up from zero). An existing consumer keeps the settings its pool gave it.
	for _, q := range t.Queues() {
		if _, err := js.Consumer(ctx, q.Stream, q.Consumer); err == nil {
			continue
		}
		def := ConsumeOptions{}
		if err := def.defaults(); err != nil {
			return Topology{}, err
		}
		_, err := js.CreateConsumer(ctx, q.Stream, consumerConfig(q, def))
		if err != nil && !errors.Is(err, jetstream.ErrConsumerExists) {
			return Topology{}, fmt.Errorf("ensure consumer %s/%s: %w", q.Stream, q.Consumer, err)
		}
	}
	return t, nil
}

// AwaitStreams is EnsureStreams for a role that may start before the coordinator and may lack
// the right to create streams (natsd.Permissions): it tries, and until the streams are there
// (created by itself or by the coordinator) tries again every second, until ctx ends.
func AwaitStreams(ctx context.Context, js jetstream.JetStream, run string, log zerolog.Logger) (Topology, error) {
	if _, err := NewTopology(run); err != nil {
		return Topology{}, err
	}
	for warned := false; ; {
		// A create the server's permissions refuse is never answered: bound each try.
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		t, err := EnsureStreams(actx, js, run)
		cancel()
		if err == nil {
			return t, nil
		}
		if ctx.Err() != nil {
			return Topology{}, fmt.Errorf("waiting for the streams of run %s: %w (last error: %v)", run, ctx.Err(), err)
		}
		if !warned {
			log.Warn().Err(err).Str("run", run).Msg("waiting for the run's streams (the coordinator creates them)")
			warned = true
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// sameStream reports whether a stream's configuration has every setting EnsureStreams gives it.
func sameStream(have, want jetstream.StreamConfig) bool {
	// The server records "no limit" as -1.
	unlimited := func(n int64) int64 {
		if n == 0 {
			return -1
		}
		return n
	}
	return slices.Equal(have.Subjects, want.Subjects) && have.Retention == want.Retention && have.Discard == want.Discard &&
		have.Storage == want.Storage && have.Replicas == want.Replicas && have.Duplicates == want.Duplicates &&
		have.MaxMsgSize == want.MaxMsgSize && have.MaxBytes == unlimited(want.MaxBytes) && have.MaxAge == want.MaxAge && have.MaxMsgsPerSubject == unlimited(want.MaxMsgsPerSubject) &&
		have.Description == want.Description
}

// streamConfigs are the definitions of a run's streams (o with its defaults applied).
func streamConfigs(t Topology, o StreamOptions) []jetstream.StreamConfig {
	base := func(name string, subjects ...string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:       name,
			Subjects:   subjects,
			Storage:    o.Storage,
			Replicas:   o.Replicas,
			Duplicates: o.DedupWindow,
			MaxMsgSize: o.MaxMsgSize,
			MaxBytes:   o.MaxBytes,
			Discard:    jetstream.DiscardOld,
		}
	}
	var cfgs []jetstream.StreamConfig
	for _, q := range []Queue{t.Tasks, t.Samples, t.Scored} {
		c := base(q.Stream, q.Subject)
		c.Description = "bicot " + q.Kind + " work queue of run " + t.Run
		c.Retention = jetstream.WorkQueuePolicy
		// A full work queue must push back on publishers, not silently drop work.
		c.Discard = jetstream.DiscardNew
		cfgs = append(cfgs, c)
	}
	ev := base(t.Events.Stream, t.Events.Subject)
	ev.Description = "bicot progress events of run " + t.Run
	ev.Retention = jetstream.WorkQueuePolicy
	ev.MaxAge = o.EventsMaxAge
	cfgs = append(cfgs, ev)

	dead := base(t.DeadStream, t.DeadSubjectPrefix+".>")
	dead.Description = "bicot dead letters of run " + t.Run
	dead.Retention = jetstream.LimitsPolicy
	dead.MaxAge = o.DeadMaxAge
	cfgs = append(cfgs, dead)

	pol := base(t.PolicyStream, t.PolicySubject)
	pol.Description = "bicot policy versions of run " + t.Run + " (the latest few kept)"
	pol.Retention = jetstream.LimitsPolicy
	// A few, not one: a message that is not a valid announcement (garbage anyone could publish)
	// must not erase the last valid one; LatestPolicy reads back past it.
	pol.MaxMsgsPerSubject = PolicyHistory
	cfgs = append(cfgs, pol)

	return cfgs
}

// DeleteStreams removes every stream of a run (its queued work, dead letters and policy).
func DeleteStreams(ctx context.Context, js jetstream.JetStream, run string) error {
	t, err := NewTopology(run)
	if err != nil {
		return err
	}
	names := []string{t.DeadStream, t.PolicyStream}
	for _, q := range t.Queues() {
		names = append(names, q.Stream)
	}
	for _, n := range names {
		if err := js.DeleteStream(ctx, n); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("delete stream %s: %w", n, err)
		}
	}
	return nil
}

// Depth reports a pool's queue: pending is the number of messages not yet delivered to the
// consumer, ackPending the number delivered and not yet acked (in flight). pending + ackPending is
// the backlog an autoscaler should watch.
func Depth(ctx context.Context, js jetstream.JetStream, stream, consumer string) (pending, ackPending uint64, err error) {
	c, err := js.Consumer(ctx, stream, consumer)
	if err != nil {
		return 0, 0, fmt.Errorf("depth %s/%s: %w", stream, consumer, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("depth %s/%s: %w", stream, consumer, err)
	}
	return info.NumPending, uint64(max(info.NumAckPending, 0)), nil
}
