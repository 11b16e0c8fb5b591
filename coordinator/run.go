package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/coordinator"
	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/natsd"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/runstate"
	"github.com/bicot-rl/bicot/pkg/startup"
	"github.com/bicot-rl/bicot/pkg/store"
)

// raftFlags are the flags that place one coordinator in its raft cluster.
type raftFlags struct {
	nodeID, raftAddr, raftHTTP, raftDir, peers string
}

func (r *raftFlags) register(f *pflag.FlagSet) {
	f.StringVar(&r.nodeID, "node-id", "coordinator-0", "raft node id (unique in the cluster)")
	f.StringVar(&r.raftAddr, "raft-addr", "127.0.0.1:0", "raft TCP address peers dial (port 0: any free port, single node only)")
	f.StringVar(&r.raftHTTP, "raft-http", "", "run-state endpoint (leader lookup, forwarded applies) that learners and peers use (default: none for a single node)")
	f.StringVar(&r.raftDir, "raft-dir", "", "raft data directory (default runs/<run-id>/raft-<node-id>, runs/<run-id>/raft for coordinator-0)")
	f.StringVar(&r.peers, "peers", "", "the initial cluster, every node including this one: id=raft-addr=raft-http,... (same list on every node)")
}

// parsePeers reads "id=raftaddr=httpaddr,..." .
func parsePeers(s string) ([]runstate.Peer, error) {
	var out []runstate.Peer
	seen := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		f := strings.Split(item, "=")
		if len(f) != 3 || f[0] == "" || f[1] == "" || f[2] == "" {
			return nil, fmt.Errorf("--peers: %q: want id=raft-addr=raft-http", item)
		}
		if seen[f[0]] {
			return nil, fmt.Errorf("--peers: node id %q listed twice", f[0])
		}
		seen[f[0]] = true
		out = append(out, runstate.Peer{ID: f[0], RaftAddr: f[1], HTTPAddr: f[2]})
	}
	return out, nil
}

// nodeConfig turns the flags into the node's configuration and the cluster's servers (this node
// alone when no peers are given). A raft address with port 0 is resolved to a free port here so
// that the servers list holds the real address.
func (r *raftFlags) nodeConfig(run string) (runstate.NodeConfig, []runstate.Peer, error) {
	peers, err := parsePeers(r.peers)
	if err != nil {
		return runstate.NodeConfig{}, nil, err
	}
	dir := r.raftDir
	if dir == "" {
		dir = "runs/" + run + "/raft"
		if r.nodeID != "coordinator-0" {
			dir += "-" + r.nodeID
		}
	}
	nc := runstate.NodeConfig{ID: r.nodeID, RaftAddr: r.raftAddr, HTTPAddr: r.raftHTTP, DataDir: dir, Bootstrap: true}
	if len(peers) == 0 {
		if strings.HasSuffix(nc.RaftAddr, ":0") {
			port, err := freePort(strings.TrimSuffix(nc.RaftAddr, ":0"))
			if err != nil {
				return nc, nil, err
			}
			nc.RaftAddr = net.JoinHostPort(strings.TrimSuffix(nc.RaftAddr, ":0"), port)
		}
		return nc, []runstate.Peer{{ID: nc.ID, RaftAddr: nc.RaftAddr, HTTPAddr: nc.HTTPAddr}}, nil
	}
	var self *runstate.Peer
	for i := range peers {
		if peers[i].ID == r.nodeID {
			self = &peers[i]
		}
	}
	if self == nil {
		return nc, nil, fmt.Errorf("--peers does not list this node (--node-id %s)", r.nodeID)
	}
	if r.raftAddr == "127.0.0.1:0" {
		nc.RaftAddr = self.RaftAddr
	}
	if r.raftHTTP == "" {
		nc.HTTPAddr = self.HTTPAddr
	}
	if nc.RaftAddr != self.RaftAddr || nc.HTTPAddr != self.HTTPAddr {
		return nc, nil, fmt.Errorf("--raft-addr %s / --raft-http %s differ from this node's entry in --peers (%s / %s)",
			nc.RaftAddr, nc.HTTPAddr, self.RaftAddr, self.HTTPAddr)
	}
	nc.Peers = peers
	return nc, peers, nil
}

func freePort(host string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("free port on %s: %w", host, err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port, nil
}

// newRunCmd is `coordinator run`: one coordinator of a run whose roles are separate processes.
func newRunCmd(p *startup.Process) *cobra.Command {
	var httpAddr string
	var rf raftFlags
	var keep bool
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Coordinate a run over an external NATS server (workers are separate processes)",
		Long: "Opens this coordinator's replica of the run state (raft; a single-node cluster unless --peers\n" +
			"lists 3 or 5 coordinators), initialises the run, and while it leads dispatches prompt batches\n" +
			"over NATS JetStream, tracks groups until the learner reports them and re-dispatches stragglers.\n" +
			"Followers apply worker events through the leader and take over scheduling when it fails.\n" +
			"Serves GET /v1/status, /metrics and /healthz on --http. Exits 0 when every step is learned\n" +
			"(unless --keep-serving).",
		Args: cobra.NoArgs,
	}
	cli := startup.NewCLI(cmd, p)
	f := cmd.Flags()
	f.StringVar(&httpAddr, "http", "127.0.0.1:8080", "status API address")
	rf.register(f)
	f.BoolVar(&keep, "keep-serving", false, "keep serving the status API after the run is done")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, log, err := cli.Load(cmd)
		if err != nil {
			return err
		}
		log = logging.Component(log, "coordinator")
		nodeCfg, _, err := rf.nodeConfig(cfg.RunID)
		if err != nil {
			return err
		}
		return serve(cmd.Context(), cfg, nodeCfg, cli.NATS, &cli.Security, httpAddr, keep, false, log)
	}
	return cmd
}

// serve runs one coordinator until the run is done (or ctx ends). fresh deletes the run's
// streams first (a resumed run re-dispatches everything after its checkpoint).
func serve(ctx context.Context, cfg config.Config, nodeCfg runstate.NodeConfig, natsURL string, sec *startup.Security, httpAddr string, keep, fresh bool, log zerolog.Logger) error {
	ps, err := prompts.ReadPool(cfg.Prompts, cfg.PromptRepeats)
	if err != nil {
		return err
	}
	nodeCfg.Token, nodeCfg.TLS = sec.ClusterToken, sec.TLS
	nc, js, err := bus.Connect(ctx, natsURL, bus.ConnectOptions{Name: "coordinator-" + nodeCfg.ID, Role: bus.RoleCoordinator, Auth: sec.NATS, Log: log,
		FirstConnectWait: cfg.Wire.ConnectWait.D()})
	if err != nil {
		return err
	}
	defer nc.Close()
	if fresh {
		// Before raft starts: no coordinator of this (resumed) cluster can have dispatched yet
		// through this node, and the interrupted run's half-delivered messages (whose ids the
		// resumed run reuses) are gone. The learner announces its version again by itself.
		if err := bus.DeleteStreams(ctx, js, cfg.RunID); err != nil {
			log.Warn().Err(err).Msg("deleting the interrupted run's streams")
		} else {
			log.Info().Str("run", cfg.RunID).Msg("the run's streams were reset")
		}
	}
	node, err := runstate.Open(nodeCfg, log)
	if err != nil {
		return err
	}
	defer node.Shutdown()
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	leader, err := node.WaitLeader(wctx)
	wcancel()
	if err != nil {
		return fmt.Errorf("raft leader: %w", err)
	}
	log.Info().Str("leader", leader).Msg("raft cluster up")
	st := dashboardStore(ctx, cfg.Store, log)
	c, err := coordinator.New(ctx, coordinator.Deps{JS: js, Node: node, Prompts: ps, HTTPAddr: httpAddr,
		APIToken: sec.APIToken, TLS: sec.TLS, Store: st, Log: log}, cfg)
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
	log.Info().Str("run", cfg.RunID).Str("node", nodeCfg.ID).Str("status", sec.TLS.Scheme()+"://"+c.Addr()+"/v1/status").Msg("coordinating")
	select {
	case <-c.Done():
		if keep {
			<-ctx.Done()
		} else {
			// Let the other coordinators see the end too before this one's raft goes away.
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	case <-ctx.Done():
	case err := <-done:
		return err
	}
	cancel()
	return <-done
}

// dashboardStore opens the run's store for the dashboard's pages, or returns nil with a warning:
// coordinating needs no store, so a coordinator without access to it (no S3 credentials in its
// environment) still runs, and its dashboard shows the status alone.
func dashboardStore(ctx context.Context, spec string, log zerolog.Logger) store.Store {
	if spec == "" {
		return nil
	}
	octx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	// Released with the process: local and S3 stores hold nothing that outlives it.
	st, _, err := startup.OpenStore(octx, spec, log)
	if err != nil {
		log.Warn().Err(err).Msg("the run's store cannot be opened: the dashboard shows the status only, no metrics or samples")
		return nil
	}
	return st
}

// newNatsServerCmd is `coordinator nats-server`: a standalone embedded nats-server with
// JetStream for runs whose roles are separate processes.
func newNatsServerCmd() *cobra.Command {
	var o natsd.Options
	var urlFile, usersFile string
	var tlsOpts natsd.TLS
	cmd := &cobra.Command{
		Use:   "nats-server",
		Short: "Serve NATS with JetStream (the embedded server) until interrupted",
		Args:  cobra.NoArgs,
		Long: "Serves NATS with JetStream on --host:--port. Clients authenticate as the users of --users (each\n" +
			"with its role's permissions: workers publish only their own subjects) or with the token in\n" +
			"$" + startup.EnvNATSToken + "; --tls-cert/--tls-key serve TLS, --tls-ca with --tls-verify requires client\n" +
			"certificates. Without either, anyone who reaches the port may publish: keep it on loopback.",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if usersFile != "" {
				us, err := natsd.ReadUsers(usersFile)
				if err != nil {
					return err
				}
				o.Users = us
			}
			o.Token = os.Getenv(startup.EnvNATSToken)
			if tlsOpts != (natsd.TLS{}) {
				o.TLS = &tlsOpts
			}
			srv, err := natsd.Start(o)
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
			<-cmd.Context().Done()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Host, "host", "127.0.0.1", "listen host")
	f.IntVar(&o.Port, "port", 4222, "listen port (0: any free port)")
	f.StringVar(&o.StoreDir, "store-dir", "", "JetStream storage directory (default: a temporary one)")
	f.IntVar(&o.MonitorPort, "monitor-port", 0, "HTTP monitoring port for autoscalers (0: off, -1: any)")
	f.StringVar(&urlFile, "url-file", "", "write the client URL to this file once listening")
	f.StringVar(&usersFile, "users", "", "users file (YAML: user and password or nkey, and role) whose users alone may connect")
	f.StringVar(&tlsOpts.CertFile, "tls-cert", "", "serve TLS with this certificate file")
	f.StringVar(&tlsOpts.KeyFile, "tls-key", "", "key file of --tls-cert")
	f.StringVar(&tlsOpts.CAFile, "tls-ca", "", "CA file that verifies client certificates")
	f.BoolVar(&tlsOpts.VerifyClients, "tls-verify", false, "require a client certificate signed by --tls-ca")
	return cmd
}
