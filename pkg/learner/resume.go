package learner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/ckpt"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/runstate"
	"github.com/bicot-rl/bicot/pkg/store"
	"github.com/bicot-rl/bicot/pkg/trainer"
)

// start builds the trainer from the run's newest committed checkpoint, or from the initial policy
// when the run has none.
func (l *Learner) start(ctx context.Context, topts trainer.Options) error {
	m, err := ckpt.Latest(ctx, l.o.Store, l.cfg.RunID, ckpt.WithLogger(l.log))
	switch {
	case err == nil:
		return l.resume(ctx, m, topts)
	case errors.Is(err, ckpt.ErrNoCheckpoint):
		if len(l.o.Init) == 0 {
			return errors.New("no checkpoint to resume and no initial policy")
		}
		policy, err := model.Load(l.o.Backend, l.o.Init)
		if err != nil {
			return fmt.Errorf("initial policy: %w", err)
		}
		if l.trainer, err = trainer.NewTrainer(policy, topts); err != nil {
			return err
		}
		rw := runstate.ResumePoint(l.incarnation, runstate.State{}, -1, l.trainer.Version())
		l.resumePoint = &rw
		// A run starting over (no checkpoint) drops whatever metrics an earlier start wrote.
		return l.resumeMetrics(ctx, -1)
	default:
		return err
	}
}

// resume restores the trainer of checkpoint m and continues at the step after it.
func (l *Learner) resume(ctx context.Context, m ckpt.Manifest, topts trainer.Options) error {
	state, err := ckpt.Load(ctx, l.o.Store, m, PartTrainer)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if l.trainer, err = trainer.Load(l.o.Backend, state, &topts); err != nil {
		return fmt.Errorf("resume from %s: %w", m.Key, err)
	}
	l.next = m.Step + 1
	l.resumed = &m
	if b, err := ckpt.Load(ctx, l.o.Store, m, PartLearned); err == nil {
		_ = json.Unmarshal(b, &l.resumeLearned)
	}
	// The run state the checkpoint recorded says where the run continues from, should the
	// coordinators' state be ahead (this learner replaces one that died past its checkpoint).
	if b, err := ckpt.Load(ctx, l.o.Store, m, ckpt.PartRunState); err == nil {
		snap, err := runstate.DecodeSnapshot(bytes.NewReader(b))
		if err != nil {
			return fmt.Errorf("resume from %s: run state: %w", m.Key, err)
		}
		rw := runstate.ResumePoint(l.incarnation, snap, m.Step, m.PolicyVersion)
		l.resumePoint = &rw
	} else {
		l.log.Warn().Str("checkpoint", m.Key).Msg("the checkpoint holds no run state (a learner without --coordinator): " +
			"if the run state is ahead of it, the steps in between are not dispatched again")
	}
	if l.clock, err = ckpt.LoadProgress(ctx, l.o.Store, m); err != nil {
		return fmt.Errorf("resume from %s: %w", m.Key, err)
	}
	if err := l.resumeMetrics(ctx, m.Step); err != nil {
		return fmt.Errorf("resume from %s: %w", m.Key, err)
	}
	if err := dropNewer(ctx, l.o.Store, l.cfg.RunID, m.Step, l.log); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	l.log.Info().Int64("step", l.next).Int64("version", l.trainer.Version()).Str("checkpoint", m.Key).Msg("resumed")
	return nil
}

// dropNewer deletes what checkpoints of steps after the resumed one left in the store (a
// corrupted or partial newest checkpoint that Latest skipped, parts of a save cut short), so the
// resumed run can commit those steps again.
func dropNewer(ctx context.Context, st store.Store, run string, step int64, log zerolog.Logger) error {
	objs, err := st.List(ctx, ckpt.Prefix(run))
	if err != nil {
		return fmt.Errorf("list checkpoints: %w", err)
	}
	// Manifests first, so an interrupted clean-up never leaves a manifest without its parts.
	slices.SortFunc(objs, func(a, b store.ObjectInfo) int {
		am, bm := strings.HasSuffix(a.Key, "/"+ckpt.ManifestName), strings.HasSuffix(b.Key, "/"+ckpt.ManifestName)
		switch {
		case am && !bm:
			return -1
		case bm && !am:
			return 1
		}
		return strings.Compare(a.Key, b.Key)
	})
	removed := map[string]bool{}
	for _, o := range objs {
		rest := strings.TrimPrefix(o.Key, ckpt.Prefix(run))
		dir, _, ok := strings.Cut(rest, "/")
		if !ok {
			continue
		}
		var s int64
		if _, err := fmt.Sscanf(dir, "%d", &s); err != nil || s <= step {
			continue
		}
		if err := st.Delete(ctx, o.Key); err != nil {
			return fmt.Errorf("drop checkpoint step %d: %w", s, err)
		}
		if !removed[dir] {
			removed[dir] = true
			log.Warn().Int64("step", s).Int64("resumed_from", step).Msg("dropping checkpoint newer than the one resumed from")
		}
	}
	return nil
}

// superseded sets the lowest dispatch attempt this learner takes samples of, from the run state
// before its resume point is reported: when the state is ahead of the resume point the
// coordinator rewinds it and hands the steps out again under new attempts, and the samples still
// on their way from the tasks of the learner this one replaces must not fill its groups (the old
// top-up round of a step would stand in for one the rewound run dispatches from its own cursor,
// and the prompt would be learned twice). Without a run state (a learner without --coordinator)
// every attempt is taken.
func (l *Learner) superseded() {
	if l.o.RunState == nil || l.resumePoint == nil {
		return
	}
	b, err := l.o.RunState()
	if err == nil {
		var st runstate.State
		if st, err = runstate.DecodeSnapshot(bytes.NewReader(b)); err == nil {
			l.minAttempt = st.AttemptFloor(*l.resumePoint)
			if l.minAttempt > 0 {
				l.log.Info().Int("attempt", l.minAttempt).Msg("samples of earlier dispatch attempts are dropped as superseded")
			}
			return
		}
	}
	l.log.Warn().Err(err).Msg("run state not read: samples of tasks handed out before a rewind are not told apart")
}

// reportResumePoint tells the coordinators where this learner resumed, so a run state that is
// ahead of it (the learner it replaces died after steps it had not checkpointed) is rewound and
// those steps are dispatched and learned again instead of waited for.
func (l *Learner) reportResumePoint(ctx context.Context) {
	rw := l.resumePoint
	if rw == nil {
		return
	}
	if err := l.rep.EmitJSON(ctx, bus.EventLearnerResumed, rw.Step, rw.PolicyVersion, rw, l.eventID("resumed")); err != nil {
		l.log.Warn().Err(err).Msg("resume point not reported")
	}
}

// reportResumed reports the resumed checkpoint's step as done again. It is idempotent at the
// coordinator (a finished step's StepDone is a no-op); it matters when the previous learner
// committed the checkpoint and died before reporting the step.
func (l *Learner) reportResumed(ctx context.Context) {
	m := l.resumed
	if m == nil || l.resumeLearned == nil {
		return
	}
	if err := l.rep.EmitJSON(ctx, bus.EventStepDone, m.Step, m.PolicyVersion, bus.StepReport{Learned: l.resumeLearned, Final: l.clock.Final},
		l.eventID(fmt.Sprintf("step/%d", m.Step))); err != nil {
		l.log.Warn().Err(err).Int64("step", m.Step).Msg("step done not reported again")
	}
}
