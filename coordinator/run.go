package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/coord"
	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/runconfig"
	"github.com/bicot-rl/bicot/pkg/runstate"
)

// newRunCmd is `coordinator run`: the coordinator of a run whose roles are separate processes.
func newRunCmd() *cobra.Command {
	var httpAddr, raftAddr, raftDir, nodeID string
	var keep bool
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Coordinate a run over an external NATS server (workers are separate processes)",
		Long: "Opens the replicated run state (a single-node raft cluster in --raft-dir), initialises the run,\n" +
			"dispatches prompt batches over NATS JetStream, tracks groups until the learner reports them,\n" +
			"re-dispatches stragglers and serves GET /v1/status, /metrics and /healthz on --http.\n" +
			"Exits 0 when every step is learned (unless --keep-serving).",
		Args: cobra.NoArgs,
	}
	cli := runconfig.NewCLI(cmd)
	f := cmd.Flags()
	f.StringVar(&httpAddr, "http", "127.0.0.1:8080", "status API address")
	f.StringVar(&raftAddr, "raft-addr", "127.0.0.1:0", "raft TCP address")
	f.StringVar(&raftDir, "raft-dir", "", "raft data directory (default runs/<run-id>/raft)")
	f.StringVar(&nodeID, "node-id", "coordinator-0", "raft node id")
	f.BoolVar(&keep, "keep-serving", false, "keep serving the status API after the run is done")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, log, err := cli.Load(cmd)
		if err != nil {
			return err
		}
		log = logging.Component(log, "coordinator")
		ps, err := prompts.ReadFile(cfg.Prompts)
		if err != nil {
			return err
		}
		if raftDir == "" {
			raftDir = "runs/" + cfg.RunID + "/raft"
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		node, err := runstate.Open(runstate.NodeConfig{ID: nodeID, RaftAddr: raftAddr, DataDir: raftDir, Bootstrap: true}, log)
		if err != nil {
			return err
		}
		defer node.Shutdown()
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		_, err = node.WaitLeader(wctx)
		wcancel()
		if err != nil {
			return fmt.Errorf("raft leader: %w", err)
		}
		nc, js, err := bus.Connect(ctx, cli.NATS, bus.ConnectOptions{Name: "coordinator"})
		if err != nil {
			return err
		}
		defer nc.Close()
		c, err := coord.New(js, coord.Options{Config: cfg, Prompts: ps, Node: node, HTTPAddr: httpAddr, Log: log})
		if err != nil {
			return err
		}
		if err := c.Listen(); err != nil {
			return err
		}
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- c.Run(rctx) }()
		log.Info().Str("run", cfg.RunID).Str("status", "http://"+c.Addr()+"/v1/status").Msg("coordinating")
		select {
		case <-c.Done():
			if keep {
				<-ctx.Done()
			}
		case <-ctx.Done():
		case err := <-done:
			return err
		}
		cancel()
		return <-done
	}
	return cmd
}

// newNatsServerCmd is `coordinator nats-server`: a standalone embedded nats-server with
// JetStream for runs whose roles are separate processes.
func newNatsServerCmd() *cobra.Command {
	var o bus.EmbeddedOptions
	var urlFile string
	cmd := &cobra.Command{
		Use:   "nats-server",
		Short: "Serve NATS with JetStream (the embedded server) until interrupted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			srv, err := bus.StartEmbedded(o)
			if err != nil {
				return err
			}
			defer srv.Shutdown()
			fmt.Fprintln(cmd.OutOrStdout(), srv.URL())
			if urlFile != "" {
				if err := os.WriteFile(urlFile+".tmp", []byte(srv.URL()+"\n"), 0o644); err != nil {
					return err
				}
				if err := os.Rename(urlFile+".tmp", urlFile); err != nil {
					return err
				}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Host, "host", "127.0.0.1", "listen host")
	f.IntVar(&o.Port, "port", 4222, "listen port (0: any free port)")
	f.StringVar(&o.StoreDir, "store-dir", "", "JetStream storage directory (default: a temporary one)")
	f.IntVar(&o.MonitorPort, "monitor-port", 0, "HTTP monitoring port for autoscalers (0: off, -1: any)")
	f.StringVar(&urlFile, "url-file", "", "write the client URL to this file once listening")
	return cmd
}
