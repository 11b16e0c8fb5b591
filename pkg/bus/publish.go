package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Header names set on every message.
const (
	HeaderType    = "Bicot-Type"
	HeaderVersion = "Bicot-V"
)

// DefaultPublishTimeout bounds waiting for a PubAck when the context has no deadline.
const DefaultPublishTimeout = 10 * time.Second

// DefaultMaxPayload is the largest message publishers send and streams accept: big enough for a
// sample with a PNG attached. NATS servers must allow it (max_payload; pkg/natsd does).
const DefaultMaxPayload = 8 << 20

// ErrTooLarge is returned (wrapped) when an encoded message exceeds DefaultMaxPayload.
var ErrTooLarge = errors.New("message larger than the maximum payload")

// Publish validates m, sends it on subject with its Nats-Msg-Id and waits for JetStream's PubAck,
// so that when Publish returns nil the message is stored (or was already stored: ack.Duplicate).
func Publish(ctx context.Context, js jetstream.JetStream, subject string, m Message) (*jetstream.PubAck, error) {
	data, err := Encode(m)
	if err != nil {
		return nil, fmt.Errorf("publish to %s: %w", subject, err)
	}
	if len(data) > DefaultMaxPayload {
		return nil, fmt.Errorf("publish %s %s to %s: %d bytes: %w", m.MsgType(), m.MsgID(), subject, len(data), ErrTooLarge)
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	msg.Header.Set(HeaderType, m.MsgType())
	msg.Header.Set(HeaderVersion, strconv.Itoa(SchemaVersion))
	var opts []jetstream.PublishOpt
	if id := m.MsgID(); id != "" {
		opts = append(opts, jetstream.WithMsgID(id))
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultPublishTimeout)
		defer cancel()
	}
	ack, err := js.PublishMsg(ctx, msg, opts...)
	if err != nil {
		return nil, fmt.Errorf("publish %s %s to %s: %w", m.MsgType(), m.MsgID(), subject, err)
	}
	return ack, nil
}

// PublishTask sends a batch to the run's rollout pool. A zero V is set to SchemaVersion.
func PublishTask(ctx context.Context, js jetstream.JetStream, t BatchTask) (*jetstream.PubAck, error) {
	if t.V == 0 {
		t.V = SchemaVersion
	}
	return Publish(ctx, js, Subject(t.Run, KindTasks), &t)
}

// PublishSample sends a sample to the run's reward pool. A zero V is set to SchemaVersion.
func PublishSample(ctx context.Context, js jetstream.JetStream, s Sample) (*jetstream.PubAck, error) {
	if s.V == 0 {
		s.V = SchemaVersion
	}
	return Publish(ctx, js, Subject(s.Run, KindSamples), &s)
}

// PublishScored sends a scored sample to the run's learner. A zero V is set to SchemaVersion.
func PublishScored(ctx context.Context, js jetstream.JetStream, s ScoredSample) (*jetstream.PubAck, error) {
	if s.V == 0 {
		s.V = SchemaVersion
	}
	return Publish(ctx, js, Subject(s.Run, KindScored), &s)
}

// PublishEvent sends a progress event to the run's coordinator, on its role's subject
// (EventSubject). Zero V and Time are filled in.
func PublishEvent(ctx context.Context, js jetstream.JetStream, e Event) (*jetstream.PubAck, error) {
	if e.V == 0 {
		e.V = SchemaVersion
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	return Publish(ctx, js, EventSubject(e.Run, e.Role), &e)
}

// PublishDeadLetter records a dead letter under the run's dead subject for kind.
func PublishDeadLetter(ctx context.Context, js jetstream.JetStream, kind string, d DeadLetter) (*jetstream.PubAck, error) {
	if d.V == 0 {
		d.V = SchemaVersion
	}
	if d.Time.IsZero() {
		d.Time = time.Now().UTC()
	}
	return Publish(ctx, js, Subject(d.Run, "dead")+"."+kind, &d)
}
