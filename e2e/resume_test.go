package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bicot-rl/bicot/pkg/local"
	"github.com/bicot-rl/bicot/pkg/local/localtest"
	"github.com/bicot-rl/bicot/pkg/runfiles"
	"github.com/bicot-rl/bicot/pkg/startup"

	"github.com/minio/minio-go/v7"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/ckpt"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/coordinator"
	"github.com/bicot-rl/bicot/pkg/runstate"
	"github.com/bicot-rl/bicot/pkg/store"
	"github.com/bicot-rl/bicot/pkg/store/s3/s3test"
)

// syncBuffer is a log sink tests read while roles write to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// outcome is what two runs must agree on bit for bit: the final weights object and the
// deterministic fields of every metrics line.
type outcome struct {
	weightsSHA string
	lines      []string
}

// deterministic keeps the fields of a metrics.jsonl line that do not depend on timing.
func deterministic(t *testing.T, line []byte) string {
	t.Helper()
	var r struct {
		Step          int64 `json:"step"`
		PolicyVersion int64 `json:"policy_version"`
		Stats         map[string]any
		PerExpert     map[string]float64 `json:"per_expert"`
		Groups        int                `json:"groups"`
		Samples       int                `json:"samples"`
	}
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("metrics line %s: %v", line, err)
	}
	for _, k := range []string{"seconds", "ref_seconds", "update_seconds"} {
		delete(r.Stats, k)
	}
	b, _ := json.Marshal(r)
	return string(b)
}

func readOutcome(t *testing.T, st store.Store, run string, version int64) outcome {
	t.Helper()
	ctx := context.Background()
	rc, err := st.Get(ctx, ckpt.WeightsKey(run, version))
	if err != nil {
		t.Fatalf("final weights: %v", err)
	}
	h := sha256.New()
	_, err = io.Copy(h, rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	recs, err := runfiles.ReadMetrics(ctx, st, run)
	if err != nil {
		t.Fatal(err)
	}
	o := outcome{weightsSHA: hex.EncodeToString(h.Sum(nil))}
	for _, line := range recs {
		o.lines = append(o.lines, deterministic(t, line))
	}
	return o
}

func sameOutcome(t *testing.T, name string, want, got outcome) {
	t.Helper()
	if got.weightsSHA != want.weightsSHA {
		t.Errorf("%s: final weights sha256 %s, uninterrupted run %s", name, got.weightsSHA, want.weightsSHA)
	}
	if len(got.lines) != len(want.lines) {
		t.Fatalf("%s: %d metrics lines, uninterrupted run %d", name, len(got.lines), len(want.lines))
	}
	for i := range want.lines {
		if got.lines[i] != want.lines[i] {
			t.Errorf("%s: metrics line %d differs:\nresumed       %s\nuninterrupted %s", name, i, got.lines[i], want.lines[i])
		}
	}
}

func resumeConfig(t *testing.T, steps int) config.Config {
	c := localtest.Config(t, steps)
	c.RunID = "resume"
	c.CheckpointEvery = 1
	c.Retention = config.Retention{KeepLast: 5}
	return c
}

// killAfter starts a run and stops it abruptly (every role cancelled, no final checkpoint) once
// the learner has finished `after` steps.
func killAfter(t *testing.T, c config.Config, out string, workers, after int) {
	t.Helper()
	e := sharedEnv.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cl, err := local.Start(ctx, local.Options{Config: c, RolloutWorkers: workers, RewardWorkers: workers, Out: out,
		Backend: e.Backend, Ensemble: e.Ensemble, InitPolicy: e.Policy, SkipEval: true, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	for cl.Learner.NextStep() < int64(after) {
		if ctx.Err() != nil {
			cl.Stop()
			t.Fatalf("step %d not reached in time", after)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cl.Stop()
}

// resume continues the run in out from its newest good checkpoint the way `coordinator resume
// --local` does: the run state stored with the checkpoint seeds a fresh raft directory.
func resume(t *testing.T, c config.Config, out string, workers int, log zerolog.Logger) (local.Result, coordinator.Resume) {
	t.Helper()
	e := sharedEnv.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	st, closeStore, err := startup.OpenStore(ctx, c.Store, log)
	if err != nil {
		t.Fatal(err)
	}
	r, err := coordinator.LoadResume(ctx, st, c.RunID, log)
	closeStore()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(out, c.RunID, "raft")
	if _, err := coordinator.MoveAside(dir); err != nil {
		t.Fatal(err)
	}
	if err := coordinator.SeedRaft(dir, []runstate.Peer{{ID: "coordinator-0", RaftAddr: "127.0.0.1:0"}}, r.State); err != nil {
		t.Fatal(err)
	}
	res, err := local.Run(ctx, local.Options{Config: c, RolloutWorkers: workers, RewardWorkers: workers, Out: out,
		Backend: e.Backend, Ensemble: e.Ensemble, InitPolicy: e.Policy, SkipEval: true, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	checkResumed(t, c, r, res)
	return res, r
}

// checkResumed: the resumed run learned exactly the steps after its checkpoint, each once, and
// the replicated state ends at the last step with nothing in flight.
func checkResumed(t *testing.T, c config.Config, r coordinator.Resume, res local.Result) {
	t.Helper()
	for step := range int64(c.Steps) {
		_, learned := res.Accounting.Learned[step]
		if want := step > r.Manifest.Step; learned != want {
			t.Errorf("resumed from step %d: step %d learned %v, want %v", r.Manifest.Step, step, learned, want)
		}
	}
	if !res.Status.Done || res.Status.Step != int64(c.Steps) || res.Status.PolicyVersion != int64(c.Steps) || res.Status.GroupsInFlight != 0 {
		t.Errorf("run state after resume: step %d version %d done %v groups in flight %d", res.Status.Step, res.Status.PolicyVersion,
			res.Status.Done, res.Status.GroupsInFlight)
	}
}

// TestResumeIsExact runs 4 steps uninterrupted (1 rollout, 1 reward worker), and then the same
// run killed after 2 steps and resumed for the rest with other worker counts: the final weights
// are byte-equal (sha256 of the final weights object) and every metrics line's deterministic
// fields (rewards, loss, KL, ratios, groups) are equal. With the local store (2 rollout + 2
// reward workers) and with the S3 store on versitygw (2 + 1), where before resuming the newest
// checkpoint is corrupted (a flipped byte in a part) and the one before it made partial (its
// manifest deleted): both are skipped with a log line and the run resumes from the one before.
func TestResumeIsExact(t *testing.T) {
	if testing.Short() {
		t.Skip("three pipeline runs; skipped with -short")
	}
	const steps = 4
	straight := resumeConfig(t, steps)
	straight.Store = t.TempDir()
	e := sharedEnv.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if _, err := local.Run(ctx, local.Options{Config: straight, RolloutWorkers: 1, RewardWorkers: 1, Out: straight.Store,
		Backend: e.Backend, Ensemble: e.Ensemble, InitPolicy: e.Policy, SkipEval: true, Log: zerolog.Nop()}); err != nil {
		t.Fatal(err)
	}
	st, closeStore, err := startup.OpenStore(ctx, straight.Store, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore()
	want := readOutcome(t, st, straight.RunID, steps)

	t.Run("local", func(t *testing.T) {
		c := resumeConfig(t, steps)
		out := t.TempDir()
		c.Store = out
		killAfter(t, c, out, 2, 2)
		res, r := resume(t, c, out, 2, zerolog.Nop())
		t.Logf("killed after step 2, resumed from checkpoint %d; learned %d steps after resuming", r.Manifest.Step, len(res.Accounting.Learned))
		got := readOutcome(t, st2(t, c.Store), c.RunID, steps)
		sameOutcome(t, "local store, 2+2 workers", want, got)
	})

	t.Run("s3", func(t *testing.T) {
		srv := s3test.Start(t)
		t.Setenv("BICOT_S3_ACCESS_KEY", srv.AccessKey)
		t.Setenv("BICOT_S3_SECRET_KEY", srv.SecretKey)
		c := resumeConfig(t, steps)
		c.Store = fmt.Sprintf("s3://%s/runs?endpoint=%s&secure=false", srv.Bucket, srv.Endpoint)
		out := t.TempDir()
		killAfter(t, c, out, 2, 3)

		// Damage the bucket behind the store's back: a flipped byte in the newest committed
		// checkpoint's trainer part, and the manifest of the one before deleted.
		s3st, closeS3, err := startup.OpenStore(context.Background(), c.Store, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		defer closeS3()
		ms, err := ckpt.List(context.Background(), s3st, c.RunID)
		if err != nil || len(ms) < 3 {
			t.Fatalf("checkpoints after the kill: %d (%v), want >= 3", len(ms), err)
		}
		newest, partial := ms[len(ms)-1], ms[len(ms)-2]
		cl := srv.Client(t)
		obj := s3test.ObjectName("runs", ckpt.Dir(c.RunID, newest.Step)+"trainer")
		o, err := cl.GetObject(context.Background(), srv.Bucket, obj, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(o)
		o.Close()
		if err != nil || len(data) < 100 {
			t.Fatalf("read %s: %d bytes, %v", obj, len(data), err)
		}
		info, err := cl.StatObject(context.Background(), srv.Bucket, obj, minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var sum string
		for k, v := range info.UserMetadata {
			if strings.EqualFold(k, "bicot-sha256") || strings.EqualFold(k, "x-amz-meta-bicot-sha256") {
				sum = v
			}
		}
		if sum == "" {
			t.Fatalf("%s has no recorded checksum: %v", obj, info.UserMetadata)
		}
		data[len(data)/2] ^= 0x40
		// Keep the object's recorded checksum: only the bytes change, as bit rot would.
		if _, err := cl.PutObject(context.Background(), srv.Bucket, obj, bytes.NewReader(data), int64(len(data)),
			minio.PutObjectOptions{UserMetadata: map[string]string{"bicot-sha256": sum}}); err != nil {
			t.Fatal(err)
		}
		if err := cl.RemoveObject(context.Background(), srv.Bucket, s3test.ObjectName("runs", ckpt.ManifestKey(c.RunID, partial.Step)),
			minio.RemoveObjectOptions{}); err != nil {
			t.Fatal(err)
		}

		var logs syncBuffer
		log := zerolog.New(&logs).Level(zerolog.WarnLevel)
		res, r := resume(t, c, out, 1, log)
		if want := partial.Step - 1; r.Manifest.Step != want {
			t.Errorf("resumed from checkpoint %d, want %d (newest %d corrupted, %d partial)", r.Manifest.Step, want, newest.Step, partial.Step)
		}
		if !strings.Contains(logs.String(), "skipping corrupted checkpoint") || !strings.Contains(logs.String(), fmt.Sprintf(`"step":%d`, newest.Step)) {
			t.Errorf("no log line naming the skipped corrupted checkpoint %d:\n%s", newest.Step, logs.String())
		}
		t.Logf("killed after step 3; checkpoint %d corrupted, %d partial; resumed from %d; learned %d steps after resuming",
			newest.Step, partial.Step, r.Manifest.Step, len(res.Accounting.Learned))
		sameOutcome(t, "S3 store, corrupted newest checkpoint", want, readOutcome(t, s3st, c.RunID, steps))
		// The damaged checkpoints were replaced by the resumed run's: every one left verifies.
		after, err := ckpt.List(context.Background(), s3st, c.RunID)
		if err != nil || len(after) == 0 || after[len(after)-1].Step != steps-1 {
			t.Fatalf("checkpoints after the resumed run: %d, %v", len(after), err)
		}
		for _, m := range after {
			if err := ckpt.Verify(context.Background(), s3st, m, false); err != nil {
				t.Errorf("checkpoint %d after the resumed run: %v", m.Step, err)
			}
		}
	})
}

func st2(t *testing.T, spec string) store.Store {
	t.Helper()
	st, closeStore, err := startup.OpenStore(context.Background(), spec, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeStore)
	return st
}

// TestResumeContinuesExactly runs 3 steps straight, and 2 steps then a restart of the whole run
// (same run id and directory) for the third: the resumed run's third step has exactly the
// statistics of the straight run's (same samples, same weights, same optimizer state).
func TestResumeContinuesExactly(t *testing.T) {
	if testing.Short() {
		t.Skip("a full pipeline run; skipped with -short")
	}
	e := sharedEnv.Get(t)
	run := func(out string, steps int) local.Result {
		c := localtest.Config(t, steps)
		c.CheckpointEvery = 1
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		res, err := local.Run(ctx, local.Options{Config: c, RolloutWorkers: 1, RewardWorkers: 1, Out: out,
			Backend: e.Backend, Ensemble: e.Ensemble, InitPolicy: e.Policy, SkipEval: true, Log: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	straight := run(t.TempDir(), 3)
	out := t.TempDir()
	run(out, 2)
	resumed := run(out, 3)
	if len(resumed.Accounting.Stats) != 1 {
		t.Fatalf("the resumed run trained %d steps, want 1", len(resumed.Accounting.Stats))
	}
	a, b := straight.Accounting.Stats[2], resumed.Accounting.Stats[0]
	a.Seconds, a.RefSeconds, a.UpdateSeconds = 0, 0, 0
	b.Seconds, b.RefSeconds, b.UpdateSeconds = 0, 0, 0
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("third step differs after resume:\nstraight %+v\nresumed  %+v", a, b)
	}
	if n := len(metricsRecords(t, filepath.Dir(resumed.Dir), filepath.Base(resumed.Dir))); n != 3 {
		t.Errorf("the metrics of the resumed run have %d lines, want 3", n)
	}
}
