package bus

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// DepthCollector exports every work queue's depth of a run as Prometheus gauges, read from the
// server at scrape time:
//
//	bicot_queue_pending{run,queue}      messages not yet delivered
//	bicot_queue_ack_pending{run,queue}  messages delivered and not yet acked
//	bicot_queue_dead_letters{run}       messages in the dead-letter stream
type DepthCollector struct {
	js      jetstream.JetStream
	topo    Topology
	timeout time.Duration

	pending, ackPending, dead *prometheus.Desc
}

var _ prometheus.Collector = (*DepthCollector)(nil)

// NewDepthCollector returns a collector for topo's queues; register it with a registry.
func NewDepthCollector(js jetstream.JetStream, topo Topology) *DepthCollector {
	labels := []string{"run", "queue"}
	return &DepthCollector{
		js: js, topo: topo, timeout: 2 * time.Second,
		pending:    prometheus.NewDesc("bicot_queue_pending", "Messages waiting in a work queue, not yet delivered.", labels, nil),
		ackPending: prometheus.NewDesc("bicot_queue_ack_pending", "Messages delivered to workers and not yet acked.", labels, nil),
		dead:       prometheus.NewDesc("bicot_queue_dead_letters", "Messages in the run's dead-letter stream.", []string{"run"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *DepthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.ackPending
	ch <- c.dead
}

// Collect implements prometheus.Collector. A queue the server cannot report is left out of the
// scrape rather than reported as zero, which an autoscaler would read as "idle".
func (c *DepthCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	for _, q := range c.topo.Queues() {
		p, a, err := Depth(ctx, c.js, q.Stream, q.Consumer)
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(p), c.topo.Run, q.Kind)
		ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, float64(a), c.topo.Run, q.Kind)
	}
	if s, err := c.js.Stream(ctx, c.topo.DeadStream); err == nil {
		if info, err := s.Info(ctx); err == nil {
			ch <- prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(info.State.Msgs), c.topo.Run)
		}
	}
}
