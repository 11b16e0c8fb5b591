package learner

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bicot-rl/bicot/pkg/bus"
)

// handle takes one scored sample off the queue into the collector and wakes the loop when it
// completes a group. Samples of learned steps and duplicates are counted and acknowledged; a
// sample that can never join a group is poison.
func (l *Learner) handle(ctx context.Context, s *bus.ScoredSample, _ jetstream.Msg) error {
	l.mu.Lock()
	next := l.next
	l.mu.Unlock()
	if s.Step < next {
		l.mu.Lock()
		l.acct.Late++
		l.mu.Unlock()
		return nil
	}
	if s.G != l.cfg.GroupSize {
		return bus.Poison(fmt.Errorf("sample %s has group size %d, the run's is %d", s.Key(), s.G, l.cfg.GroupSize))
	}
	if err := l.trainer.Check(&s.Sample); err != nil {
		return bus.Poison(err)
	}
	g, dup, err := l.coll.Add(*s)
	if err != nil {
		return bus.Poison(err)
	}
	l.mu.Lock()
	if dup {
		l.acct.Duplicates++
		l.mu.Unlock()
		return nil
	}
	l.acct.Received[bus.GroupKey{Step: s.Step, PromptIndex: s.PromptIndex}]++
	if g != nil {
		l.complete[g.Key.Step] = append(l.complete[g.Key.Step], *g)
	}
	l.mu.Unlock()
	if g != nil {
		l.rep.Emit(ctx, bus.EventGroupComplete, g.Key.Step, s.PolicyVersion, len(g.Samples),
			groupKey(g.Key), l.eventID("group/"+groupKey(g.Key)))
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// groupKey is a group's name in the coordinator's reports and event ids.
func groupKey(k bus.GroupKey) string { return fmt.Sprintf("%d/%d", k.Step, k.PromptIndex) }

// eventID is the message id of one of this learner's events: JetStream drops a retried copy, and
// a learner started after a rewind reports the same steps and groups again under ids of its own.
func (l *Learner) eventID(what string) string { return "learner/" + l.incarnation + "/" + what }
