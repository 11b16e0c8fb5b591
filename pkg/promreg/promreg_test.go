package promreg

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRegisterAgainKeepsTheSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"worker": "learner"}, reg)
	a, err := Register(wrapped, prometheus.NewCounter(prometheus.CounterOpts{Name: "x_total", Help: "x"}))
	if err != nil {
		t.Fatal(err)
	}
	a.Add(2)
	b, err := Register(wrapped, prometheus.NewCounter(prometheus.CounterOpts{Name: "x_total", Help: "x"}))
	if err != nil {
		t.Fatal(err)
	}
	b.Add(1)
	if got := testutil.ToFloat64(a); got != 3 {
		t.Fatalf("the series counts %v, want 3 (both registrations)", got)
	}
	if _, err := Register(wrapped, prometheus.NewGauge(prometheus.GaugeOpts{Name: "x_total", Help: "other help"})); err == nil {
		t.Fatal("a conflicting collector was accepted")
	}
}
