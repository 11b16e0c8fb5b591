package learner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bicot-rl/bicot/pkg/bus"
)

// Run announces the current policy, then learns until the run's last step is done (it returns
// nil) or ctx ends (nil too) or a step fails (the error).
func (l *Learner) Run(ctx context.Context) error {
	topo, err := bus.AwaitStreams(ctx, l.js, l.cfg.RunID, l.log)
	if err != nil {
		return fmt.Errorf("learner: %w", err)
	}
	if err := l.announce(ctx, l.next); err != nil {
		return fmt.Errorf("learner: announce initial policy: %w", err)
	}
	l.reportResumed(ctx)
	l.superseded()
	l.reportResumePoint(ctx)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		l.rep.Heartbeat(cctx, l.beat)
	}()
	consumeErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		co := l.consume
		lg := l.log
		co.Logger = &lg
		consumeErr <- bus.Consume(cctx, l.js, topo.Scored, bus.Typed(l.handle), co)
	}()
	err = l.loop(cctx)
	cancel()
	wg.Wait()
	if cerr := <-consumeErr; err == nil && cerr != nil {
		err = cerr
	}
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// loop trains each step once its P groups are complete, until the run's last step is done.
func (l *Learner) loop(ctx context.Context) error {
	last := time.Now()
	for {
		l.mu.Lock()
		step := l.next
		ready := len(l.complete[step]) >= l.cfg.PromptsPerStep
		ended := l.clock.Final
		l.mu.Unlock()
		if step >= int64(l.cfg.Steps) || ended {
			l.log.Info().Int64("steps", step).Bool("time_budget", ended).Msg("run complete")
			return nil
		}
		l.rep.SetProgress(step, l.trainer.Version())
		if !ready {
			l.reannounceIfDue(ctx)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-l.wake:
			case <-time.After(time.Second):
			}
			continue
		}
		if err := l.trainStep(ctx, step, time.Since(last)); err != nil {
			return fmt.Errorf("learner step %d: %w", step, err)
		}
		last = time.Now()
	}
}
