package learner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomlx/gomlx/backends"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/bus/bustest"
	"github.com/bicot-rl/bicot/pkg/ckpt"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/learner"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/runfiles"
	"github.com/bicot-rl/bicot/pkg/store"
	"github.com/bicot-rl/bicot/pkg/store/local"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/vq"
	"github.com/bicot-rl/bicot/pkg/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/gomlx/gomlx/backends/simplego.(*workersPool).lockedRunTaskInGoroutine.func1"),
		goleak.IgnoreCurrent())
}

func root(t *testing.T) string {
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		dir = filepath.Dir(dir)
	}
}

// env starts what a learner test needs: an embedded JetStream, the pure-Go backend, a store in a
// temporary directory.
func env(t *testing.T) (jetstream.JetStream, backends.Backend, *local.Store) {
	t.Helper()
	js := bustest.JetStream(t)
	backend, err := mlx.NewBackend("")
	if err != nil {
		t.Fatal(err)
	}
	st, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return js, backend, st
}

// tinyRun sets up a one-step run of 2 prompts x G 4 over a tiny untrained policy, which the
// learner tests feed by hand.
func tinyRun(t *testing.T, run string) (jetstream.JetStream, backends.Backend, *local.Store, *vq.Codebook, []byte, config.Config) {
	t.Helper()
	js, backend, st := env(t)
	cb, err := vq.Load(filepath.Join(root(t), "models/codebook.vq"))
	if err != nil {
		t.Fatal(err)
	}
	init, err := model.TinyCheckpoint(backend, cb, 3)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.RunID, cfg.Steps, cfg.PromptsPerStep, cfg.GroupSize = run, 1, 2, 4
	cfg.Sampling.MaxPlanTokens = 5
	return js, backend, st, cb, init, cfg
}

// TestLearnerDropsDuplicatesAndAnnounces feeds the learner scored samples by hand, some of them
// twice without a message id (a duplicate arriving after JetStream's de-duplication window): it
// trains exactly the P complete groups of G samples, counts the duplicates, announces version 1
// with weights in the store, writes metrics and a checkpoint, and a new learner resumes from it.
func TestLearnerDropsDuplicatesAndAnnounces(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := root(t)
	js, backend, st, cb, init, cfg := tinyRun(t, "lr1")
	cfg.Wire.PollWait = config.Duration(time.Second)
	deps := learner.Deps{JS: js, Backend: backend, Store: st, Init: init, Codebook: cb, Log: zerolog.Nop()}
	l, err := learner.New(ctx, deps, cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()

	ps, err := prompts.ReadFile(filepath.Join(r, "data/prompts/train.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	dups := publishStep(ctx, t, js, st, cfg, backend, ps[:2], true)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	a := l.Accounting()
	if a.Duplicates != dups {
		t.Errorf("duplicates dropped %d, want %d", a.Duplicates, dups)
	}
	if len(a.Learned[0]) != 2 {
		t.Fatalf("learned %+v, want 2 groups at step 0", a.Learned)
	}
	for _, g := range a.Learned[0] {
		if g.Samples != 4 || a.Received[bus.GroupKey{Step: 0, PromptIndex: g.PromptIndex}] != 4 {
			t.Errorf("group %d: %d samples trained, %d accepted; want 4 and 4", g.PromptIndex, g.Samples,
				a.Received[bus.GroupKey{Step: 0, PromptIndex: g.PromptIndex}])
		}
	}
	s0 := a.Stats[0]
	if d := s0.RatioMean - 1; d > 1e-5 || d < -1e-5 {
		t.Errorf("first on-policy update: ratio mean %v, want 1", s0.RatioMean)
	}
	v1, err := bus.LatestPolicy(ctx, js, cfg.RunID)
	if err != nil || v1.Version != 1 || v1.Step != 1 {
		t.Fatalf("announced %+v (%v), want version 1 for step 1", v1, err)
	}
	if _, err := ckpt.GetWeights(ctx, st, v1.WeightsKey, v1.SHA256); err != nil {
		t.Fatal(err)
	}
	// The metrics line names the trained groups: what a chaos run counts lost and doubled groups by.
	recs, err := runfiles.ReadMetrics(ctx, st, cfg.RunID)
	if err != nil || len(recs) != 1 {
		t.Fatalf("metrics: %d records, %v", len(recs), err)
	}
	mb := recs[0]
	var rec learner.StepRecord
	if err := json.Unmarshal(mb, &rec); err != nil {
		t.Fatalf("metrics line %s: %v", mb, err)
	}
	if !slices.EqualFunc(rec.Learned, a.Learned[0], func(x, y learner.LearnedGroup) bool {
		return x.PromptIndex == y.PromptIndex && x.Samples == y.Samples && slices.Equal(x.SampleIndices, y.SampleIndices)
	}) || len(rec.Learned) != 2 {
		t.Errorf("metrics line lists learned groups %+v, the learner trained %+v", rec.Learned, a.Learned[0])
	}
	checkKeptSamples(ctx, t, st, cfg, ps[:2])
	// A learner started again resumes after the checkpointed step.
	l2, err := learner.New(ctx, deps, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if l2.NextStep() != 1 || l2.Trainer().Version() != 1 {
		t.Errorf("resumed at step %d version %d, want 1 and 1", l2.NextStep(), l2.Trainer().Version())
	}
}

// checkKeptSamples checks the samples index and images the learner kept of the run's only step
// (the last step is always kept): P groups of G, each sample's rewards as published (publishStep:
// reward (i mod 3)/2, expert x (i mod 3)), advantages that are the group's standardised rewards,
// and a decodable 32x32 PNG per sample, nothing more.
func checkKeptSamples(ctx context.Context, t *testing.T, st *local.Store, cfg config.Config, ps []prompts.Prompt) {
	t.Helper()
	steps, err := runfiles.SampleSteps(ctx, st, cfg.RunID)
	if err != nil || !slices.Equal(steps, []int64{0}) {
		t.Fatalf("kept sample steps %v (%v), want [0]", steps, err)
	}
	idx, err := runfiles.ReadSamples(ctx, st, cfg.RunID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if idx.Run != cfg.RunID || idx.Step != 0 || idx.PolicyVersion != 0 || len(idx.Groups) != cfg.PromptsPerStep {
		t.Fatalf("samples index: run %s step %d version %d, %d groups; want %s 0 0 %d", idx.Run, idx.Step, idx.PolicyVersion,
			len(idx.Groups), cfg.RunID, cfg.PromptsPerStep)
	}
	i := 0
	for gi, g := range idx.Groups {
		if g.PromptIndex != 10+gi || g.Prompt != ps[gi].Prompt || g.TaskType != ps[gi].TaskType || len(g.Samples) != cfg.GroupSize {
			t.Fatalf("group %d: prompt %d %q (%s), %d samples; want %d %q (%s), %d", gi, g.PromptIndex, g.Prompt, g.TaskType,
				len(g.Samples), 10+gi, ps[gi].Prompt, ps[gi].TaskType, cfg.GroupSize)
		}
		var mean float64
		for _, s := range g.Samples {
			mean += s.Reward / float64(len(g.Samples))
		}
		var sum float64
		for si, s := range g.Samples {
			want := float64(i%3) / 2
			if s.SampleIndex != si || s.Reward != want || s.PerExpert["x"] != float64(i%3) || s.PolicyVersion != 0 {
				t.Errorf("group %d sample %d: %+v; want index %d reward %v expert x %v version 0", gi, si, s, si, want, float64(i%3))
			}
			// Standardised: the advantage has the sign of the reward's distance from the mean.
			if d := s.Reward - mean; (d > 1e-9 && s.Advantage <= 0) || (d < -1e-9 && s.Advantage >= 0) {
				t.Errorf("group %d sample %d: reward %v (mean %v), advantage %v", gi, si, s.Reward, mean, s.Advantage)
			}
			sum += s.Advantage
			if s.Image != fmt.Sprintf("p%d-s%d.png", g.PromptIndex, si) {
				t.Errorf("group %d sample %d: image %q", gi, si, s.Image)
			}
			b, err := runfiles.ReadImage(ctx, st, cfg.RunID, 0, s.Image)
			if err != nil {
				t.Fatal(err)
			}
			if c, err := png.DecodeConfig(bytes.NewReader(b)); err != nil || c.Width != 32 || c.Height != 32 {
				t.Errorf("%s: %dx%d (%v), want a 32x32 PNG", s.Image, c.Width, c.Height, err)
			}
			i++
		}
		if math.Abs(sum) > 1e-9 || g.Filtered {
			t.Errorf("group %d: advantages sum to %v (filtered %v), want 0 and trained", gi, sum, g.Filtered)
		}
	}
	files, err := st.List(ctx, runfiles.SamplesPrefix(cfg.RunID))
	if err != nil {
		t.Fatal(err)
	}
	if want := cfg.PromptsPerStep*cfg.GroupSize + 1; len(files) != want {
		t.Errorf("%d files kept under samples/, want P*G images + the index = %d", len(files), want)
	}
}

// publishStep samples G of each prompt with the announced version-0 policy and publishes them as
// step 0's scored samples (rewards 0, 0.5, 1 in turn), as the reward workers would. With dups,
// two of them go out twice without a message id (past JetStream's de-duplication); it returns how
// many.
func publishStep(ctx context.Context, t *testing.T, js jetstream.JetStream, st *local.Store, cfg config.Config,
	backend backends.Backend, ps []prompts.Prompt, dups bool) int {
	return publishStepWith(ctx, t, js, st, cfg, backend, ps, dups, nil)
}

// publishStepWith is publishStep; before each honest sample it publishes, without a message id,
// whatever before returns for it (hostile variants).
func publishStepWith(ctx context.Context, t *testing.T, js jetstream.JetStream, st *local.Store, cfg config.Config,
	backend backends.Backend, ps []prompts.Prompt, dups bool, before func(i int, honest bus.ScoredSample) []bus.ScoredSample) int {
	t.Helper()
	var v0 bus.PolicyAnnounce
	var err error
	for {
		if v0, err = bus.LatestPolicy(ctx, js, cfg.RunID); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	w, err := ckpt.GetWeights(ctx, st, v0.WeightsKey, v0.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	policy, err := model.Load(backend, w)
	if err != nil {
		t.Fatal(err)
	}
	vocab := tokenizer.New()
	var enc [][]int32
	var ids []uint64
	for i, p := range ps {
		e, err := wire.EncodePrompt(vocab, p.Prompt)
		if err != nil {
			t.Fatal(err)
		}
		enc, ids = append(enc, e), append(ids, uint64(10+i))
	}
	g := cfg.GroupSize
	ss, err := policy.Sample(model.SampleRequest{Prompts: enc, PromptIDs: ids, G: g, Seed: cfg.Seed,
		Temperature: cfg.Sampling.Temperature, CFGWeight: cfg.Sampling.CFGWeight, MaxPlanTokens: cfg.Sampling.MaxPlanTokens,
		ConditionalLogp: cfg.Sampling.ImageLogp == config.ImageLogpConditional})
	if err != nil {
		t.Fatal(err)
	}
	subject := bus.Subject(cfg.RunID, bus.KindScored)
	n := 0
	for i, s := range ss {
		out := bus.ScoredSample{Sample: bus.Sample{V: bus.SchemaVersion, Run: cfg.RunID, Step: 0, PromptIndex: 10 + s.Prompt,
			SampleIndex: s.Index, G: g, PolicyVersion: 0, Prompt: ps[s.Prompt]}, Reward: float64(i%3) / 2,
			PerExpert: map[string]float64{"x": float64(i % 3)}}
		if err := wire.FromSample(policy.Config, s, &out.Sample); err != nil {
			t.Fatal(err)
		}
		if before != nil {
			for _, h := range before(i, out) {
				publishRaw(ctx, t, js, subject, &h)
			}
		}
		if _, err := bus.PublishScored(ctx, js, out); err != nil {
			t.Fatal(err)
		}
		if dups && (i == 1 || i == 5) {
			// The same sample again, bypassing JetStream's de-duplication (no message id).
			publishRaw(ctx, t, js, subject, &out)
			n++
		}
	}
	return n
}

// The distributed learner adds the supervised anchor (grpo.sft_coef) from the run's
// pretrain_prompts: the update's stats carry its loss. Held-out prompts as pretrain_prompts are
// refused when the learner is built, by name, not at the first step.
func TestLearnerWithSupervisedAnchor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := root(t)
	js, backend, st := env(t)
	init, err := os.ReadFile(filepath.Join(r, "models/base.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.RunID, cfg.Steps, cfg.PromptsPerStep, cfg.GroupSize = "sft1", 1, 2, 4
	cfg.Sampling.MaxPlanTokens = 12
	cfg.Codebook = filepath.Join(r, "models/codebook.vq")
	cfg.GRPO.SFTCoef = 1
	cfg.Wire.PollWait = config.Duration(time.Second)
	deps := learner.Deps{JS: js, Backend: backend, Store: st, Init: init, Log: zerolog.Nop()}

	bad := cfg
	bad.PretrainPrompts = filepath.Join(r, "data/prompts/eval.jsonl")
	if _, err := learner.New(ctx, deps, bad); err == nil || !strings.Contains(err.Error(), "eval.jsonl") {
		t.Fatalf("held-out pretrain prompts: %v", err)
	}
	bad.PretrainPrompts = ""
	if _, err := learner.New(ctx, deps, bad); err == nil || !strings.Contains(err.Error(), "pretrain_prompts") {
		t.Fatalf("no pretrain prompts: %v", err)
	}

	cfg.PretrainPrompts = filepath.Join(r, "data/prompts/train.jsonl")
	l, err := learner.New(ctx, deps, cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	ps, err := prompts.ReadFile(filepath.Join(r, "data/prompts/rl.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	publishStep(ctx, t, js, st, cfg, backend, ps[:2], false)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	a := l.Accounting()
	if len(a.Stats) != 1 {
		t.Fatalf("%d steps trained, want 1", len(a.Stats))
	}
	// The base policy's pretraining NLL per token is well above 0 and finite.
	if s := a.Stats[0].SFTLoss; !(s > 0.01 && s < 20) {
		t.Fatalf("sft_loss %v, want the anchor's NLL", s)
	}
}

// publishRaw publishes a scored sample without a message id, as anyone on the bus could.
func publishRaw(ctx context.Context, t *testing.T, js jetstream.JetStream, subject string, s *bus.ScoredSample) {
	t.Helper()
	data, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{bus.HeaderType: []string{bus.TypeScoredSample}}}
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
}

// Scored samples that pass the schema but would wreck an update - a reward near the float
// maximum, a logp_old far below any sampled token's, the wrong number of image tokens, another
// prompt's text under a group's key - arrive before the honest samples with the same keys: each
// is dead-lettered with a reason, none joins a group, and the learner trains the honest groups
// and finishes the run.
func TestLearnerSurvivesHostileScoredSamples(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := root(t)
	js, backend, st, _, init, cfg := tinyRun(t, "hostile")
	cfg.Wire.PollWait, cfg.Wire.RetryDelay = config.Duration(time.Second), config.Duration(10*time.Millisecond)
	l, err := learner.New(ctx, learner.Deps{JS: js, Backend: backend, Store: st, Init: init, Log: zerolog.Nop()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	ps, err := prompts.ReadFile(filepath.Join(r, "data/prompts/train.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	other := ps[5].Prompt
	want := map[int]string{0: "reward", 1: "log-prob", 2: "image tokens", 3: "prompt", 4: "steps ahead"}
	topo, err := bus.NewTopology(cfg.RunID)
	if err != nil {
		t.Fatal(err)
	}
	// waitDead waits until n dead letters are in: the learner reads with two fetchers, so a
	// hostile sample published first is not always handled first - the honest sample after it
	// waits for its verdict (otherwise the honest one can complete the group and the hostile
	// one is then a mere duplicate of a learned group).
	waitDead := func(n int) {
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		defer wcancel()
		for dead := readDead(ctx, t, js, topo.DeadStream); len(dead) < n; dead = readDead(ctx, t, js, topo.DeadStream) {
			if wctx.Err() != nil {
				t.Fatalf("after a minute %d dead letters %v, want %d", len(dead), dead, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	subject := bus.Subject(cfg.RunID, bus.KindScored)
	last := 2*cfg.GroupSize - 1
	publishStepWith(ctx, t, js, st, cfg, backend, ps[:2], false, func(i int, h bus.ScoredSample) []bus.ScoredSample {
		if i == last {
			// The far-ahead sample is dead-lettered only after its last retry: the step's
			// last honest sample waits for it, so the run cannot end while it is still
			// being retried (a finished learner no longer reads the queue).
			waitDead(len(want))
		}
		if _, ok := want[i]; !ok {
			return nil
		}
		b, _ := json.Marshal(h)
		var x bus.ScoredSample
		_ = json.Unmarshal(b, &x) // a deep copy
		switch i {
		case 0:
			x.Reward = 1e300
		case 1:
			x.ImageLogp[0] = -1e30
		case 2:
			x.ImageTokens, x.ImageLogp = x.ImageTokens[1:], x.ImageLogp[1:]
		case 3:
			x.Prompt.Prompt = other
		case 4:
			// Far beyond any step the coordinator can hand out: retried, then dead-lettered,
			// never held.
			x.Step = 1000
		}
		publishRaw(ctx, t, js, subject, &x)
		if i < 4 {
			waitDead(i + 1)
		}
		return nil
	})
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("learner: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the run did not finish")
	}
	a := l.Accounting()
	if len(a.Learned[0]) != 2 || !finite(a.Stats[0].Loss) || !finite(a.Stats[0].RewardMean) || a.Stats[0].RewardMean > 1 {
		t.Fatalf("learned %+v stats %+v: want the two honest groups, finite", a.Learned, a.Stats)
	}
	dead := readDead(ctx, t, js, topo.DeadStream)
	if len(dead) != len(want) {
		t.Fatalf("%d dead letters %v, want %d", len(dead), dead, len(want))
	}
	for i, w := range want {
		found := false
		for _, d := range dead {
			found = found || strings.Contains(d, w)
		}
		if !found {
			t.Errorf("hostile sample %d: no dead letter naming %q in %v", i, w, dead)
		}
	}
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// readDead returns the error of every dead letter in stream.
func readDead(ctx context.Context, t *testing.T, js jetstream.JetStream, stream string) []string {
	t.Helper()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		raw, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		var d bus.DeadLetter
		if err := json.Unmarshal(raw.Data, &d); err != nil {
			t.Fatal(err)
		}
		out = append(out, d.Error)
	}
	return out
}

// orderStore records the keys written to a real store, in order.
type orderStore struct {
	store.Store
	mu   sync.Mutex
	puts []string
}

func (s *orderStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := s.Store.Put(ctx, key, r, size); err != nil {
		return err
	}
	s.mu.Lock()
	s.puts = append(s.puts, key)
	s.mu.Unlock()
	return nil
}

// A version is announced (its weights written for rollout workers) only after the checkpoint that
// holds it is committed: a worker never samples with a version a restarted learner cannot resume.
func TestAnnouncedAfterCheckpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := root(t)
	js, backend, st, _, init, cfg := tinyRun(t, "order")
	cfg.Wire.PollWait = config.Duration(time.Second)
	rec := &orderStore{Store: st}
	l, err := learner.New(ctx, learner.Deps{JS: js, Backend: backend, Store: rec, Init: init, Log: zerolog.Nop()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	ps, err := prompts.ReadFile(filepath.Join(r, "data/prompts/train.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	publishStep(ctx, t, js, st, cfg, backend, ps[:2], false)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	manifest, weights := slices.Index(rec.puts, ckpt.Dir(cfg.RunID, 0)+ckpt.ManifestName), slices.Index(rec.puts, ckpt.WeightsKey(cfg.RunID, 1))
	if manifest < 0 || weights < 0 || weights < manifest {
		t.Fatalf("writes %v: want the step-0 checkpoint's manifest before version 1's weights", rec.puts)
	}
}
