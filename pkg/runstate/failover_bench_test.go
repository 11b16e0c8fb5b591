package runstate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/porttest"
)

const (
	// failoverTrials is how many leader crashes one BenchmarkFailover iteration measures. Below 100
	// samples the nearest-rank p99 is the maximum; more iterations (-benchtime Nx) sharpen it.
	failoverTrials = 20
	// applyThreeCommands is how many heartbeats one BenchmarkApplyThree iteration commits.
	applyThreeCommands = 2000
	// benchWait bounds every wait in these benchmarks: far beyond any election or catch-up with
	// the default timeouts, so hitting it means the cluster is stuck, not slow.
	benchWait = 30 * time.Second
)

// benchCluster is three coordinators on loopback that bootstrap from a static peer list, like a
// production cluster: fixed raft and HTTP addresses (so a crashed node comes back on the same
// ones), durable data dirs and the NodeConfig default timeouts.
type benchCluster struct {
	peers []Peer
	dirs  map[string]string
	nodes map[string]*Node // the running nodes
}

func newBenchCluster(b *testing.B) *benchCluster {
	b.Helper()
	c := &benchCluster{dirs: map[string]string{}, nodes: map[string]*Node{}}
	for _, id := range []string{"a", "b", "c"} {
		c.peers = append(c.peers, Peer{ID: id, RaftAddr: benchFreeAddr(b), HTTPAddr: benchFreeAddr(b)})
		c.dirs[id] = b.TempDir()
	}
	// Registered after TempDir, so it runs first: the bolt files are closed before the dirs go.
	b.Cleanup(func() {
		for id, n := range c.nodes {
			if err := n.Shutdown(); err != nil {
				b.Errorf("shut down %s: %v", id, err)
			}
		}
	})
	for _, p := range c.peers {
		c.open(b, p.ID)
	}
	c.stableLeader(b)
	return c
}

func benchFreeAddr(b *testing.B) string {
	b.Helper()
	p, err := porttest.Port()
	if err != nil {
		b.Fatalf("pick a free port: %v", err)
	}
	return fmt.Sprintf("127.0.0.1:%d", p)
}

// open starts node id on its configured addresses and data dir. Bootstrap is set as on a first
// start; Open skips it when the data dir already holds raft state, as for a restarted coordinator.
func (c *benchCluster) open(b *testing.B, id string) *Node {
	b.Helper()
	i := slices.IndexFunc(c.peers, func(p Peer) bool { return p.ID == id })
	p := c.peers[i]
	cfg := NodeConfig{ID: id, RaftAddr: p.RaftAddr, HTTPAddr: p.HTTPAddr, DataDir: c.dirs[id], Bootstrap: true, Peers: c.peers}
	// The peers know the node only by these addresses, so it must get them back; the old listeners
	// are closed by the time Shutdown returns, but retry briefly in case the kernel lags.
	for attempt := 1; ; attempt++ {
		n, err := Open(cfg, zerolog.Nop())
		if err == nil {
			c.nodes[id] = n
			return n
		}
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == 50 {
			b.Fatalf("open %s (attempt %d): %v", id, attempt, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stableLeader waits until every running node sees the same leader and that node knows it leads,
// so a trial starts from a settled cluster rather than mid-election.
func (c *benchCluster) stableLeader(b *testing.B) *Node {
	b.Helper()
	deadline := time.Now().Add(benchWait)
	for {
		var lead string
		agree := true
		for _, n := range c.nodes {
			id, _ := n.Leader()
			if id == "" || (lead != "" && id != lead) {
				agree = false
				break
			}
			lead = id
		}
		if ld := c.nodes[lead]; agree && ld != nil && ld.IsLeader() {
			return ld
		}
		if time.Now().After(deadline) {
			b.Fatalf("no leader all of %d nodes agree on within %v", len(c.nodes), benchWait)
		}
		time.Sleep(time.Millisecond)
	}
}

func benchHeartbeat(i int) Command {
	return NewHeartbeat(t0, Heartbeat{WorkerID: fmt.Sprintf("w%d", i%64), Role: "rollout", TTL: time.Minute})
}

// firstCommit polls the running nodes every millisecond until one leads and commits cmd through
// it; it returns the index cmd committed at. An apply that fails because leadership moved on
// again is not an error: the polling goes on until the deadline.
func (c *benchCluster) firstCommit(b *testing.B, cmd Command) uint64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), benchWait)
	defer cancel()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		for _, n := range c.nodes {
			if !n.IsLeader() {
				continue
			}
			res, err := n.Apply(ctx, cmd)
			if err == nil {
				return res.Index
			}
			if errors.Is(err, ErrRejected) {
				b.Fatalf("heartbeat rejected by new leader %s: %v", n.ID(), err)
			}
			last = fmt.Errorf("apply through %s: %w", n.ID(), err)
		}
		select {
		case <-ctx.Done():
			b.Fatalf("no commit on the surviving nodes within %v (last error: %v)", benchWait, last)
		case <-tick.C:
		}
	}
}

// caughtUp waits until node id has applied index and the whole cluster agrees on a leader again.
func (c *benchCluster) caughtUp(b *testing.B, id string, index uint64) {
	b.Helper()
	n := c.nodes[id]
	deadline := time.Now().Add(benchWait)
	for n.State().Applied < index {
		if time.Now().After(deadline) {
			b.Fatalf("restarted %s applied %d, not %d, within %v", id, n.State().Applied, index, benchWait)
		}
		time.Sleep(time.Millisecond)
	}
	c.stableLeader(b)
}

// nearestRank returns the p-quantile of sorted by the nearest-rank method: the ceil(p*n)-th
// smallest sample. With 20 samples p50 is the 10th and p99 the 20th (the maximum): no
// interpolation, so every reported value is an election that really happened.
func nearestRank(sorted []time.Duration, p float64) time.Duration {
	rank := max(int(math.Ceil(p*float64(len(sorted)))), 1)
	return sorted[rank-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkFailover measures how long a 3-node cluster with the default timeouts cannot commit
// after its leader crashes: from the moment the leader's Shutdown has returned (it is gone: no
// more heartbeats, its port closed) to the first command committed through a new leader. That
// span is detection (a follower's heartbeat timeout), the election and the first commit, which is
// what a worker's apply waits for. The crashed node is then restarted from its data dir on the
// same addresses and allowed to catch up, so every trial starts from a full, settled cluster.
// ns/op counts the shutdowns and failovers only, not the restarts.
func BenchmarkFailover(b *testing.B) {
	c := newBenchCluster(b)
	samples := make([]time.Duration, 0, failoverTrials*b.N)
	b.ResetTimer()
	for i := range failoverTrials * b.N {
		old := c.stableLeader(b)
		id := old.ID()
		if err := old.Shutdown(); err != nil {
			b.Fatalf("trial %d: shut down leader %s: %v", i, id, err)
		}
		gone := time.Now()
		delete(c.nodes, id)
		index := c.firstCommit(b, benchHeartbeat(i))
		samples = append(samples, time.Since(gone))

		b.StopTimer()
		c.open(b, id)
		c.caughtUp(b, id, index)
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(samples)
	b.ReportMetric(ms(nearestRank(samples, 0.50)), "failover-p50-ms")
	b.ReportMetric(ms(nearestRank(samples, 0.99)), "failover-p99-ms")
	b.ReportMetric(ms(samples[len(samples)-1]), "failover-max-ms")
	b.ReportMetric(float64(len(samples)), "elections")
}

// BenchmarkApplyThree measures committed heartbeats per second through the leader of a 3-node
// cluster from 8 x GOMAXPROCS concurrent proposers: unlike BenchmarkApply's single node, every
// commit waits for a follower's durable write over TCP.
func BenchmarkApplyThree(b *testing.B) {
	c := newBenchCluster(b)
	ld := c.stableLeader(b)
	total := int64(applyThreeCommands * b.N)
	ctx, cancel := context.WithTimeout(context.Background(), 10*benchWait)
	defer cancel()
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	b.ResetTimer()
	for range 8 * runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				if _, err := ld.Apply(ctx, benchHeartbeat(int(i))); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("apply %d through leader %s: %w", i, ld.ID(), err) })
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "applies/s")
}
