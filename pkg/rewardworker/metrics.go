package rewardworker

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bicot-rl/bicot/pkg/promreg"
	"github.com/bicot-rl/bicot/pkg/reward"
)

// metrics are the worker's Prometheus series, labelled with its id. Nil without a registry;
// every method is a no-op then.
type metrics struct {
	samples      prometheus.Counter
	scoreSeconds prometheus.Histogram
	// busy counts the seconds spent scoring and publishing: 1 - rate(busy) is the idle ratio.
	busy   prometheus.Counter
	total  prometheus.Histogram
	expert *prometheus.HistogramVec
	// batchSize is the samples per ensemble call (wire.reward_batch_wait).
	batchSize prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, id string) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	reg = prometheus.WrapRegistererWith(prometheus.Labels{"worker": id}, reg)
	m := &metrics{
		samples: prometheus.NewCounter(prometheus.CounterOpts{Name: "bicot_reward_samples_total", Help: "Samples scored and published."}),
		scoreSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "bicot_reward_score_seconds",
			Help: "Time one sample takes through the ensemble (every expert, outages ridden out included).", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		busy: prometheus.NewCounter(prometheus.CounterOpts{Name: "bicot_reward_busy_seconds_total",
			Help: "Seconds spent scoring and publishing; 1 - rate() is the idle ratio."}),
		total: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "bicot_reward_total",
			Help: "Total (weighted ensemble) reward of each sample.", Buckets: prometheus.LinearBuckets(0, 0.25, 17)}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "bicot_reward_batch_size",
			Help: "Samples scored in one ensemble call (wire.reward_batch_wait > 0 batches the fetchers' samples).", Buckets: prometheus.ExponentialBuckets(1, 2, 8)}),
		expert: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "bicot_reward_per_expert",
			Help: "Each expert's reward of each sample.", Buckets: prometheus.LinearBuckets(0, 0.1, 11)}, []string{"expert"}),
	}
	// A worker started again under the same id keeps its series.
	if err := errors.Join(promreg.Into(reg, &m.samples), promreg.Into(reg, &m.scoreSeconds), promreg.Into(reg, &m.busy),
		promreg.Into(reg, &m.total), promreg.Into(reg, &m.expert), promreg.Into(reg, &m.batchSize)); err != nil {
		return nil, fmt.Errorf("reward worker: %w", err)
	}
	return m, nil
}

func (m *metrics) scored(sc reward.Scores, took, busy time.Duration) {
	if m == nil {
		return
	}
	m.samples.Inc()
	m.scoreSeconds.Observe(took.Seconds())
	m.busy.Add(busy.Seconds())
	m.total.Observe(sc.Total)
	for name, r := range sc.PerExpert {
		m.expert.WithLabelValues(name).Observe(r)
	}
}

func (m *metrics) batch(n int) {
	if m == nil {
		return
	}
	m.batchSize.Observe(float64(n))
}
