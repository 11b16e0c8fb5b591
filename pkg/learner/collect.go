package learner

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bicot-rl/bicot/pkg/bus"
)

// handle takes one scored sample off the queue into the collector and wakes the loop when it
// completes a group. Samples of learned steps, of tasks a rewind superseded and duplicates are
// counted and acknowledged; a sample that can never join a group is poison.
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
	// The coordinator hands out steps up to the learned version plus the staleness bound; a
	// sample further ahead is not for this learner yet (or forged): it is retried later and
	// dead-lettered after the last delivery, never held in memory meanwhile.
	if ahead := s.Step - next; ahead > int64(l.cfg.Staleness)+maxStepsAhead {
		return fmt.Errorf("sample %s is %d steps ahead of the learner (step %d; staleness %d)", s.Key(), ahead, next, l.cfg.Staleness)
	}
	if s.G != l.cfg.GroupSize {
		return bus.Poison(fmt.Errorf("sample %s has group size %d, the run's is %d", s.Key(), s.G, l.cfg.GroupSize))
	}
	if err := l.trainer.Check(&s.Sample); err != nil {
		return bus.Poison(err)
	}
	// Checked after the sample itself: a bad or far-ahead sample is dead-lettered whatever its
	// attempt.
	if s.Attempt < l.minAttempt {
		l.mu.Lock()
		l.acct.Superseded++
		l.mu.Unlock()
		return nil
	}
	g, dup, err := l.coll.Add(*s)
	if errors.Is(err, bus.ErrCollectorFull) {
		return err
	}
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

// maxStepsAhead is how far past the staleness bound a sample's step may be and still be held:
// slack for a coordinator that counts a step learned a moment before the learner does.
const maxStepsAhead = 2

// maxPartialGroups bounds the incomplete groups the learner holds: every step it may be sent
// (staleness + maxStepsAhead + 1) with room for re-sampled rounds and re-dispatches.
func maxPartialGroups(staleness, promptsPerStep int) int {
	return (staleness + maxStepsAhead + 1) * promptsPerStep * 4
}

// groupKey is a group's name in the coordinator's reports and event ids.
func groupKey(k bus.GroupKey) string { return fmt.Sprintf("%d/%d", k.Step, k.PromptIndex) }

// eventID is the message id of one of this learner's events: JetStream drops a retried copy, and
// a learner started after a rewind reports the same steps and groups again under ids of its own.
func (l *Learner) eventID(what string) string { return "learner/" + l.incarnation + "/" + what }
