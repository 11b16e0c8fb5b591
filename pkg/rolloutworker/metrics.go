package rolloutworker

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bicot-rl/bicot/pkg/promreg"
)

// metrics are the worker's Prometheus series, labelled with its id (several workers may share a
// process and a registry in laptop mode). Nil when the worker has no registry; every method is a
// no-op then.
type metrics struct {
	tasks, samples prometheus.Counter
	taskSeconds    prometheus.Histogram
	// busy counts the seconds spent sampling and publishing: 1 - rate(busy) is the idle ratio.
	busy    prometheus.Counter
	version prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, id string) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	reg = prometheus.WrapRegistererWith(prometheus.Labels{"worker": id}, reg)
	m := &metrics{
		tasks:   prometheus.NewCounter(prometheus.CounterOpts{Name: "bicot_rollout_tasks_total", Help: "Tasks sampled."}),
		samples: prometheus.NewCounter(prometheus.CounterOpts{Name: "bicot_rollout_samples_total", Help: "Samples (plan and image) published."}),
		taskSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "bicot_rollout_task_seconds",
			Help: "Time from taking a task to publishing its samples (policy wait included).", Buckets: prometheus.ExponentialBuckets(0.05, 2, 14)}),
		busy: prometheus.NewCounter(prometheus.CounterOpts{Name: "bicot_rollout_busy_seconds_total",
			Help: "Seconds spent sampling and publishing; 1 - rate() is the idle ratio."}),
		version: prometheus.NewGauge(prometheus.GaugeOpts{Name: "bicot_rollout_policy_version", Help: "Policy version of the last task sampled."}),
	}
	// A worker started again under the same id keeps its series.
	if err := errors.Join(promreg.Into(reg, &m.tasks), promreg.Into(reg, &m.samples), promreg.Into(reg, &m.taskSeconds),
		promreg.Into(reg, &m.busy), promreg.Into(reg, &m.version)); err != nil {
		return nil, fmt.Errorf("rollout: %w", err)
	}
	return m, nil
}

func (m *metrics) task(samples int, version int64, took, busy time.Duration) {
	if m == nil {
		return
	}
	m.tasks.Inc()
	m.samples.Add(float64(samples))
	m.taskSeconds.Observe(took.Seconds())
	m.busy.Add(busy.Seconds())
	m.version.Set(float64(version))
}
