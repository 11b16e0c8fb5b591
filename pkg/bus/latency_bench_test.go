package bus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/natsd"
	"github.com/bicot-rl/bicot/pkg/plan"
	"github.com/bicot-rl/bicot/pkg/promptgen"
	"github.com/bicot-rl/bicot/pkg/scene"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// latencyMsgs is fixed rather than scaled with b.N so that each iteration's percentiles rest on
// the same number of messages whatever -benchtime is.
const latencyMsgs = 1000

// fanoutWatchers and fanoutVersions: a large rollout pool, and enough announcements for a p99.
const (
	fanoutWatchers = 64
	fanoutVersions = 50
)

// benchServer starts an embedded server with a connection and the run's streams, as a role
// finds them; everything is closed when the benchmark ends.
func benchServer(b *testing.B, run string) (*natsd.Server, jetstream.JetStream, Topology) {
	b.Helper()
	srv, err := natsd.Start(natsd.Options{StoreDir: b.TempDir()})
	if err != nil {
		b.Fatalf("start nats: %v", err)
	}
	b.Cleanup(srv.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, js, err := Connect(ctx, srv.URL(), ConnectOptions{Name: b.Name()})
	if err != nil {
		b.Fatalf("connect: %v", err)
	}
	b.Cleanup(nc.Close)
	topo, err := EnsureStreams(ctx, js, run)
	if err != nil {
		b.Fatalf("streams of %s: %v", run, err)
	}
	return srv, js, topo
}

// rolloutSamples are n samples shaped as a rollout worker publishes them (wire.FromSample, no
// PNG): training prompts, G samples each, every one with its own scene drawn for the prompt, its
// plan in the policy's vocabulary ending in end-of-text (cut at max_plan_tokens like a sampled
// plan), the scene's VQ codes as image tokens and plausible log-probs. Message size and JSON
// shape are what the latency depends on, so they should be the real ones.
func rolloutSamples(b *testing.B, run string, n, g int) []Sample {
	b.Helper()
	cb, err := vq.Load(filepath.Join("..", "..", "models", "codebook.vq"))
	if err != nil {
		b.Fatalf("codebook: %v", err)
	}
	ps, err := promptgen.GenerateSplit(promptgen.Train, promptgen.DefaultSeed, (n/g)/8+1)
	if err != nil {
		b.Fatalf("prompts: %v", err)
	}
	rng := rand.New(rand.NewPCG(7, 11))
	rng.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
	vocab := tokenizer.New()
	maxPlan := config.Default().Sampling.MaxPlanTokens
	logp := func(k int) []float32 {
		out := make([]float32, k)
		for i := range out {
			out[i] = float32(-3 * rng.Float64())
		}
		return out
	}
	out := make([]Sample, n)
	for i := range out {
		p := ps[i/g]
		sc, err := promptgen.TrainingScene(p, cb.Config(), rng)
		if err != nil {
			b.Fatalf("scene for %q: %v", p.Prompt, err)
		}
		img, err := scene.Render(cb.Config(), sc)
		if err != nil {
			b.Fatalf("render %q: %v", p.Prompt, err)
		}
		codes, err := cb.Encode(img)
		if err != nil {
			b.Fatalf("encode %q: %v", p.Prompt, err)
		}
		words, err := vocab.Encode(plan.Ordered(sc))
		if err != nil {
			b.Fatalf("plan of %q: %v", p.Prompt, err)
		}
		words = append(words, vocab.EOS())
		truncated := len(words) > maxPlan
		if truncated {
			words = words[:maxPlan]
		}
		s := Sample{Run: run, PromptIndex: i / g, SampleIndex: i % g, G: g, PolicyVersion: 1,
			PlanTokens: make([]int32, len(words)), PlanLen: len(words), PlanTruncated: truncated,
			ImageTokens: make([]int32, len(codes)), Prompt: p, Worker: "rollout-0"}
		for k, w := range words {
			s.PlanTokens[k] = int32(w)
		}
		for k, c := range codes {
			s.ImageTokens[k] = int32(c)
		}
		s.PlanLogp, s.ImageLogp = logp(len(s.PlanTokens)), logp(len(s.ImageTokens))
		out[i] = s
	}
	return out
}

// percentile is the nearest-rank percentile of sorted values: the smallest value with at least
// p% of the values at or below it (no interpolation, so it is always a measured latency).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

type arrival struct {
	key string
	at  time.Time
}

// BenchmarkSampleLatency measures how long a sample takes from a rollout worker's PublishSample
// call to a reward worker's handler, through the samples work queue and the pool's Consume.
func BenchmarkSampleLatency(b *testing.B) {
	b.StopTimer()
	const run = "lat"
	_, js, topo := benchServer(b, run)
	samples := rolloutSamples(b, run, latencyMsgs, 8)

	arrived := make(chan arrival, latencyMsgs)
	h := func(_ context.Context, msg jetstream.Msg) error {
		// Stamped before decoding: the latency is the wire's, not the JSON decoder's.
		at := time.Now()
		var s Sample
		if err := Decode(msg.Data(), &s); err != nil {
			return Poison(err)
		}
		arrived <- arrival{key: s.Key(), at: at}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	consumed := make(chan error, 1)
	w := config.Default().Wire
	go func() { consumed <- Consume(ctx, js, topo.Samples, h, ConsumeFrom(w, w.RewardFetchers)) }()
	stop := func() {
		cancel()
		if err := <-consumed; err != nil {
			b.Errorf("consume: %v", err)
		}
	}
	defer stop()

	trip := func(s Sample) time.Duration {
		key := s.Key()
		pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
		defer pcancel()
		start := time.Now()
		if _, err := PublishSample(pctx, js, s); err != nil {
			b.Fatalf("publish %s: %v", key, err)
		}
		// Waiting for the handler before the next publish keeps the queue empty, so each
		// latency is one message's trip and not the backlog's.
		select {
		case a := <-arrived:
			if a.key != key {
				b.Fatalf("handler got %s while %s was the only sample in flight", a.key, key)
			}
			return a.at.Sub(start)
		case <-pctx.Done():
			b.Fatalf("sample %s never reached the handler: %v", key, pctx.Err())
			return 0
		}
	}
	// The first delivery waits for Consume to set up its consumer and pulls: not a latency.
	warm := samples[0]
	warm.Step = math.MaxInt32
	trip(warm)

	lat := make([]time.Duration, 0, b.N*latencyMsgs)
	b.StartTimer()
	for i := range b.N {
		for _, s := range samples {
			// A new step per iteration keeps the message ids apart, or JetStream would drop a
			// later iteration's samples as duplicates.
			s.Step = int64(i)
			lat = append(lat, trip(s))
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(percentile(lat, 50).Nanoseconds())/1e3, "p50-us")
	b.ReportMetric(float64(percentile(lat, 99).Nanoseconds())/1e3, "p99-us")
	// All messages behind the percentiles, over every iteration.
	b.ReportMetric(float64(len(lat)), "msgs")
}

// fanout tracks which version each watcher has seen and tells the announcer when every watcher
// has seen the one it waits for.
type fanout struct {
	mu   sync.Mutex
	last []int64 // newest version each watcher has seen; -1 before any
	want int64
	left int
	done chan time.Time
}

func newFanout(n int) *fanout {
	f := &fanout{last: make([]int64, n), done: make(chan time.Time, 1)}
	for i := range f.last {
		f.last[i] = -1
	}
	return f
}

// expect arms the tracker for version v.
func (f *fanout) expect(v int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.want, f.left = v, 0
	for _, l := range f.last {
		if l < v {
			f.left++
		}
	}
}

// saw records watcher i seeing version v. An ordered consumer that recreates itself may deliver
// a version again, so a watcher counts once per awaited version.
func (f *fanout) saw(i int, v int64) {
	at := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if v <= f.last[i] {
		return
	}
	before := f.last[i]
	f.last[i] = v
	if before < f.want && v >= f.want && f.left > 0 {
		f.left--
		if f.left == 0 {
			f.done <- at
		}
	}
}

// BenchmarkPolicyFanout measures how long a learner's policy announcement takes to reach every
// rollout worker of a large pool, each watching on its own connection as separate processes do.
func BenchmarkPolicyFanout(b *testing.B) {
	b.StopTimer()
	const run = "fan"
	srv, js, _ := benchServer(b, run)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	f := newFanout(fanoutWatchers)
	var watchers sync.WaitGroup
	conns := make([]*nats.Conn, 0, fanoutWatchers)
	defer func() {
		cancel()
		watchers.Wait()
		for _, nc := range conns {
			nc.Close()
		}
	}()
	for i := range fanoutWatchers {
		cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
		nc, wjs, err := Connect(cctx, srv.URL(), ConnectOptions{Name: fmt.Sprintf("rollout-%d", i), Role: RoleRollout})
		ccancel()
		if err != nil {
			b.Fatalf("connect watcher %d: %v", i, err)
		}
		conns = append(conns, nc)
		watchers.Add(1)
		go func() {
			defer watchers.Done()
			err := WatchPolicy(ctx, wjs, run, func(p PolicyAnnounce) { f.saw(i, p.Version) }, nil)
			if err != nil {
				b.Errorf("watcher %d: %v", i, err)
			}
		}()
	}

	sum := sha256.Sum256([]byte("weights"))
	ann := PolicyAnnounce{Run: run, SHA256: hex.EncodeToString(sum[:]), Learner: "learner-0-1"}
	announce := func(v int64) time.Duration {
		ann.Version, ann.Step = v, v
		ann.WeightsKey = fmt.Sprintf("%s/weights/%012d.bin", run, v)
		f.expect(v)
		actx, acancel := context.WithTimeout(ctx, 30*time.Second)
		defer acancel()
		start := time.Now()
		if _, err := AnnouncePolicy(actx, js, ann); err != nil {
			b.Fatalf("announce version %d: %v", v, err)
		}
		select {
		case at := <-f.done:
			return at.Sub(start)
		case <-actx.Done():
			b.Fatalf("version %d did not reach all %d watchers: %v", v, fanoutWatchers, actx.Err())
			return 0
		}
	}
	// WatchPolicy has no ready signal: once every watcher has seen version 0, each one's
	// consumer exists and the timed versions measure delivery, not subscription.
	announce(0)

	lat := make([]time.Duration, 0, b.N*fanoutVersions)
	b.StartTimer()
	for i := range b.N {
		// Versions keep rising across iterations: a repeated version would be a duplicate
		// message id, and a watcher would not count it as news.
		for v := int64(i*fanoutVersions + 1); v <= int64((i+1)*fanoutVersions); v++ {
			lat = append(lat, announce(v))
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(percentile(lat, 50).Nanoseconds())/1e6, "p50-ms")
	b.ReportMetric(float64(percentile(lat, 99).Nanoseconds())/1e6, "p99-ms")
	b.ReportMetric(fanoutWatchers, "watchers")
}
