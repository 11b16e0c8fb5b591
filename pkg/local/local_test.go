package local

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gomlx/gomlx/backends"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/coordinator"
	"github.com/bicot-rl/bicot/pkg/learner"
	"github.com/bicot-rl/bicot/pkg/local/localtest"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/rolloutworker"
	"github.com/bicot-rl/bicot/pkg/runfiles"
	storelocal "github.com/bicot-rl/bicot/pkg/store/local"
	"github.com/bicot-rl/bicot/pkg/vq"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// An apply raft accepted just before it shut down is never answered (runstate.Node.await).
		goleak.IgnoreAnyFunction("github.com/bicot-rl/bicot/pkg/runstate.(*Node).await.func1"),
		// gomlx's pure-Go backend keeps worker goroutines for the life of the process.
		goleak.IgnoreAnyFunction("github.com/gomlx/gomlx/backends/simplego.(*workersPool).lockedRunTaskInGoroutine.func1"),
		goleak.IgnoreTopFunction("github.com/gomlx/gomlx/backends/simplego.(*workersPool).lockedRunTaskInGoroutine.func1"),
		goleak.IgnoreCurrent())
}

// env is what every pipeline test shares: one backend, the codebook, a tiny policy and briefly
// trained experts (real models, small).
type env struct {
	backend backends.Backend
	cb      *vq.Codebook
	policy  []byte
	ens     *reward.Ensemble
}

// sharedEnv is built once for this test binary.
var sharedEnv localtest.Shared

func testEnv(t testing.TB) env {
	t.Helper()
	e := sharedEnv.Get(t)
	return env{backend: e.Backend, cb: e.Codebook, policy: e.Policy, ens: e.Ensemble}
}

func repoRoot(t testing.TB) string { return localtest.RepoRoot(t) }

func testConfig(t testing.TB, steps int) config.Config { return localtest.Config(t, steps) }

func start(t *testing.T, c config.Config, rollouts int) *Cluster {
	t.Helper()
	return startWith(t, c, rollouts, nil)
}

// startWith starts a cluster like start, with the rollout workers' sampling replaced by sample
// when it is not nil.
func startWith(t *testing.T, c config.Config, rollouts int, sample rolloutworker.Sampler) *Cluster {
	t.Helper()
	e := testEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	cl, err := Start(ctx, Options{Config: c, RolloutWorkers: rollouts, RewardWorkers: 1, Out: t.TempDir(),
		Backend: e.backend, Ensemble: e.ens, InitPolicy: e.policy, SkipEval: true, Sample: sample, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	return cl
}

func wait(t *testing.T, cl *Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := cl.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

func checkLearned(t *testing.T, c config.Config, a learner.Accounting) {
	localtest.CheckLearned(t, c, a)
}

// TestPipelineLearnsCompleteGroupsOnce runs coordinator, one rollout worker, one reward worker and
// the learner over embedded NATS for K steps while a duplicate of a step's task is published (as
// a redelivery or re-dispatch would): every step learns exactly P complete groups of G samples,
// each sample once, on-policy updates have ratio 1, and the run's outputs and status API exist.
func TestPipelineLearnsCompleteGroupsOnce(t *testing.T) {
	c := testConfig(t, 3)
	cl := start(t, c, 1)

	// The coordinator's first task of step 0, published again with another attempt number (so
	// JetStream does not drop it): the rollout worker samples it twice.
	js, err := cl.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	dup := bus.BatchTask{Run: cl.Config().RunID, Step: 0, PolicyVersion: 0, G: c.GroupSize, Seed: c.Seed,
		Sampling: bus.SamplingFrom(c.Sampling), Attempt: 7}
	for i := range c.PromptsPerTask {
		dup.Prompts = append(dup.Prompts, bus.PromptRef{Index: i, Prompt: cl.Coordinator.PromptAt(0, int64(i))})
	}
	if _, err := bus.PublishTask(context.Background(), js, dup); err != nil {
		t.Fatal(err)
	}

	// The status API answers while the run goes on.
	addr := cl.Coordinator.Addr()
	for _, path := range []string{"/healthz", "/metrics", "/v1/status"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
		}
		switch path {
		case "/metrics":
			if !strings.Contains(string(body), "bicot_queue_pending") || !strings.Contains(string(body), "bicot_policy_version") {
				t.Errorf("/metrics lacks queue depth or policy version:\n%s", body)
			}
		case "/v1/status":
			var st coordinator.Status
			if err := json.Unmarshal(body, &st); err != nil {
				t.Fatalf("/v1/status: %v\n%s", err, body)
			}
			if st.Run != c.RunID || st.Steps != c.Steps || len(st.Queues) != 4 {
				t.Errorf("/v1/status: %+v", st)
			}
		}
	}

	wait(t, cl)
	res := cl.Result()
	checkLearned(t, c, res.Accounting)
	tasks := res.Rollout[0].Tasks
	if want := int64(c.Steps*c.TasksPerStep() + 1); tasks != want {
		t.Errorf("rollout worker ran %d tasks, want %d (every task once plus the duplicate)", tasks, want)
	}
	first := res.Accounting.Stats[0]
	// Strictly on-policy, one update per batch: the learner's ratio is 1 (up to float rounding of
	// the recorded log-probs).
	if d := first.RatioMean - 1; d > 1e-5 || d < -1e-5 || first.RatioMin < 1-1e-5 || first.RatioMax > 1+1e-5 {
		t.Errorf("first update ratio mean %v min %v max %v, want 1", first.RatioMean, first.RatioMin, first.RatioMax)
	}
	if first.MaxStaleness != 0 {
		t.Errorf("first update trained samples %d versions old", first.MaxStaleness)
	}
	if !res.Status.Done || res.Status.PolicyVersion != int64(c.Steps) || res.Status.GroupsInFlight != 0 {
		t.Errorf("coordinator status at the end: done %v version %d groups in flight %d", res.Status.Done, res.Status.PolicyVersion, res.Status.GroupsInFlight)
	}
	if len(res.Status.Checkpoints) == 0 {
		t.Errorf("no checkpoint recorded in the run state")
	}
	dir := cl.Dir()
	for _, p := range []string{"metrics/000000000000.jsonl", "config.yaml", "checkpoints/000000000002/MANIFEST.json", "checkpoints/000000000002/cursor", "checkpoints/000000000002/runstate", "weights/000000000003.bin",
		"samples/step-000000000000/index.json", "samples/step-000000000002/index.json", "samples/step-000000000002/p6-s0.png"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("run output: %v", err)
		}
	}
	// samples_every 10 over 3 steps: the first and the last step's samples are kept, not step 1's.
	if _, err := os.Stat(filepath.Join(dir, "samples/step-000000000001")); !os.IsNotExist(err) {
		t.Errorf("step 1's samples: %v, want none kept", err)
	}
	mst, err := storelocal.New(filepath.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	if recs, err := runfiles.ReadMetrics(context.Background(), mst, filepath.Base(dir)); err != nil || len(recs) != c.Steps {
		t.Errorf("the run's metrics: %d lines (%v), want %d", len(recs), err, c.Steps)
	}

	// Every role's series, on the one endpoint laptop mode serves.
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{fmt.Sprintf(`bicot_rollout_samples_total{worker="rollout-0"} %d`, res.Rollout[0].Samples),
		fmt.Sprintf(`bicot_reward_samples_total{worker="reward-0"} %d`, res.Scored[0]),
		`bicot_reward_per_expert_bucket{expert="detector"`, `bicot_reward_expert_batch_seconds_count{expert="vqa"`,
		`bicot_learner_steps_total{worker="learner"} 3`, `bicot_learner_seconds_total{phase="train"`, `bicot_learner_step_stat{stat="kl"`,
		`bicot_learner_checkpoint_bytes_total`, "bicot_queue_pending", "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestRolloutWorkerJoinsMidRun starts a second rollout worker after step 1 is learned: it takes
// tasks of the running run without anything being restarted.
func TestRolloutWorkerJoinsMidRun(t *testing.T) {
	if testing.Short() {
		t.Skip("a full pipeline run; skipped with -short")
	}
	c := testConfig(t, 4)
	c.PromptsPerStep, c.PromptsPerTask = 4, 1
	cl := start(t, c, 1)
	deadline := time.Now().Add(3 * time.Minute)
	for cl.Learner.NextStep() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("step 0 not learned in time")
		}
		time.Sleep(50 * time.Millisecond)
	}
	late, err := cl.AddRolloutWorker()
	if err != nil {
		t.Fatal(err)
	}
	wait(t, cl)
	checkLearned(t, c, cl.Result().Accounting)
	st := late.Stats()
	if st.Tasks == 0 {
		t.Fatalf("the worker started after step 1 ran no task")
	}
	for _, s := range st.Steps {
		if s < 1 {
			t.Errorf("late worker sampled step %d, before it started", s)
		}
	}
	t.Logf("late worker: %d tasks of steps %v", st.Tasks, st.Steps)
}

// TestRedispatchedGroupsLearnedOnce sets the re-dispatch timeout below the time a task takes to
// sample (each task's sampling is held back well past it, so a fast machine cannot finish a
// step first), so the coordinator hands groups out again while their first samples are still on
// the way: the re-dispatched tasks reproduce the same samples, and every step still learns
// exactly P groups of G samples, each once.
func TestRedispatchedGroupsLearnedOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("a full pipeline run; skipped with -short")
	}
	c := testConfig(t, 2)
	c.RedispatchAfter = config.Duration(150 * time.Millisecond)
	slow := func(m *model.Model, req model.SampleRequest) ([]model.Sample, error) {
		time.Sleep(4 * c.RedispatchAfter.D())
		return m.Sample(req)
	}
	cl := startWith(t, c, 1, slow)
	wait(t, cl)
	res := cl.Result()
	checkLearned(t, c, res.Accounting)
	if res.Status.Redispatched == 0 {
		t.Fatal("no group was re-dispatched; the test did not exercise re-dispatch")
	}
	t.Logf("%d groups re-dispatched, %d rollout tasks, %d duplicates and %d late samples dropped by the learner",
		res.Status.Redispatched, res.Rollout[0].Tasks, res.Accounting.Duplicates, res.Accounting.Late)
}

// TestStalenessOneOverlapsSteps lets rollout run one version ahead of learning (staleness 1):
// step s+1 is dispatched while step s trains, its samples are at most one version old, and every
// step still learns P complete groups.
func TestStalenessOneOverlapsSteps(t *testing.T) {
	if testing.Short() {
		t.Skip("a full pipeline run; skipped with -short")
	}
	c := testConfig(t, 3)
	c.Staleness = 1
	cl := start(t, c, 1)
	wait(t, cl)
	res := cl.Result()
	checkLearned(t, c, res.Accounting)
	var maxStale int64
	for _, st := range res.Accounting.Stats {
		maxStale = max(maxStale, st.MaxStaleness)
	}
	if maxStale > 1 {
		t.Errorf("trained samples %d versions old, bound 1", maxStale)
	}
	if res.Accounting.StaleGroups != 0 {
		t.Errorf("%d groups outside the bound", res.Accounting.StaleGroups)
	}
	t.Logf("largest staleness trained: %d", maxStale)
}

// TestRunEvaluatesInitialAndFinal runs one step through Run and checks the oracle evaluation of
// the initial and final policies: every task type of the eval file is scored and eval.json is
// written next to the run.
func TestRunEvaluatesInitialAndFinal(t *testing.T) {
	e := testEnv(t)
	c := testConfig(t, 1)
	c.Eval = config.Eval{Prompts: filepath.Join(repoRoot(t), "data/prompts/eval.jsonl"), LimitPerType: 1, G: 1}
	var progress strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Run(ctx, Options{Config: c, RolloutWorkers: 1, RewardWorkers: 1, Out: t.TempDir(), Progress: &progress,
		Backend: e.backend, Ensemble: e.ens, InitPolicy: e.policy, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Eval == nil || res.InitialEval == nil {
		t.Fatal("no evaluation")
	}
	if len(res.Eval.TaskTypes) != 9 || res.Eval.N != 9 || res.InitialEval.N != 9 {
		t.Errorf("eval: %d task types, %d and %d samples; want 9, 9, 9", len(res.Eval.TaskTypes), res.Eval.N, res.InitialEval.N)
	}
	for _, want := range []string{"step 1/1", "task type", "initial", "final", "knowledge", "mean"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress output lacks %q:\n%s", want, progress.String())
		}
	}
	if _, err := os.Stat(filepath.Join(res.Dir, "eval.json")); err != nil {
		t.Error(err)
	}
}

// BenchmarkPipeline measures throughput of the whole pipeline (tiny policy, brief experts) with
// one and two rollout workers: samples per second and steps per minute.
//
//	go test -run XXX -bench Pipeline -benchtime 1x ./pkg/laptop
func BenchmarkPipeline(b *testing.B) {
	for _, n := range []int{1, 2} {
		b.Run("rollouts="+string(rune('0'+n)), func(b *testing.B) {
			e := testEnv(b)
			var samples, steps int
			var elapsed time.Duration
			for b.Loop() {
				c := testConfig(b, 4)
				c.RunID = "bench" + string(rune('0'+n))
				c.PromptsPerStep, c.PromptsPerTask, c.GroupSize = 4, 1, 8
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				t0 := time.Now()
				res, err := Run(ctx, Options{Config: c, RolloutWorkers: n, RewardWorkers: 1, Out: b.TempDir(),
					Backend: e.backend, Ensemble: e.ens, InitPolicy: e.policy, SkipEval: true, Log: zerolog.Nop()})
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				elapsed += time.Since(t0)
				steps += int(res.Steps)
				samples += int(res.Steps) * c.PromptsPerStep * c.GroupSize
			}
			b.ReportMetric(float64(samples)/elapsed.Seconds(), "samples/s")
			b.ReportMetric(float64(steps)/elapsed.Minutes(), "steps/min")
			b.ReportMetric(float64(runtime.NumCPU()), "cpus")
		})
	}
}

// TestEnsembleFromExpertConfig builds the ensemble from a pkg/experts YAML file naming the shipped
// expert weights, and refuses a broken one.
func TestEnsembleFromExpertConfig(t *testing.T) {
	root := repoRoot(t)
	if _, err := os.Stat(filepath.Join(root, "models/experts/detector.safetensors")); err != nil {
		t.Skip("no shipped expert weights")
	}
	e := testEnv(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "experts.yaml")
	if err := os.WriteFile(good, []byte("models: "+filepath.Join(root, "models/experts")+"\ntimeout: 30s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	c.ExpertConfig = good
	ens, err := ensemble(context.Background(), e.backend, c, nil, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if len(ens.Experts()) != 4 {
		t.Errorf("experts %v, want the four built-in ones", ens.Experts())
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("experts: {detector: {url: \"not a url\"}}\nmodels: /nowhere\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.ExpertConfig = bad
	if _, err := ensemble(context.Background(), e.backend, c, nil, zerolog.Nop()); err == nil {
		t.Error("a broken expert config was accepted")
	}
}

// Only the newest retention.keep_weights versions' weights stay in <run>/weights/: the directory
// does not grow with the run (every version's weights stayed before).
func TestOldWeightsAreDropped(t *testing.T) {
	c := testConfig(t, 5)
	c.Retention.KeepWeights = 2
	cl := start(t, c, 1)
	wait(t, cl)
	ents, err := os.ReadDir(filepath.Join(cl.Dir(), "weights"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{"000000000004.bin", "000000000005.bin"}; !slices.Equal(names, want) {
		t.Errorf("weights/ holds %v, want %v", names, want)
	}
}

// Expert URLs with credentials (basic auth) are used but never recorded or served: not in
// config.yaml, the checkpoints, the raft log and snapshots, or the status API's run state.
func TestExpertCredentialsAreNotRecorded(t *testing.T) {
	const secret = "s3cr3t-pw-42"
	c := testConfig(t, 2)
	c.ExpertURLs = map[string]string{"hps": "http://alice:" + secret + "@127.0.0.1:9/score"}
	cl := start(t, c, 1)
	wait(t, cl)
	resp, err := http.Get("http://" + cl.Coordinator.Addr() + "/v1/runstate")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), "redacted@127.0.0.1:9") || strings.Contains(string(body), secret) {
		t.Errorf("GET /v1/runstate: want the expert URL redacted, got %.300s", body)
	}
	cl.Stop()
	err = filepath.WalkDir(cl.Dir(), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), secret) {
			t.Errorf("%s holds the expert password", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A run interrupted while it starts (Ctrl-C during start-up) fails with an error and stops what
// it had started; it used to stop a nil cluster and panic.
func TestStartInterruptedStopsCleanly(t *testing.T) {
	e := testEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cl, err := Start(ctx, Options{Config: testConfig(t, 3), RolloutWorkers: 1, RewardWorkers: 1, Out: t.TempDir(),
		Backend: e.backend, Ensemble: e.ens, InitPolicy: e.policy, SkipEval: true, Log: zerolog.Nop()})
	if err == nil {
		cl.Stop()
		t.Fatal("a run started under a cancelled context")
	}
}

// TestDashboardQueriesExportedSeries: every series the Grafana dashboard (deploy/grafana) queries
// is one that laptop mode's registry, which holds every role's, describes.
func TestDashboardQueriesExportedSeries(t *testing.T) {
	c := testConfig(t, 1)
	cl := start(t, c, 1)
	wait(t, cl)
	have := map[string]bool{}
	ch := make(chan *prometheus.Desc, 1024)
	go func() { cl.metrics.Describe(ch); close(ch) }()
	name := regexp.MustCompile(`fqName: "([a-z_:]+)"`)
	for d := range ch {
		if m := name.FindStringSubmatch(d.String()); m != nil {
			have[m[1]] = true
		}
	}
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "bicot.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	series := regexp.MustCompile(`\b((?:bicot|go|process)_[a-z_]+)`)
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range series.FindAllStringSubmatch(tg.Expr, -1) {
				s := m[1]
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if base, ok := strings.CutSuffix(s, suffix); ok && have[base] {
						s = base
					}
				}
				n++
				if !have[s] {
					t.Errorf("panel %q queries %s, which no role exports", p.Title, m[1])
				}
			}
		}
	}
	if n < 20 {
		t.Errorf("only %d series found in the dashboard's queries", n)
	}
}

// A laptop run on a checkout without a trained policy falls back to a fresh one, which has no
// cell words: it samples plans without exclusive cells instead of failing in the trainer. The
// shipped base has cell words and keeps the setting.
func TestPlainPlansWithoutCellWords(t *testing.T) {
	e := testEnv(t)
	c := testConfig(t, 1)
	c.Sampling.ExclusiveCells = true
	changed, err := plainPlansWithout(&c, e.policy, zerolog.Nop())
	if err != nil || !changed || c.Sampling.ExclusiveCells {
		t.Errorf("a policy without cell words: changed %v, exclusive cells %v, err %v; want it turned off", changed, c.Sampling.ExclusiveCells, err)
	}
	base, err := os.ReadFile(filepath.Join(repoRoot(t), "models", "base.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	c.Sampling.ExclusiveCells = true
	if changed, err := plainPlansWithout(&c, base, zerolog.Nop()); err != nil || changed || !c.Sampling.ExclusiveCells {
		t.Errorf("the shipped base: changed %v, exclusive cells %v, err %v; want it kept", changed, c.Sampling.ExclusiveCells, err)
	}
	if _, err := plainPlansWithout(&c, []byte("not a checkpoint"), zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "initial policy") {
		t.Errorf("a damaged policy: %v, want an error naming the initial policy", err)
	}
}
