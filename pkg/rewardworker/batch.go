package rewardworker

import (
	"context"
	"errors"
	"time"

	"github.com/bicot-rl/bicot/pkg/reward"
)

// batcher gathers the samples of a worker's concurrent fetchers into one ensemble call: the first
// waits up to `wait` for others (at most max in all), then the batch is scored at once and each
// handler gets its own scores back. Acks, retries and dead letters stay per message, in the
// handlers. A failed batch of several is scored again one by one, so one bad sample cannot fail
// (and eventually dead-letter) the others; an unavailable expert fails them all alike, to be
// ridden out by each handler's outage retries.
type batcher struct {
	score func(context.Context, []reward.Item) ([]reward.Scores, error)
	max   int
	wait  time.Duration
	reqs  chan *batchReq
	// sizes, when set, is told each batch's size (metrics).
	sizes func(int)
}

type batchReq struct {
	item reward.Item
	done chan batchRes
}

type batchRes struct {
	scores reward.Scores
	err    error
}

func newBatcher(score func(context.Context, []reward.Item) ([]reward.Scores, error), max int, wait time.Duration) *batcher {
	return &batcher{score: score, max: max, wait: wait, reqs: make(chan *batchReq)}
}

// Score scores one item as part of the next batch.
func (b *batcher) Score(ctx context.Context, it reward.Item) (reward.Scores, error) {
	r := &batchReq{item: it, done: make(chan batchRes, 1)}
	select {
	case b.reqs <- r:
	case <-ctx.Done():
		return reward.Scores{}, ctx.Err()
	}
	select {
	case res := <-r.done:
		return res.scores, res.err
	case <-ctx.Done():
		// The batch finishes without this handler; its result is dropped (done is buffered).
		return reward.Scores{}, ctx.Err()
	}
}

// run serves batches until ctx ends.
func (b *batcher) run(ctx context.Context) {
	for {
		var batch []*batchReq
		select {
		case <-ctx.Done():
			return
		case r := <-b.reqs:
			batch = append(batch, r)
		}
		timer := time.NewTimer(b.wait)
	gather:
		for len(batch) < b.max {
			select {
			case r := <-b.reqs:
				batch = append(batch, r)
			case <-timer.C:
				break gather
			case <-ctx.Done():
				break gather
			}
		}
		timer.Stop()
		b.do(ctx, batch)
	}
}

func (b *batcher) do(ctx context.Context, batch []*batchReq) {
	if b.sizes != nil {
		b.sizes(len(batch))
	}
	items := make([]reward.Item, len(batch))
	for i, r := range batch {
		items[i] = r.item
	}
	scores, err := b.score(ctx, items)
	if err == nil && len(scores) != len(batch) {
		err = errors.New("the ensemble returned another number of scores than items")
	}
	if err != nil && len(batch) > 1 && !errors.Is(err, reward.ErrUnavailable) {
		for _, r := range batch {
			s, err := b.score(ctx, []reward.Item{r.item})
			res := batchRes{err: err}
			if err == nil && len(s) == 1 {
				res.scores = s[0]
			} else if err == nil {
				res.err = errors.New("the ensemble returned another number of scores than items")
			}
			r.done <- res
		}
		return
	}
	for i, r := range batch {
		if err != nil {
			r.done <- batchRes{err: err}
		} else {
			r.done <- batchRes{scores: scores[i]}
		}
	}
}
