package coordinator

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/dashboard"
	"github.com/bicot-rl/bicot/pkg/runstate"
)

// QueueDepth is one pool's backlog.
type QueueDepth struct {
	Pending    uint64 `json:"pending"`
	AckPending uint64 `json:"ack_pending"`
}

// Status is the GET /v1/status document.
type Status struct {
	Run    string `json:"run"`
	Leader bool   `json:"leader"`
	// LeaderID and LeaderRunState name the cluster's leader and its run-state endpoint (raft
	// HTTP) as this coordinator sees them; a follower's status is its replica's view.
	LeaderID       string `json:"leader_id,omitempty"`
	LeaderRunState string `json:"leader_run_state,omitempty"`
	Step           int64  `json:"step"`
	Steps          int    `json:"steps"`
	Done           bool   `json:"done"`
	// Ended: the learner's time budget ended the run before Steps (Done is set too).
	Ended          bool                  `json:"ended,omitempty"`
	PolicyVersion  int64                 `json:"policy_version"`
	Cursor         runstate.Cursor       `json:"cursor"`
	GroupsInFlight int                   `json:"groups_in_flight"`
	GroupsByStatus map[string]int        `json:"groups_by_status"`
	Dispatched     int                   `json:"batches_dispatched"`
	Redispatched   int                   `json:"groups_redispatched"`
	Checkpoints    []runstate.Checkpoint `json:"checkpoints"`
	Workers        []WorkerInfo          `json:"workers"`
	Leases         map[string]string     `json:"leases"`
	Queues         map[string]QueueDepth `json:"queues"`
	LastMetrics    map[string]float64    `json:"last_metrics"`
	Time           time.Time             `json:"time"`
}

// Status assembles the current status (queue depths read from the server).
func (c *Coordinator) Status(ctx context.Context) Status {
	st := c.o.Node.State()
	s := Status{Run: c.cfg.RunID, Leader: c.o.Node.IsLeader(), Step: st.Step, Steps: c.cfg.Steps,
		Done: st.Over(c.cfg.Steps), Ended: st.Ended, PolicyVersion: st.PolicyVersion, Cursor: st.Cursor,
		GroupsInFlight: len(st.Groups), GroupsByStatus: map[string]int{}, Checkpoints: st.Checkpoints,
		Workers: c.Workers(), Leases: map[string]string{}, Queues: map[string]QueueDepth{}, Time: time.Now().UTC()}
	if ln, ok := c.o.Node.(leaderNode); ok {
		s.LeaderID, _ = ln.Leader()
		s.LeaderRunState = ln.LeaderHTTP()
	}
	for _, g := range st.Groups {
		s.GroupsByStatus[string(g.Status)]++
	}
	for id, l := range st.Workers {
		s.Leases[id] = l.Role + " until " + l.Expires.Format(time.RFC3339)
	}
	for _, q := range c.topo.Queues() {
		if p, a, err := bus.Depth(ctx, c.js, q.Stream, q.Consumer); err == nil {
			s.Queues[q.Kind] = QueueDepth{Pending: p, AckPending: a}
		}
	}
	c.mu.Lock()
	s.Dispatched, s.Redispatched = c.dispatched, c.redispatch
	s.LastMetrics = map[string]float64{}
	for k, v := range c.lastMetrics {
		s.LastMetrics[k] = v
	}
	c.mu.Unlock()
	return s
}

// leaderNode is what a runstate.Node tells about leadership besides IsLeader.
type leaderNode interface {
	Leader() (id, addr string)
	LeaderHTTP() string
}

// Handler serves the status API: /v1/status, /v1/runstate, /metrics, /healthz, and the
// dashboard: the page at /, its assets and its data endpoints (pkg/dashboard).
func (c *Coordinator) Handler() http.Handler {
	mux := http.NewServeMux()
	dashboard.Mount(mux, dashboard.Options{Store: c.o.Store, Run: c.cfg.RunID, Log: c.o.Log})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "application/json")
		st := c.Status(ctx)
		if st.LeaderRunState != "" {
			w.Header().Set(runstate.HeaderLeader, st.LeaderRunState)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	})
	mux.HandleFunc("GET /v1/runstate", func(w http.ResponseWriter, r *http.Request) {
		// The replicated run state as a snapshot (runstate.DecodeSnapshot reads it): what the
		// learner stores in checkpoints next to the weights.
		w.Header().Set("Content-Type", "application/json")
		if err := runstate.EncodeSnapshot(w, c.o.Node.State()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(c.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

func (c *Coordinator) initMetrics() {
	c.reg = c.o.Metrics
	if c.reg == nil {
		c.reg = prometheus.NewRegistry()
		c.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	run := prometheus.Labels{"run": c.cfg.RunID}
	c.reg.MustRegister(bus.NewDepthCollector(c.js, c.topo))
	c.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "bicot_step", Help: "The next step to learn.", ConstLabels: run},
		func() float64 { return float64(c.o.Node.State().Step) }))
	c.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "bicot_policy_version", Help: "The current policy version.", ConstLabels: run},
		func() float64 { return float64(c.o.Node.State().PolicyVersion) }))
	c.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "bicot_groups_in_flight", Help: "Groups dispatched and not yet learned.", ConstLabels: run},
		func() float64 { return float64(len(c.o.Node.State().Groups)) }))
	c.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "bicot_groups_redispatched_total", Help: "Groups handed out again after a timeout.", ConstLabels: run},
		func() float64 { return float64(c.Redispatched()) }))
	c.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "bicot_workers", Help: "Workers holding a lease.", ConstLabels: run},
		func() float64 { return float64(len(c.o.Node.State().Workers)) }))
	c.gMet = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "bicot_learner_metric", Help: "The learner's last step statistics.", ConstLabels: run}, []string{"name"})
	c.reg.MustRegister(c.gMet)
}

func (c *Coordinator) setMetricGauges(m map[string]float64) {
	for k, v := range m {
		c.gMet.WithLabelValues(k).Set(v)
	}
}
