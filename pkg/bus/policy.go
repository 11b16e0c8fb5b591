package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrNoPolicy is returned (wrapped) by LatestPolicy before the first announcement.
var ErrNoPolicy = errors.New("no policy version announced yet")

// PolicyHistory is how many messages the policy stream keeps, and how far back LatestPolicy looks
// for a valid announcement.
const PolicyHistory = 16

// AnnouncePolicy publishes a new policy version. The policy stream keeps only the latest message,
// so a worker that joins later reads the current version with LatestPolicy.
func AnnouncePolicy(ctx context.Context, js jetstream.JetStream, p PolicyAnnounce) (*jetstream.PubAck, error) {
	if p.V == 0 {
		p.V = SchemaVersion
	}
	if p.Time.IsZero() {
		p.Time = time.Now().UTC()
	}
	return Publish(ctx, js, Subject(p.Run, "policy"), &p)
}

// LatestPolicy returns the current policy version of a run.
func LatestPolicy(ctx context.Context, js jetstream.JetStream, run string) (PolicyAnnounce, error) {
	t, err := NewTopology(run)
	if err != nil {
		return PolicyAnnounce{}, err
	}
	s, err := js.Stream(ctx, t.PolicyStream)
	if err != nil {
		return PolicyAnnounce{}, fmt.Errorf("latest policy of %s: %w", run, err)
	}
	raw, err := s.GetLastMsgForSubject(ctx, t.PolicySubject)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return PolicyAnnounce{}, fmt.Errorf("latest policy of %s: %w", run, ErrNoPolicy)
		}
		return PolicyAnnounce{}, fmt.Errorf("latest policy of %s: %w", run, err)
	}
	// The newest valid announcement: invalid messages after it are skipped.
	var first error
	for seq, tries := raw.Sequence, 0; seq > 0 && tries < PolicyHistory; seq, tries = seq-1, tries+1 {
		if seq != raw.Sequence {
			if raw, err = s.GetMsg(ctx, seq); err != nil {
				if errors.Is(err, jetstream.ErrMsgNotFound) {
					continue
				}
				return PolicyAnnounce{}, fmt.Errorf("latest policy of %s: %w", run, err)
			}
		}
		var p PolicyAnnounce
		if err := Decode(raw.Data, &p); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		if p.Run != run {
			continue
		}
		return p, nil
	}
	if first == nil {
		first = ErrNoPolicy
	}
	return PolicyAnnounce{}, fmt.Errorf("latest policy of %s: no valid announcement among the last %d messages: %w", run, PolicyHistory, first)
}

// WatchPolicy calls fn with the current policy version (if any) and then with each new one, in
// order, until ctx ends; it returns nil then. Announcements that fail validation are skipped and
// reported through onError when it is not nil.
func WatchPolicy(ctx context.Context, js jetstream.JetStream, run string, fn func(PolicyAnnounce), onError func(error)) error {
	t, err := NewTopology(run)
	if err != nil {
		return err
	}
	cons, err := js.OrderedConsumer(ctx, t.PolicyStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{t.PolicySubject},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return fmt.Errorf("watch policy of %s: %w", run, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("watch policy of %s: %w", run, err)
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
		case <-done:
		}
		it.Stop()
	}()
	defer func() {
		close(done)
		<-stopped
	}()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			// Missed heartbeats and the like: the ordered consumer recreates itself.
			if onError != nil {
				onError(fmt.Errorf("watch policy of %s: %w", run, err))
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		var p PolicyAnnounce
		if err := Decode(m.Data(), &p); err != nil {
			if onError != nil {
				onError(fmt.Errorf("watch policy of %s: %w", run, err))
			}
			continue
		}
		fn(p)
	}
}
