package runstate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/secure"
)

// Default raft timings. Measured on loopback with 3 nodes: with 200 ms the first election takes
// ~0.3 s and a re-election after the leader stops ~0.3-0.4 s, against ~2.6 s with raft's defaults
// (1 s). Over a real network with slow disks raise them together.
const (
	DefaultHeartbeatTimeout = 200 * time.Millisecond
	DefaultElectionTimeout  = 200 * time.Millisecond
	DefaultLeaderLease      = 200 * time.Millisecond
	DefaultApplyTimeout     = 10 * time.Second
)

// Peer is a coordinator in the initial cluster configuration.
type Peer struct {
	ID       string `yaml:"id" json:"id"`
	RaftAddr string `yaml:"raft_addr" json:"raft_addr"`
	HTTPAddr string `yaml:"http_addr" json:"http_addr"`
}

// NodeConfig configures one coordinator's raft node.
type NodeConfig struct {
	ID string `yaml:"id"`
	// RaftAddr is the TCP address raft binds and advertises (host:port; port 0 picks a free one,
	// see Node.RaftAddr). The host must be an address peers can dial, not 0.0.0.0, unless
	// AdvertiseAddr is set.
	RaftAddr      string `yaml:"raft_addr"`
	AdvertiseAddr string `yaml:"advertise_addr"`
	// HTTPAddr serves /raft/apply and friends so followers and workers can reach the leader. Empty
	// disables it (fine for a single node in one process).
	HTTPAddr string `yaml:"http_addr"`
	// DataDir holds the bolt log store (raft.db) and snapshots; a restart from it recovers state.
	DataDir string `yaml:"data_dir"`
	// Bootstrap forms a new cluster of this node plus Peers when DataDir holds no raft state yet.
	// Set it on one node (or identically on all initial nodes); joiners are added with AddVoter.
	Bootstrap bool   `yaml:"bootstrap"`
	Peers     []Peer `yaml:"peers"`

	HeartbeatTimeout   time.Duration `yaml:"heartbeat_timeout"`
	ElectionTimeout    time.Duration `yaml:"election_timeout"`
	LeaderLeaseTimeout time.Duration `yaml:"leader_lease_timeout"`
	// ApplyTimeout bounds one Apply (forwarding and retries across a leader change included) when
	// the caller's context has no deadline.
	ApplyTimeout      time.Duration `yaml:"apply_timeout"`
	SnapshotThreshold uint64        `yaml:"snapshot_threshold"`
	SnapshotInterval  time.Duration `yaml:"snapshot_interval"`
	SnapshotRetain    int           `yaml:"snapshot_retain"`

	// Token, when set, is required (as a bearer token) by the HTTP endpoint and sent to peers'.
	Token string `yaml:"-"`
	// TLS, when set, secures raft's traffic and the HTTP endpoint with mutual TLS: the node serves
	// its certificate, presents it to peers, and accepts only peers whose certificate the CA signed.
	TLS secure.TLSFiles `yaml:"-"`
}

func (c *NodeConfig) withDefaults() (NodeConfig, error) {
	o := *c
	if o.ID == "" {
		return o, errors.New("raft node: empty id")
	}
	if o.RaftAddr == "" {
		return o, fmt.Errorf("raft node %s: empty raft address", o.ID)
	}
	if o.DataDir == "" {
		return o, fmt.Errorf("raft node %s: empty data dir", o.ID)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.HeartbeatTimeout, DefaultHeartbeatTimeout)
	def(&o.ElectionTimeout, DefaultElectionTimeout)
	def(&o.LeaderLeaseTimeout, min(DefaultLeaderLease, o.HeartbeatTimeout))
	def(&o.ApplyTimeout, DefaultApplyTimeout)
	if o.SnapshotRetain == 0 {
		o.SnapshotRetain = 2
	}
	for _, d := range []time.Duration{o.HeartbeatTimeout, o.ElectionTimeout, o.LeaderLeaseTimeout, o.ApplyTimeout, o.SnapshotInterval} {
		if d < 0 {
			return o, fmt.Errorf("raft node %s: negative timeout %v", o.ID, d)
		}
	}
	return o, nil
}

// Node is one coordinator's replica of the run state.
type Node struct {
	cfg   NodeConfig
	log   zerolog.Logger
	fsm   *FSM
	raft  *raft.Raft
	trans *raft.NetworkTransport
	bolt  *raftboltdb.BoltStore

	httpLn  net.Listener
	httpSrv *http.Server
	httpTr  *http.Transport
	httpCl  *http.Client

	leaderCh chan bool
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	shutOnce sync.Once
	shutErr  error
	// raftDown is closed once raft has shut down: an apply raft accepted but never processed is
	// then never answered (hashicorp/raft gives apply futures no shutdown channel).
	raftDown chan struct{}
}

// Open starts a raft node: it recovers state from DataDir (snapshot + log replay), bootstraps a new
// cluster when asked and nothing is there yet, and serves the forwarding endpoint on HTTPAddr.
func Open(cfg NodeConfig, log zerolog.Logger) (*Node, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	log = logging.Component(log, "runstate").With().Str("node", c.ID).Logger()
	if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("raft node %s: data dir: %w", c.ID, err)
	}
	n := &Node{cfg: c, log: log, fsm: NewFSM(), leaderCh: make(chan bool, 1), raftDown: make(chan struct{})}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			n.closeResources()
		}
	}()

	hc := newHCLogger(log, "raft")
	n.bolt, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(c.DataDir, "raft.db")})
	if err != nil {
		return nil, fmt.Errorf("raft node %s: open log store: %w", c.ID, err)
	}
	logs, err := raft.NewLogCache(512, n.bolt)
	if err != nil {
		return nil, fmt.Errorf("raft node %s: log cache: %w", c.ID, err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(c.DataDir, c.SnapshotRetain, hc)
	if err != nil {
		return nil, fmt.Errorf("raft node %s: snapshot store: %w", c.ID, err)
	}
	var adv net.Addr
	if c.AdvertiseAddr != "" {
		adv, err = net.ResolveTCPAddr("tcp", c.AdvertiseAddr)
		if err != nil {
			return nil, fmt.Errorf("raft node %s: advertise address %q: %w", c.ID, c.AdvertiseAddr, err)
		}
	}
	if c.TLS.IsZero() {
		n.trans, err = raft.NewTCPTransportWithLogger(c.RaftAddr, adv, 3, 2*time.Second, hc)
	} else {
		n.trans, err = newTLSTransport(c.RaftAddr, adv, c.TLS, hc)
	}
	if err != nil {
		return nil, fmt.Errorf("raft node %s: transport on %s: %w", c.ID, c.RaftAddr, err)
	}
	n.cfg.RaftAddr = string(n.trans.LocalAddr())

	if c.HTTPAddr != "" {
		n.httpLn, err = net.Listen("tcp", c.HTTPAddr)
		if err != nil {
			return nil, fmt.Errorf("raft node %s: http listen %s: %w", c.ID, c.HTTPAddr, err)
		}
		n.cfg.HTTPAddr = n.httpLn.Addr().String()
		if sc, err := c.TLS.ServerConfig(); err != nil {
			return nil, fmt.Errorf("raft node %s: http endpoint: %w", c.ID, err)
		} else if sc != nil {
			n.httpLn = tls.NewListener(n.httpLn, sc)
		}
	}
	rt, tr, err := secure.Transport(c.TLS, c.Token)
	if err != nil {
		return nil, fmt.Errorf("raft node %s: forwarding client: %w", c.ID, err)
	}
	n.httpTr = tr
	n.httpCl = &http.Client{Transport: rt}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.ID)
	rc.HeartbeatTimeout = c.HeartbeatTimeout
	rc.ElectionTimeout = c.ElectionTimeout
	rc.LeaderLeaseTimeout = c.LeaderLeaseTimeout
	rc.BatchApplyCh = true
	rc.Logger = hc
	if c.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = c.SnapshotThreshold
	}
	if c.SnapshotInterval > 0 {
		rc.SnapshotInterval = c.SnapshotInterval
	}
	notify := make(chan bool, 8)
	rc.NotifyCh = notify
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("raft node %s: %w", c.ID, err)
	}

	if c.Bootstrap {
		has, err := raft.HasExistingState(logs, n.bolt, snaps)
		if err != nil {
			return nil, fmt.Errorf("raft node %s: inspect data dir: %w", c.ID, err)
		}
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: n.trans.LocalAddr(), Suffrage: raft.Voter}}}
			for _, p := range c.Peers {
				if p.ID == c.ID {
					continue
				}
				conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr), Suffrage: raft.Voter})
			}
			if err := raft.BootstrapCluster(rc, logs, n.bolt, snaps, n.trans, conf); err != nil {
				return nil, fmt.Errorf("raft node %s: bootstrap: %w", c.ID, err)
			}
			log.Info().Int("voters", len(conf.Servers)).Msg("bootstrapped new cluster")
		}
	}
	n.raft, err = raft.NewRaft(rc, n.fsm, logs, n.bolt, snaps, n.trans)
	if err != nil {
		return nil, fmt.Errorf("raft node %s: start: %w", c.ID, err)
	}
	if n.httpLn != nil {
		n.httpSrv = &http.Server{Handler: secure.RequireToken(c.Token, n.handler()), ReadHeaderTimeout: 5 * time.Second}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := n.httpSrv.Serve(n.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				n.log.Error().Err(err).Msg("http endpoint stopped")
			}
		}()
	}
	n.wg.Add(1)
	go n.watchLeadership(notify)
	ok = true
	log.Info().Str("raft", n.cfg.RaftAddr).Str("http", n.cfg.HTTPAddr).Msg("raft node started")
	return n, nil
}

// watchLeadership republishes leadership changes on LeaderCh and, on gaining leadership, records
// this node's (and the configured peers') HTTP addresses in the state so followers can forward.
func (n *Node) watchLeadership(notify <-chan bool) {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case lead := <-notify:
			select {
			case <-n.leaderCh:
			default:
			}
			n.leaderCh <- lead
			if !lead {
				n.log.Info().Msg("lost leadership")
				continue
			}
			n.log.Info().Msg("gained leadership")
			// Not inline: raft blocks on NotifyCh while this goroutine would wait on raft.
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				n.registerMembers()
			}()
		}
	}
}

func (n *Node) registerMembers() {
	members := []SetMember{{ID: n.cfg.ID, RaftAddr: n.cfg.RaftAddr, HTTPAddr: n.cfg.HTTPAddr}}
	st := n.fsm.State()
	for _, p := range n.cfg.Peers {
		if _, known := st.Members[p.ID]; !known && p.ID != n.cfg.ID {
			members = append(members, SetMember{ID: p.ID, RaftAddr: p.RaftAddr, HTTPAddr: p.HTTPAddr})
		}
	}
	for _, m := range members {
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ApplyTimeout)
		_, err := n.applyLeader(ctx, NewSetMember(time.Now(), m))
		cancel()
		if err != nil && n.ctx.Err() == nil {
			n.log.Warn().Err(err).Str("member", m.ID).Msg("record member address")
		}
	}
}

// ID is the node's raft server id.
func (n *Node) ID() string { return n.cfg.ID }

// RaftAddr is the address raft listens on (the real port when configured with port 0).
func (n *Node) RaftAddr() string { return n.cfg.RaftAddr }

// HTTPAddr is the forwarding endpoint's address, "" when disabled.
func (n *Node) HTTPAddr() string { return n.cfg.HTTPAddr }

// IsLeader reports whether this node leads now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's id and raft address, empty when none is known.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// LeaderHTTP returns the current leader's HTTP address, "" when unknown.
func (n *Node) LeaderHTTP() string {
	id, _ := n.Leader()
	if id == "" {
		return ""
	}
	if id == n.cfg.ID {
		return n.cfg.HTTPAddr
	}
	if m, ok := n.fsm.memberHTTP(id); ok {
		return m
	}
	for _, p := range n.cfg.Peers {
		if p.ID == id {
			return p.HTTPAddr
		}
	}
	return ""
}

// LeaderCh delivers true when this node becomes leader and false when it stops; only the latest
// value is kept, like raft's own LeaderCh.
func (n *Node) LeaderCh() <-chan bool { return n.leaderCh }

// Stepped delivers a signal after this node applied an entry that changed the run's step (one
// pending signal is kept): the coordinator's scheduler waits on it besides its tick.
func (n *Node) Stepped() <-chan struct{} { return n.fsm.Stepped() }

// State returns a deep copy of this node's applied state. On a follower it may trail the leader by
// the entries still in flight; call Barrier on the leader first for a read that sees every commit.
func (n *Node) State() State { return n.fsm.State() }

// Barrier waits until every entry committed before it is applied to this node's state (leader only).
func (n *Node) Barrier(ctx context.Context) error {
	if err := n.raft.Barrier(n.timeout(ctx)).Error(); err != nil {
		return fmt.Errorf("raft barrier on %s: %w", n.cfg.ID, err)
	}
	return nil
}

// WaitLeader blocks until some node leads (as this node sees it) or ctx ends.
func (n *Node) WaitLeader(ctx context.Context) (id string, err error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if id, _ := n.Leader(); id != "" {
			return id, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("node %s: no leader: %w", n.cfg.ID, ctx.Err())
		case <-t.C:
		}
	}
}

// Snapshot forces a raft snapshot (and log compaction).
func (n *Node) Snapshot() error {
	if err := n.raft.Snapshot().Error(); err != nil {
		return fmt.Errorf("snapshot on %s: %w", n.cfg.ID, err)
	}
	return nil
}

func (n *Node) timeout(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return n.cfg.ApplyTimeout
}

// Apply commits cmd through raft and returns its result, wherever the leader is: on the leader it
// applies directly, on a follower it forwards to the leader's HTTP endpoint, and across a leader
// change it retries until the context (or ApplyTimeout) ends. A command the state refuses returns
// its Result and an error wrapping ErrRejected, which is never retried.
func (n *Node) Apply(ctx context.Context, cmd Command) (Result, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.ApplyTimeout)
		defer cancel()
	}
	if err := cmd.Validate(); err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrRejected, err)
	}
	var last error
	for backoff := 20 * time.Millisecond; ; backoff = min(2*backoff, 500*time.Millisecond) {
		var res Result
		var err error
		if n.IsLeader() {
			res, err = n.applyLeader(ctx, cmd)
		} else if addr := n.LeaderHTTP(); addr != "" {
			res, err = n.forward(ctx, addr, cmd)
		} else {
			err = errors.New("no leader known")
		}
		if err == nil {
			return res, res.Err()
		}
		if errors.Is(err, ErrRejected) || errors.Is(err, raft.ErrRaftShutdown) {
			return res, err
		}
		last = err
		select {
		case <-ctx.Done():
			return Result{}, fmt.Errorf("apply %s on %s: %w (last error: %v)", cmd.Type, n.cfg.ID, ctx.Err(), last)
		case <-n.ctx.Done():
			return Result{}, fmt.Errorf("apply %s on %s: node shut down (last error: %v)", cmd.Type, n.cfg.ID, last)
		case <-time.After(backoff):
		}
	}
}

// ApplyAll commits cmds in their order and returns each one's result and error, as Apply would.
// On the leader they are proposed together, so raft writes them to its log in one batch (a step's
// dispatches: one disk write instead of one per task); a proposal that fails there, and every
// command on a follower, goes through Apply.
func (n *Node) ApplyAll(ctx context.Context, cmds []Command) ([]Result, []error) {
	res, errs := make([]Result, len(cmds)), make([]error, len(cmds))
	futures := make([]raft.ApplyFuture, len(cmds))
	if n.IsLeader() {
		for i, cmd := range cmds {
			if cmd.Validate() != nil {
				continue
			}
			data, err := cmd.Encode()
			if err != nil {
				continue
			}
			futures[i] = n.raft.Apply(data, n.timeout(ctx))
		}
	}
	for i, cmd := range cmds {
		if f := futures[i]; f != nil && n.await(f) == nil {
			if r, ok := f.Response().(Result); ok {
				res[i], errs[i] = r, r.Err()
				continue
			}
		}
		res[i], errs[i] = n.Apply(ctx, cmd)
	}
	return res, errs
}

// await is f.Error() that also returns when raft shuts down: an apply raft accepted just before
// shutting down is never answered, and waiting for it would hang Shutdown (it waits for the
// goroutines that apply). The goroutine left waiting on such a future then stays blocked; it
// holds nothing but the future.
func (n *Node) await(f raft.ApplyFuture) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-n.raftDown:
		select {
		case err := <-done:
			return err
		default:
			return raft.ErrRaftShutdown
		}
	}
}

// applyLeader proposes cmd to raft on this node, which must lead. A raft error (lost leadership,
// timeout) is returned as is for the caller to retry.
func (n *Node) applyLeader(ctx context.Context, cmd Command) (Result, error) {
	data, err := cmd.Encode()
	if err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrRejected, err)
	}
	f := n.raft.Apply(data, n.timeout(ctx))
	if err := n.await(f); err != nil {
		return Result{}, fmt.Errorf("raft apply %s: %w", cmd.Type, err)
	}
	res, ok := f.Response().(Result)
	if !ok {
		return Result{}, fmt.Errorf("raft apply %s: unexpected response %T", cmd.Type, f.Response())
	}
	return res, nil
}

// AddVoter adds a coordinator to the cluster (forwarded to the leader when called elsewhere) and
// records its HTTP address.
func (n *Node) AddVoter(ctx context.Context, id, raftAddr, httpAddr string) error {
	return n.membership(ctx, memberChange{Op: "add", ID: id, RaftAddr: raftAddr, HTTPAddr: httpAddr})
}

// RemoveServer removes a coordinator from the cluster (forwarded to the leader when called
// elsewhere).
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	return n.membership(ctx, memberChange{Op: "remove", ID: id})
}

type memberChange struct {
	Op       string `json:"op"`
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr,omitempty"`
	HTTPAddr string `json:"http_addr,omitempty"`
}

func (n *Node) membership(ctx context.Context, m memberChange) error {
	if m.ID == "" || (m.Op == "add" && m.RaftAddr == "") {
		return fmt.Errorf("membership %s: id and raft address are required", m.Op)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.ApplyTimeout)
		defer cancel()
	}
	// Like Apply: ride out an election. Adding a voter twice or removing a gone server is a no-op
	// in raft, so retrying is safe.
	var last error
	for backoff := 20 * time.Millisecond; ; backoff = min(2*backoff, 500*time.Millisecond) {
		var err error
		if n.IsLeader() {
			err = n.membershipLeader(ctx, m)
		} else if addr := n.LeaderHTTP(); addr != "" {
			err = n.forwardMembership(ctx, addr, m)
		} else {
			err = errors.New("no leader known")
		}
		if err == nil || errors.Is(err, ErrRejected) || errors.Is(err, raft.ErrRaftShutdown) {
			return err
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("membership %s %s on %s: %w (last error: %v)", m.Op, m.ID, n.cfg.ID, ctx.Err(), last)
		case <-n.ctx.Done():
			return fmt.Errorf("membership %s %s on %s: node shut down (last error: %v)", m.Op, m.ID, n.cfg.ID, last)
		case <-time.After(backoff):
		}
	}
}

func (n *Node) membershipLeader(ctx context.Context, m memberChange) error {
	switch m.Op {
	case "add":
		if err := n.raft.AddVoter(raft.ServerID(m.ID), raft.ServerAddress(m.RaftAddr), 0, n.timeout(ctx)).Error(); err != nil {
			return fmt.Errorf("add voter %s at %s: %w", m.ID, m.RaftAddr, err)
		}
		_, err := n.Apply(ctx, NewSetMember(time.Now(), SetMember{ID: m.ID, RaftAddr: m.RaftAddr, HTTPAddr: m.HTTPAddr}))
		return err
	case "remove":
		if err := n.raft.RemoveServer(raft.ServerID(m.ID), 0, n.timeout(ctx)).Error(); err != nil {
			return fmt.Errorf("remove server %s: %w", m.ID, err)
		}
		if m.ID == n.cfg.ID {
			// A leader that removed itself steps down; the next leader has no use for its address.
			return nil
		}
		_, err := n.Apply(ctx, NewSetMember(time.Now(), SetMember{ID: m.ID, Remove: true}))
		return err
	}
	return fmt.Errorf("membership: unknown op %q", m.Op)
}

// Servers lists the raft configuration: id -> raft address.
func (n *Node) Servers() (map[string]string, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft configuration: %w", err)
	}
	out := map[string]string{}
	for _, s := range f.Configuration().Servers {
		out[string(s.ID)] = string(s.Address)
	}
	return out, nil
}

// Shutdown stops the node: the HTTP endpoint, raft, the transport and the log store. Its state
// stays in DataDir for the next Open.
func (n *Node) Shutdown() error {
	n.shutOnce.Do(func() {
		var errs []error
		if n.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := n.httpSrv.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("http shutdown: %w", err))
			}
			cancel()
		}
		n.cancel()
		if n.raft != nil {
			if err := n.raft.Shutdown().Error(); err != nil {
				errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
			}
		}
		close(n.raftDown)
		n.wg.Wait()
		errs = append(errs, n.closeResources())
		n.shutErr = errors.Join(errs...)
		n.log.Info().Msg("raft node stopped")
	})
	return n.shutErr
}

func (n *Node) closeResources() error {
	var errs []error
	if n.cancel != nil {
		n.cancel()
	}
	if n.httpLn != nil && n.httpSrv == nil {
		_ = n.httpLn.Close()
	}
	if n.trans != nil {
		// Close does not close pooled connections; without this the peers' handlers of our
		// outbound streams (and ours of theirs) linger until the process exits.
		n.trans.CloseStreams()
		if err := n.trans.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close transport: %w", err))
		}
	}
	if n.bolt != nil {
		if err := n.bolt.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close log store: %w", err))
		}
	}
	if n.httpTr != nil {
		n.httpTr.CloseIdleConnections()
	}
	return errors.Join(errs...)
}
