package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/dashboard"
	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/runfiles"
	"github.com/bicot-rl/bicot/pkg/secure"
	"github.com/bicot-rl/bicot/pkg/startup"
	"github.com/bicot-rl/bicot/pkg/store"
)

// newDashboardCmd is `coordinator dashboard TARGET`: the run's dashboard from its files alone.
func newDashboardCmd(p *startup.Process) *cobra.Command {
	var httpAddr string
	cmd := &cobra.Command{
		Use:   "dashboard TARGET",
		Short: "Serve the dashboard of a run from its files (runs/RUN or s3://bucket/prefix/RUN)",
		Long: "Serves the page a coordinator serves at / for a run that is no longer coordinated (finished,\n" +
			"stopped, or read from another machine's store): the metrics' curves, the kept samples and\n" +
			"eval.json, read from the run's store; no NATS, no raft. The status shows what the files tell\n" +
			"(steps learned, policy version). With $" + startup.EnvAPIToken + " set every request needs the token:\n" +
			"open the page once as http://ADDR/?token=TOKEN (it becomes a cookie).",
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().StringVar(&httpAddr, "http", "127.0.0.1:8090", "address to serve on (loopback by default; port 0: any free port)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		log := logging.Component(p.Log(), "dashboard")
		ctx := cmd.Context()
		rt, err := startup.OpenRunTarget(ctx, args[0], log)
		if err != nil {
			return err
		}
		defer rt.Close()
		st, storeSpec, run := rt.Store, rt.StoreSpec, rt.Run
		if err := checkRun(ctx, st, storeSpec, run); err != nil {
			return err
		}
		ln, err := net.Listen("tcp", httpAddr)
		if err != nil {
			return fmt.Errorf("dashboard: listen %s: %w", httpAddr, err)
		}
		token := os.Getenv(startup.EnvAPIToken)
		h := dashboard.Offline(dashboard.Options{Store: st, Run: run, Log: log})
		srv := &http.Server{Handler: secure.AcceptBrowserToken(token, secure.RequireToken(token, h, "/healthz")),
			ReadHeaderTimeout: 5 * time.Second}
		url := "http://" + ln.Addr().String() + "/"
		if token != "" {
			fmt.Fprintf(cmd.OutOrStdout(), "dashboard of run %s: %s?token=$%s\n", run, url, startup.EnvAPIToken)
		} else {
			fmt.Fprintf(cmd.OutOrStdout(), "dashboard of run %s: %s\n", run, url)
		}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ln) }()
		select {
		case err := <-done:
			return fmt.Errorf("dashboard: %w", err)
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn().Err(err).Msg("dashboard shutdown")
		}
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("dashboard: %w", err)
		}
		return nil
	}
	return cmd
}

// checkRun refuses a target that holds no run, so a typo is an error, not an empty page.
func checkRun(ctx context.Context, st store.Store, storeSpec, run string) error {
	if _, err := runfiles.ReadMetrics(ctx, st, run); err == nil {
		return nil
	}
	for _, key := range []string{runfiles.ConfigKey(run)} {
		if _, err := st.Stat(ctx, key); err == nil {
			return nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("dashboard: %w", err)
		}
	}
	if steps, err := runfiles.SampleSteps(ctx, st, run); err == nil && len(steps) > 0 {
		return nil
	}
	return fmt.Errorf("dashboard: no run %s in %s (no metrics, config.yaml or kept samples)", run, storeSpec)
}
