package learner

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publishRetryFor is how long the learner keeps trying a publish the bus does not take (the NATS
// server restarting, JetStream recovering its streams): as long as the S3 store rides out an
// outage of its own (s3.DefaultRetryFor), so a short outage of either pauses the run instead of
// ending the learner, whose successor would have to relearn every step since its checkpoint.
const publishRetryFor = 5 * time.Minute

// retryPublish runs publish (one attempt, bounded by its own timeout) until it succeeds, fails
// with an error that is not the bus being unavailable, ctx ends or publishRetryFor has passed.
// Every publish it wraps carries a message id, so an attempt that reached the server although its
// acknowledgement was lost is not stored twice.
func (l *Learner) retryPublish(ctx context.Context, what string, publish func() error) error {
	start := time.Now()
	wait := 200 * time.Millisecond
	for {
		err := publish()
		if err == nil || !busUnavailable(err) || ctx.Err() != nil || time.Since(start)+wait > publishRetryFor {
			return err
		}
		l.log.Warn().Err(err).Str("what", what).Dur("retry_in", wait).Msg("the bus took no publish; retrying")
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// busUnavailable says whether a publish failed because the server or the stream could not take it
// for now (disconnected, restarting, no acknowledgement in time), not because of the message.
func busUnavailable(err error) bool {
	for _, e := range []error{context.DeadlineExceeded, nats.ErrTimeout, nats.ErrNoResponders, jetstream.ErrNoStreamResponse,
		nats.ErrDisconnected, nats.ErrConnectionReconnecting, nats.ErrReconnectBufExceeded} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
