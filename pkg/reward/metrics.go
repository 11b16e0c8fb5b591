package reward

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bicot-rl/bicot/pkg/promreg"
)

// Metrics instruments ensembles: per expert, the time one batch takes, the failed batches and
// the distribution of rewards (a reward stuck at one value is how a broken expert shows).
type Metrics struct {
	seconds  *prometheus.HistogramVec
	failures *prometheus.CounterVec
	rewards  *prometheus.HistogramVec
}

// NewMetrics creates the collectors and registers them with reg (or takes the ones registered
// there before).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bicot_reward_expert_batch_seconds", Help: "Time one expert takes to score one batch.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}, []string{"expert"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bicot_reward_expert_failures_total", Help: "Batches an expert failed to score (errors, timeouts, invalid outputs).",
		}, []string{"expert"}),
		rewards: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bicot_reward_expert_reward", Help: "Rewards given by each expert.",
			Buckets: prometheus.LinearBuckets(0, 0.1, 11),
		}, []string{"expert"}),
	}
	if err := errors.Join(promreg.Into(reg, &m.seconds), promreg.Into(reg, &m.failures), promreg.Into(reg, &m.rewards)); err != nil {
		return nil, fmt.Errorf("reward metrics: %w", err)
	}
	return m, nil
}

// Instrumented returns a copy of the ensemble that records into m.
func (e *Ensemble) Instrumented(m *Metrics) *Ensemble {
	c := *e
	c.metrics = m
	return &c
}

func (m *Metrics) observe(expert string, seconds float64, rewards []float64, err error) {
	if m == nil {
		return
	}
	m.seconds.WithLabelValues(expert).Observe(seconds)
	if err != nil {
		m.failures.WithLabelValues(expert).Inc()
		return
	}
	h := m.rewards.WithLabelValues(expert)
	for _, r := range rewards {
		h.Observe(r)
	}
}
