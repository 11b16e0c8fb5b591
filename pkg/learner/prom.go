package learner

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bicot-rl/bicot/pkg/promreg"
)

// promMetrics are the learner's Prometheus series, labelled with its id. Nil without a
// registry; every method is a no-op then.
type promMetrics struct {
	steps, samples, groups prometheus.Counter
	// seconds splits the learner's time: "wait" for complete groups (rollout + reward), "train"
	// the update, "publish" metrics, checkpoint and announcement; the idle ratio is wait over all.
	seconds *prometheus.CounterVec
	step    *prometheus.GaugeVec
	ckptSec prometheus.Histogram
	ckptB   prometheus.Counter
}

func newPromMetrics(reg prometheus.Registerer, id string) (*promMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	reg = prometheus.WrapRegistererWith(prometheus.Labels{"worker": id}, reg)
	m := &promMetrics{
		steps:   prometheus.NewCounter(prometheus.CounterOpts{Name: "bicot_learner_steps_total", Help: "Steps learned."}),
		samples: prometheus.NewCounter(prometheus.CounterOpts{Name: "bicot_learner_samples_total", Help: "Samples trained on."}),
		groups:  prometheus.NewCounter(prometheus.CounterOpts{Name: "bicot_learner_groups_total", Help: "Groups trained on."}),
		seconds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bicot_learner_seconds_total",
			Help: "The learner's time by phase: wait (for complete groups: rollout and reward), train (the update), publish (metrics, checkpoint, announcement)."}, []string{"phase"}),
		step: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "bicot_learner_step_stat", Help: "The last step's statistics (metrics.jsonl)."}, []string{"stat"}),
		ckptSec: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "bicot_learner_checkpoint_seconds",
			Help: "Time to write and commit one checkpoint.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}),
		ckptB: prometheus.NewCounter(prometheus.CounterOpts{Name: "bicot_learner_checkpoint_bytes_total", Help: "Bytes of checkpoints written."}),
	}
	// A learner started again in the same process (laptop mode's restart) keeps its series.
	if err := errors.Join(promreg.Into(reg, &m.steps), promreg.Into(reg, &m.samples), promreg.Into(reg, &m.groups),
		promreg.Into(reg, &m.seconds), promreg.Into(reg, &m.step), promreg.Into(reg, &m.ckptSec), promreg.Into(reg, &m.ckptB)); err != nil {
		return nil, fmt.Errorf("learner: %w", err)
	}
	return m, nil
}

func (m *promMetrics) stepDone(rec StepRecord, publish time.Duration) {
	if m == nil {
		return
	}
	m.steps.Inc()
	m.samples.Add(float64(rec.Samples))
	m.groups.Add(float64(rec.Groups))
	m.seconds.WithLabelValues("wait").Add(rec.WaitSeconds)
	m.seconds.WithLabelValues("train").Add(rec.TrainSeconds)
	m.seconds.WithLabelValues("publish").Add(publish.Seconds())
	s := rec.Stats
	for name, v := range map[string]float64{"step": float64(rec.Step), "policy_version": float64(rec.PolicyVersion),
		"loss": s.Loss, "kl": s.KL, "plan_kl": s.PlanKL, "image_kl": s.ImageKL, "reward_mean": s.RewardMean,
		"reward_std": s.RewardStd, "zero_std_ratio": s.ZeroStdRatio, "clip_fraction": s.ClipFraction, "ratio_mean": s.RatioMean,
		"max_staleness": float64(s.MaxStaleness), "grad_norm": s.GradNorm, "lr": s.LearningRate, "adv_abs_mean": s.AdvAbsMean} {
		m.step.WithLabelValues(name).Set(v)
	}
}

func (m *promMetrics) checkpoint(took time.Duration, bytes int) {
	if m == nil {
		return
	}
	m.ckptSec.Observe(took.Seconds())
	m.ckptB.Add(float64(bytes))
}
