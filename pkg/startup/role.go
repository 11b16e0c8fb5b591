package startup

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/gomlx/gomlx/backends"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/secure"
	"github.com/bicot-rl/bicot/pkg/store"
)

// Role is what every role's `run` command sets up before its own work: the checked config, the
// logger, the command's context (which SIGINT or SIGTERM cancel, see Execute), the compute backend
// and a JetStream connection named after the process. Close releases them (and a store opened with OpenStore).
type Role struct {
	Config  config.Config
	Log     zerolog.Logger
	Ctx     context.Context
	Backend backends.Backend
	JS      jetstream.JetStream
	// Metrics is the process's Prometheus registry (Go runtime and process collectors included),
	// served on config.MetricsAddr at /metrics (behind $BICOT_API_TOKEN when set); roles register
	// their series in it.
	Metrics *prometheus.Registry
	// MetricsAddr is the address /metrics is served on ("" when none).
	MetricsAddr string
	closers     []func()
}

// Start loads the config as Load does and sets up the process named id, of role (bus.RoleRollout,
// bus.RoleReward or bus.RoleLearner).
func (c *CLI) Start(cmd *cobra.Command, role, id string) (*Role, error) {
	cfg, log, err := c.Load(cmd)
	if err != nil {
		return nil, err
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	r := &Role{Config: cfg, Log: log, Ctx: ctx}
	if r.Backend, err = mlx.NewBackend(cfg.Backend); err != nil {
		r.Close()
		return nil, err
	}
	nc, js, err := bus.Connect(ctx, c.NATS, bus.ConnectOptions{Name: id, Role: role, Auth: c.Security.NATS, Log: log,
		FirstConnectWait: cfg.Wire.ConnectWait.D()})
	if err != nil {
		r.Close()
		return nil, err
	}
	r.JS, r.closers = js, append(r.closers, nc.Close)
	if err := r.serveMetrics(c.Security.APIToken); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// serveMetrics creates the registry and serves it on the config's metrics address.
func (r *Role) serveMetrics(token string) error {
	r.Metrics = prometheus.NewRegistry()
	r.Metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if r.Config.MetricsAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", r.Config.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics: listen %s: %w", r.Config.MetricsAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(r.Metrics, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: secure.RequireToken(token, mux), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.Log.Warn().Err(err).Msg("metrics endpoint stopped")
		}
	}()
	r.MetricsAddr = ln.Addr().String()
	r.Log.Info().Str("addr", "http://"+r.MetricsAddr+"/metrics").Msg("serving metrics")
	r.closers = append(r.closers, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return nil
}

// WorkerCLI is a worker's run command line: the shared flags plus --id and --keep-running.
type WorkerCLI struct {
	*CLI
	ID          string
	KeepRunning bool
	kind        string
}

// NewWorkerCLI registers the worker flags on cmd; kind is the worker's role (bus.RoleRollout or
// bus.RoleReward) and names the default id, <kind>-<host>-<pid>.
func NewWorkerCLI(cmd *cobra.Command, p *Process, kind string) *WorkerCLI {
	w := &WorkerCLI{CLI: NewCLI(cmd, p), kind: kind}
	cmd.Flags().StringVar(&w.ID, "id", "", "worker id (default "+kind+"-<host>-<pid>)")
	cmd.Flags().BoolVar(&w.KeepRunning, "keep-running", false, "keep running after the run's last step")
	return w
}

// Start is CLI.Start for the worker's id.
func (w *WorkerCLI) Start(cmd *cobra.Command) (*Role, error) {
	if w.ID == "" {
		w.ID = DefaultWorkerID(w.kind)
	}
	return w.CLI.Start(cmd, w.kind, w.ID)
}

// OpenStore opens the run's object store (the config's store); Close releases it.
func (r *Role) OpenStore() (store.Store, error) {
	st, closeStore, err := OpenStore(r.Ctx, r.Config.Store, r.Log)
	if err != nil {
		return nil, err
	}
	r.closers = append(r.closers, closeStore)
	return st, nil
}

// Close releases what Start and OpenStore set up, newest first.
func (r *Role) Close() {
	for _, f := range slices.Backward(r.closers) {
		f()
	}
	r.closers = nil
}

// WorkerContext is what a worker process runs under: the role's context, also ended by
// bus.RunEnded unless the worker is to keep running after the run.
func (r *Role) WorkerContext(keepRunning bool) (context.Context, context.CancelFunc) {
	if keepRunning {
		return context.WithCancel(r.Ctx)
	}
	return bus.RunEnded(r.Ctx, r.JS, r.Config.RunID, r.Config.Steps, r.Log)
}

// DefaultWorkerID is <kind>-<host>-<pid>: unique across the machines and containers of a pool
// (in a container the pid alone is 1 everywhere).
func DefaultWorkerID(kind string) string {
	id := kind
	if h, err := os.Hostname(); err == nil && h != "" {
		id += "-" + h
	}
	return id + "-" + strconv.Itoa(os.Getpid())
}
