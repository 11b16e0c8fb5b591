package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/config"
)

// Handler processes one message. It publishes its output (waiting for the PubAck) before
// returning nil; Consume acks only then. A returned error means "try again later" unless it wraps
// ErrPoison, which sends the message straight to the dead-letter stream.
type Handler func(ctx context.Context, msg jetstream.Msg) error

// ErrPoison marks a message that can never be processed (undecodable, invalid, wrong type).
var ErrPoison = errors.New("poison message")

// Poison wraps err so that Consume dead-letters the message at once instead of retrying it.
func Poison(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrPoison, err)
}

// Typed adapts a handler of decoded, validated messages: the message is decoded into a fresh *T,
// its Bicot-Type header (when present) checked, and Validate run; any failure is poison.
func Typed[T any, PT interface {
	*T
	Message
}](h func(ctx context.Context, m PT, msg jetstream.Msg) error) Handler {
	return func(ctx context.Context, msg jetstream.Msg) error {
		m := PT(new(T))
		if got := msg.Headers().Get(HeaderType); got != "" && got != m.MsgType() {
			return Poison(fmt.Errorf("message type %q where %q was expected", got, m.MsgType()))
		}
		if err := Decode(msg.Data(), m); err != nil {
			return Poison(err)
		}
		return h(ctx, m, msg)
	}
}

// ConsumeOptions tune a pool's consumer and this process's share of it.
type ConsumeOptions struct {
	// Fetchers is how many messages this process works on at once (goroutines pulling from the
	// one durable consumer); default 1.
	Fetchers int
	// AckWait: an unacked message is redelivered after this; default 30 s.
	AckWait time.Duration
	// MaxDeliver attempts before a message is dead-lettered; default 5.
	MaxDeliver int
	// InProgressEvery: while a handler runs, the message's AckWait is reset this often;
	// default AckWait/3. Negative disables it.
	InProgressEvery time.Duration
	// RetryDelay before a failed message is redelivered (Nak with delay), doubled on each
	// further delivery up to AckWait; default 1 s.
	RetryDelay time.Duration
	// MaxAckPending bounds messages in flight across the whole pool; default 1000.
	MaxAckPending int
	// PollWait is the longest one fetch request waits for work; default 5 s.
	PollWait time.Duration
	// Logger for redeliveries and dead letters; default: no logging.
	Logger *zerolog.Logger
}

func (o *ConsumeOptions) defaults() error {
	if o.Fetchers == 0 {
		o.Fetchers = 1
	}
	if o.AckWait == 0 {
		o.AckWait = 30 * time.Second
	}
	if o.MaxDeliver == 0 {
		o.MaxDeliver = 5
	}
	if o.InProgressEvery == 0 {
		o.InProgressEvery = o.AckWait / 3
	}
	if o.RetryDelay == 0 {
		o.RetryDelay = time.Second
	}
	if o.MaxAckPending == 0 {
		o.MaxAckPending = 1000
	}
	if o.PollWait == 0 {
		o.PollWait = 5 * time.Second
	}
	switch {
	case o.Fetchers < 1:
		return fmt.Errorf("consume: fetchers %d, want >= 1", o.Fetchers)
	case o.AckWait < 10*time.Millisecond:
		return fmt.Errorf("consume: ack wait %v too short", o.AckWait)
	case o.MaxDeliver < 1:
		return fmt.Errorf("consume: max deliver %d, want >= 1", o.MaxDeliver)
	case o.InProgressEvery > 0 && o.InProgressEvery >= o.AckWait:
		return fmt.Errorf("consume: in-progress interval %v must be below ack wait %v", o.InProgressEvery, o.AckWait)
	case o.RetryDelay < 0:
		return fmt.Errorf("consume: negative retry delay %v", o.RetryDelay)
	case o.MaxAckPending < o.Fetchers:
		return fmt.Errorf("consume: max ack pending %d below fetchers %d", o.MaxAckPending, o.Fetchers)
	case o.PollWait < 100*time.Millisecond:
		return fmt.Errorf("consume: poll wait %v too short", o.PollWait)
	}
	return nil
}

// consumerConfig is the durable pull consumer of a queue. The server allows one delivery beyond
// MaxDeliver: a worker that crashes on the last attempt leaves the message unacked, and that
// extra delivery is how it reaches the dead-letter stream instead of sitting in the queue forever.
func consumerConfig(q Queue, o ConsumeOptions) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       q.Consumer,
		Description:   "bicot " + q.Kind + " pool of run " + q.Run,
		FilterSubject: q.Subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    o.MaxDeliver + 1,
		MaxAckPending: o.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// EnsureConsumer creates or updates a queue's durable consumer with o's settings (every member of
// a pool should use the same ones).
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, q Queue, o ConsumeOptions) (jetstream.Consumer, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	c, err := js.CreateOrUpdateConsumer(ctx, q.Stream, consumerConfig(q, o))
	if err != nil {
		return nil, fmt.Errorf("consumer %s/%s: %w", q.Stream, q.Consumer, err)
	}
	return c, nil
}

// Consume runs h on the queue's messages with o.Fetchers concurrent fetchers sharing the one
// durable consumer (a work-queue stream refuses a second consumer over the same subjects, so a
// pool scales by fetchers and processes, never by consumers). It blocks until ctx ends, waits for
// running handlers, and returns nil; it returns an error only if the consumer cannot be set up.
//
// Per message: a handler success is acked (DoubleAck, confirmed by the server); an error is
// Nak'd with a growing delay; an ErrPoison error, or failure on delivery MaxDeliver, publishes a
// DeadLetter and Terms the message. Handlers get InProgress ticks so long work is not redelivered.
func Consume(ctx context.Context, js jetstream.JetStream, q Queue, h Handler, o ConsumeOptions) error {
	if err := o.defaults(); err != nil {
		return err
	}
	if h == nil {
		return errors.New("consume: nil handler")
	}
	cons, err := EnsureConsumer(ctx, js, q, o)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	log := zerolog.Nop()
	if o.Logger != nil {
		log = *o.Logger
	}
	c := &consumer{js: js, q: q, h: h, o: o, log: log.With().Str("stream", q.Stream).Str("consumer", q.Consumer).Logger()}
	var wg sync.WaitGroup
	for range o.Fetchers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.fetchLoop(ctx, cons)
		}()
	}
	wg.Wait()
	return nil
}

type consumer struct {
	js  jetstream.JetStream
	q   Queue
	h   Handler
	o   ConsumeOptions
	log zerolog.Logger
}

func (c *consumer) fetchLoop(ctx context.Context, cons jetstream.Consumer) {
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, c.o.PollWait)
		msg, err := cons.Next(jetstream.FetchContext(fctx))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// An idle pull ends in one of these, depending on whether the client-side context or
			// the server-side request expired first: no work yet, not a failure.
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrNoMessages) ||
				errors.Is(err, nats.ErrTimeout) {
				continue
			}
			// Server gone or consumer deleted: back off, the connection reconnects by itself.
			c.log.Warn().Err(err).Msg("fetch failed")
			select {
			case <-ctx.Done():
				return
			case <-time.After(c.o.RetryDelay):
			}
			continue
		}
		c.process(ctx, msg)
	}
}

// settleTimeout bounds acks and dead-letter publishes, which must finish even during shutdown.
const settleTimeout = 5 * time.Second

func (c *consumer) process(ctx context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		// Not a JetStream message: nothing to ack or redeliver.
		c.log.Error().Err(err).Str("subject", msg.Subject()).Msg("message without metadata")
		return
	}
	if meta.NumDelivered > uint64(c.o.MaxDeliver) {
		c.deadLetter(msg, meta, fmt.Errorf("not acked after %d deliveries (worker crashed or timed out)", c.o.MaxDeliver))
		return
	}

	hctx, cancel := context.WithCancel(ctx)
	tickDone := make(chan struct{})
	if c.o.InProgressEvery > 0 {
		go func() {
			defer close(tickDone)
			t := time.NewTicker(c.o.InProgressEvery)
			defer t.Stop()
			for {
				select {
				case <-hctx.Done():
					return
				case <-t.C:
					if err := msg.InProgress(); err != nil {
						c.log.Warn().Err(err).Uint64("seq", meta.Sequence.Stream).Msg("in-progress tick failed")
					}
				}
			}
		}()
	} else {
		close(tickDone)
	}
	herr := c.safeHandle(hctx, msg)
	cancel()
	<-tickDone

	sctx, scancel := context.WithTimeout(context.Background(), settleTimeout)
	defer scancel()
	switch {
	case herr == nil:
		if err := msg.DoubleAck(sctx); err != nil {
			// The output is published; a redelivery will produce a duplicate that the message
			// id (and the learner's key check) absorbs.
			c.log.Warn().Err(err).Uint64("seq", meta.Sequence.Stream).Msg("ack failed")
		}
	case errors.Is(herr, ErrPoison):
		c.deadLetter(msg, meta, herr)
	case ctx.Err() != nil:
		// Shutting down: hand the message to another worker now.
		_ = msg.Nak()
	case meta.NumDelivered >= uint64(c.o.MaxDeliver):
		c.deadLetter(msg, meta, fmt.Errorf("failed on delivery %d of %d: %w", meta.NumDelivered, c.o.MaxDeliver, herr))
	default:
		delay := c.o.RetryDelay << min(meta.NumDelivered-1, 16)
		delay = min(delay, c.o.AckWait)
		c.log.Warn().Err(herr).Uint64("seq", meta.Sequence.Stream).Uint64("delivery", meta.NumDelivered).
			Dur("retry_in", delay).Msg("handler failed")
		if err := msg.NakWithDelay(delay); err != nil {
			c.log.Warn().Err(err).Msg("nak failed; redelivery after ack wait")
		}
	}
}

// safeHandle turns a handler panic into poison: a message that crashes a worker every time would
// otherwise take the whole pool down one delivery at a time.
func (c *consumer) safeHandle(ctx context.Context, msg jetstream.Msg) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = Poison(fmt.Errorf("handler panic: %v", r))
		}
	}()
	return c.h(ctx, msg)
}

func (c *consumer) deadLetter(msg jetstream.Msg, meta *jetstream.MsgMetadata, reason error) {
	hdr := map[string]string{}
	for k, v := range msg.Headers() {
		if len(v) > 0 {
			hdr[k] = v[0]
		}
	}
	d := DeadLetter{
		Run:        c.q.Run,
		Stream:     meta.Stream,
		Consumer:   meta.Consumer,
		Subject:    msg.Subject(),
		Sequence:   meta.Sequence.Stream,
		Deliveries: meta.NumDelivered,
		Error:      reason.Error(),
		Headers:    hdr,
		Data:       msg.Data(),
	}
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	if _, err := PublishDeadLetter(ctx, c.js, c.q.Kind, d); err != nil {
		// Keep the message: it comes back and we try again rather than lose it.
		c.log.Error().Err(err).Uint64("seq", d.Sequence).Msg("dead letter publish failed")
		_ = msg.NakWithDelay(c.o.RetryDelay)
		return
	}
	c.log.Error().Str("reason", d.Error).Uint64("seq", d.Sequence).Uint64("deliveries", d.Deliveries).Msg("dead-lettered")
	if err := msg.TermWithReason(truncate(d.Error, 200)); err != nil {
		c.log.Warn().Err(err).Uint64("seq", d.Sequence).Msg("term failed")
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// ConsumeFrom is a pool's consumer settings from the run config's wire section, with fetchers
// pull loops in this process: every role derives them here, in laptop mode and in the cluster.
func ConsumeFrom(w config.Wire, fetchers int) ConsumeOptions {
	return ConsumeOptions{Fetchers: fetchers, AckWait: w.AckWait.D(), MaxDeliver: w.MaxDeliver,
		RetryDelay: w.RetryDelay.D(), PollWait: w.PollWait.D()}
}
