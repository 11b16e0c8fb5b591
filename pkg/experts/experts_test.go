package experts

import (
	"context"
	"encoding/binary"
	"image"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gomlx/gomlx/backends"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/oracle"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/scene"
)

// testDir holds experts trained for a few steps once for the whole package.
var (
	testDir     string
	testBackend backends.Backend
)

func TestMain(m *testing.M) {
	code := func() int {
		var err error
		testBackend, err = mlx.NewBackend("")
		if err != nil {
			panic(err)
		}
		dir, err := os.MkdirTemp("", "experts-test")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		testDir = dir
		if err := TrainAll(context.Background(), testBackend, dir, TrainOptions{Seed: 3, Steps: 4, Command: "test", Log: zerolog.Nop()}); err != nil {
			panic(err)
		}
		return m.Run()
	}()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			println("goleak:", err.Error())
			code = 1
		}
	}
	os.Exit(code)
}

func loadSet(t testing.TB) *Set {
	t.Helper()
	s, err := Load(testBackend, testDir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mixItems(t testing.TB, n int, seed uint64) []reward.Item {
	t.Helper()
	items, err := EnsembleMix(n, rand.New(rand.NewPCG(seed, 1)))
	if err != nil {
		t.Fatal(err)
	}
	return items
}

func TestLocalEnsembleScoresInRange(t *testing.T) {
	ens, set, err := LocalEnsemble(testBackend, testDir)
	if err != nil {
		t.Fatal(err)
	}
	if got := set.Models[HPS].Meta()["command"]; got != "test" {
		t.Fatalf("metadata command %q", got)
	}
	items := mixItems(t, 70, 1) // more than one inference batch
	scores, err := ens.Score(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range scores {
		sum := 0.0
		for _, name := range Names {
			v, ok := s.PerExpert[name]
			if !ok || math.IsNaN(v) || v < 0 || v > 1 {
				t.Fatalf("sample %d: %s = %v (present %v)", i, name, v, ok)
			}
			sum += v
		}
		if math.Abs(sum-s.Total) > 1e-9 {
			t.Fatalf("sample %d: total %v != sum %v", i, s.Total, sum)
		}
		if tt := items[i].Prompt.TaskType; (tt == prompts.Spatial || tt == prompts.Numeracy) && s.PerExpert[VQA] != 0 {
			t.Fatalf("sample %d: VQA %v on a %s prompt", i, s.PerExpert[VQA], tt)
		}
	}
}

// TestRemoteMatchesLocal serves each expert with the real handler on a loopback listener, as
// serve-expert does, and checks that scoring through the protocol gives the local numbers.
func TestRemoteMatchesLocal(t *testing.T) {
	set := loadSet(t)
	urls := map[string]string{}
	for _, name := range Names {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: reward.NewHandler(name, set.Models[name], reward.HandlerOptions{MaxBatch: 16}), ReadHeaderTimeout: time.Second}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		urls[name] = "http://" + ln.Addr().String()
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	remote, err := RemoteEnsemble(urls, reward.RemoteConfig{MaxBatch: 16, Timeout: 30 * time.Second, Client: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	local, err := Ensemble(set.Backends(), 0)
	if err != nil {
		t.Fatal(err)
	}
	items := mixItems(t, 40, 2)
	want, err := local.Score(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	got, err := remote.Score(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		for _, name := range Names {
			if math.Abs(want[i].PerExpert[name]-got[i].PerExpert[name]) > 1e-6 {
				t.Fatalf("sample %d %s: remote %v, local %v", i, name, got[i].PerExpert[name], want[i].PerExpert[name])
			}
		}
	}
}

func TestWeightsCorruption(t *testing.T) {
	good, err := os.ReadFile(WeightsPath(testDir, VQA))
	if err != nil {
		t.Fatal(err)
	}
	hlen := int(binary.LittleEndian.Uint64(good))
	flip := func(at int) []byte {
		b := append([]byte(nil), good...)
		b[at] ^= 0x40
		return b
	}
	tests := []struct {
		name   string
		data   []byte
		expert string
		want   string
	}{
		{"truncated data", good[:len(good)-8], VQA, "checksum mismatch"},
		{"flipped data byte", flip(len(good) - 3), VQA, "checksum mismatch"},
		{"truncated header", good[:100], VQA, "does not fit the file"},
		{"tiny", good[:5], VQA, "too short"},
		{"bad header json", flip(8 + 1), VQA, "header"},
		{"other expert", good, ORM, `holds expert "vqa", want "orm"`},
		{"data section empty", good[:8+hlen], VQA, "checksum mismatch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := WeightsPath(dir, tc.expert)
			if err := os.WriteFile(p, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := LoadModel(testBackend, dir, tc.expert)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("err = %v, want it to name %s and say %q", err, p, tc.want)
			}
		})
	}
	if _, err := LoadModel(testBackend, t.TempDir(), VQA); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestWeightsRoundTripIsExact(t *testing.T) {
	dir := t.TempDir()
	ctx, meta, err := loadWeights(WeightsPath(testDir, Detector), Detector)
	if err != nil {
		t.Fatal(err)
	}
	if err := saveWeights(WeightsPath(dir, Detector), ctx, map[string]string{"expert": Detector, "command": meta["command"], "seed": meta["seed"], "steps": meta["steps"], "loss": meta["loss"]}); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(WeightsPath(testDir, Detector))
	b, _ := os.ReadFile(WeightsPath(dir, Detector))
	if string(a) != string(b) {
		t.Fatal("re-saved weights differ")
	}
}

func TestDetectorBoxesAreCells(t *testing.T) {
	m := loadSet(t).Models[Detector]
	img, err := render(scene.Scene{Objects: []scene.Object{{Shape: scene.Circle, Colour: scene.Red, Size: scene.Large, Texture: scene.Solid, Row: 1, Col: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	raws, err := m.Infer(context.Background(), []reward.Query{{Image: img}})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range raws[0].Boxes {
		if b.Score < minBoxScore || b.Score > 1 {
			t.Fatalf("box %+v below the report threshold", b)
		}
		if w := b.Box[2] - b.Box[0]; math.Abs(w-0.25) > 1e-12 {
			t.Fatalf("box %+v is not a cell", b)
		}
	}
}

func TestImagesOfOtherSizesAreResampled(t *testing.T) {
	small, err := render(scene.Scene{Objects: []scene.Object{{Shape: scene.Square, Colour: scene.Blue, Size: scene.Large, Texture: scene.Solid, Row: 0, Col: 0}}})
	if err != nil {
		t.Fatal(err)
	}
	big := image.NewRGBA(image.Rect(0, 0, 64, 64))
	for y := range 64 {
		for x := range 64 {
			big.Set(x, y, small.At(x/2, y/2))
		}
	}
	var a, b [NumCells * PatchDim]float32
	cellPatches(small, a[:])
	cellPatches(big, b[:])
	if a != b {
		t.Fatal("upscaled image gives different patches")
	}
}

func TestMisalignedScenesViolateTheirPrompt(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	for range 300 {
		p, err := drawPrompt(rng)
		if err != nil {
			t.Fatal(err)
		}
		sc := misalignedScene(p, rng)
		if p.Spec.Satisfied(sc) {
			t.Fatalf("misaligned scene %v satisfies %q", sc.Objects, p.Prompt)
		}
		if err := sc.Validate(sceneCfg); err != nil {
			t.Fatal(err)
		}
	}
}

func TestQuestionsAreTrue(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	yes := 0
	for range 500 {
		sc := randomScene(rng)
		q, want := question(sc, rng)
		var attrs [numAttrs]float32
		questionAttrs(q, attrs[:])
		spec := scene.ObjSpec{}
		for _, w := range words(q) {
			switch i := attrIndex(w); {
			case i < 0:
				t.Fatalf("question %q has word %q outside the attributes", q, w)
			case i < 5:
				spec.Shape = scene.Shapes[i]
			case i < 11:
				spec.Colour = scene.Colours[i-5]
			case i < 13:
				spec.Size = scene.Sizes[i-11]
			default:
				spec.Texture = scene.Textures[i-13]
			}
		}
		got := false
		for _, o := range sc.Objects {
			got = got || spec.Matches(o)
		}
		if got != want {
			t.Fatalf("question %q about %v: label %v, truth %v", q, sc.Objects, want, got)
		}
		if want {
			yes++
		}
	}
	if yes < 200 || yes > 300 {
		t.Fatalf("%d of 500 questions are yes: not balanced", yes)
	}
}

func TestDegradeChangesPixelsOnly(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	img, err := render(randomScene(rng))
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		d := degrade(img, rng, 1)
		if d.Bounds() != img.Bounds() {
			t.Fatal("degrade changed the size")
		}
	}
}

func TestEvaluateReport(t *testing.T) {
	ens, set, err := LocalEnsemble(testBackend, testDir)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Evaluate(context.Background(), set, ens, 16, 1)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range rep.MainMetrics() {
		if math.IsNaN(v) || v < 0 || v > 1 {
			t.Fatalf("%s main metric %v", name, v)
		}
	}
	if len(rep.ExpertSpearman) != len(Names) {
		t.Fatalf("expert spearman %v", rep.ExpertSpearman)
	}
	if _, err := Evaluate(context.Background(), set, ens, 1, 1); err == nil {
		t.Fatal("n = 1 accepted")
	}
}

func TestTrainRejectsUnknownExpert(t *testing.T) {
	err := Train(context.Background(), testBackend, t.TempDir(), "clip", TrainOptions{Steps: 1, Log: zerolog.Nop()})
	if err == nil || !strings.Contains(err.Error(), `"clip"`) {
		t.Fatalf("err = %v", err)
	}
	if _, err := Ensemble(map[string]reward.Backend{}, 0); err == nil {
		t.Fatal("empty ensemble accepted")
	}

}

func TestPreferenceScoresAreStandardised(t *testing.T) {
	m := loadSet(t).Models[HPS]
	if m.Meta()["score_scale"] == "" || m.scoreScale <= 0 {
		t.Fatalf("no calibration in %v", m.Meta())
	}
	ctx, meta, err := loadWeights(WeightsPath(testDir, HPS), HPS)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"0", "-1", "NaN", "x"} {
		meta["score_scale"] = bad
		dir := t.TempDir()
		if err := saveWeights(WeightsPath(dir, HPS), ctx, meta); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadModel(testBackend, dir, HPS); err == nil || !strings.Contains(err.Error(), "calibration") {
			t.Fatalf("scale %q: err = %v", bad, err)
		}
	}
}

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := dir + "/experts.yaml"
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := LoadConfig(write("models: " + testDir + "\ntimeout: 5s\nexperts:\n  hps: {weight: 2, hps_offset: 0.5, hps_scale: 2}\nremote: {retries: 1, call_timeout: 3s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Timeout != 5*time.Second || c.Remote.CallTimeout != 3*time.Second || *c.Experts[HPS].Weight != 2 {
		t.Fatalf("config %+v", c)
	}
	ens, err := NewEnsembleFromConfig(testBackend, c)
	if err != nil {
		t.Fatal(err)
	}
	items := mixItems(t, 8, 4)
	got, err := ens.Score(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range got {
		// hps weighted 2 by the file; the others keep their default weights.
		want := DefaultWeights[Detector]*s.PerExpert[Detector] + DefaultWeights[VQA]*s.PerExpert[VQA] + 2*s.PerExpert[HPS] + DefaultWeights[ORM]*s.PerExpert[ORM]
		if math.Abs(want-s.Total) > 1e-9 {
			t.Fatalf("sample %d: total %v, want %v", i, s.Total, want)
		}
	}
	for name, bad := range map[string]string{
		"unknown key":           "modles: x\n",
		"unknown expert":        "experts:\n  clip: {}\n",
		"negative weight":       "experts:\n  vqa: {weight: -1}\n",
		"squash on vqa":         "experts:\n  vqa: {hps_scale: 2}\n",
		"reference rule on vqa": "experts:\n  vqa: {reference_rule: true}\n",
		"soft answers on orm":   "experts:\n  orm: {soft_answers: true}\n",
		"zero scale":            "experts:\n  hps: {hps_scale: 0}\n",
		"bad duration":          "timeout: soon\n",
		"negative backoff":      "remote: {backoff: -1s}\n",
		"partial credit on vqa": "experts:\n  vqa: {partial_credit: 0.5}\n",
		"partial credit of 1":   "experts:\n  oracle: {partial_credit: 1}\n",
		"negative credit":       "experts:\n  oracle: {partial_credit: -0.1}\n",
	} {
		if _, err := LoadConfig(write(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewEnsembleFromConfig(nil, DefaultConfig()); err == nil || !strings.Contains(err.Error(), "backend") {
		t.Fatalf("nil backend: %v", err)
	}
}

// TestCommittedExpertsMeetTargets checks the shipped weights (models/experts) against the targets
// docs/experts.md records: every expert at least 0.80 on its main metric but not perfect (at most
// 0.98), and the ensemble's rank correlation with the oracle at least 0.7.
func TestCommittedExpertsMeetTargets(t *testing.T) {
	const dir = "../../models/experts"
	for _, n := range Names {
		if _, err := os.Stat(WeightsPath(dir, n)); err != nil {
			t.Skipf("no committed experts: %v", err)
		}
	}
	ens, set, err := LocalEnsemble(testBackend, dir)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Evaluate(context.Background(), set, ens, 512, 7)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range rep.MainMetrics() {
		if v < 0.80 || v > 0.98 {
			t.Errorf("%s main metric %.3f outside [0.80, 0.98]", name, v)
		}
	}
	if rep.EnsembleSpearman < 0.7 {
		t.Errorf("ensemble Spearman %.3f < 0.7", rep.EnsembleSpearman)
	}
	t.Logf("main metrics %v, ensemble Spearman %.3f (within prompts %.3f)", rep.MainMetrics(), rep.EnsembleSpearman, rep.EnsembleSpearmanWithinPrompt)
}

// A few queries run as a small padded batch (padTo); the rewards must not depend on what else
// was in the batch.
func TestScoresDoNotDependOnBatching(t *testing.T) {
	ens, _, err := LocalEnsemble(testBackend, testDir)
	if err != nil {
		t.Fatal(err)
	}
	items := mixItems(t, 70, 3)
	all, err := ens.Score(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 5, 33, 69} {
		one, err := ens.Score(context.Background(), items[i:i+1])
		if err != nil {
			t.Fatal(err)
		}
		for name, v := range all[i].PerExpert {
			if math.Abs(one[0].PerExpert[name]-v) > 1e-5 {
				t.Fatalf("item %d %s: %v alone, %v in a batch of 70", i, name, one[0].PerExpert[name], v)
			}
		}
	}
	if padTo(1) != 1 || padTo(3) != 4 || padTo(64) != 64 || padTo(65) != 64 {
		t.Fatalf("padTo: %d %d %d %d", padTo(1), padTo(3), padTo(64), padTo(65))
	}
}

// The default configuration uses the extended detector rule, decided VQA answers and the default
// weights; the reference flags bring T2I-R1's rules back; the oracle joins only when named.
func TestDefaultAndReferenceRules(t *testing.T) {
	items := mixItems(t, 16, 5)
	score := func(c Config) []reward.Scores { return scoreWith(t, c, items) }
	def := DefaultConfig()
	def.Models = testDir
	ref := def
	one := 1.0
	ref.Experts = map[string]ExpertConfig{Detector: {Weight: &one, ReferenceRule: true}, VQA: {Weight: &one, SoftAnswers: true},
		HPS: {Weight: &one}, ORM: {Weight: &one}, Oracle: {}}
	d, r := score(def), score(ref)
	softSeen := false
	for i := range items {
		if _, ok := d[i].PerExpert[Oracle]; ok {
			t.Fatalf("item %d: oracle in the default ensemble", i)
		}
		if _, ok := r[i].PerExpert[Oracle]; !ok {
			t.Fatalf("item %d: oracle named but missing", i)
		}
		v := d[i].PerExpert[VQA]
		if n := float64(len(items[i].Prompt.AttrNouns)); n > 0 && math.Abs(v*n-math.Round(v*n)) > 1e-9 {
			t.Fatalf("item %d: decided VQA reward %v is not a fraction of %v questions", i, v, n)
		}
		if rv := r[i].PerExpert[VQA]; rv != 0 && rv != 1 && rv != math.Round(rv*4)/4 {
			softSeen = true
		}
		want := d[i].PerExpert[Detector] + d[i].PerExpert[VQA]
		if math.Abs(d[i].Total-want) > 1e-9 {
			t.Fatalf("item %d: default total %v, want detector + vqa %v", i, d[i].Total, want)
		}
		if math.Abs(r[i].Total-(r[i].PerExpert[Detector]+r[i].PerExpert[VQA]+r[i].PerExpert[HPS]+r[i].PerExpert[ORM])) > 1e-9 {
			t.Fatalf("item %d: reference total %v is not the equal-weight sum", i, r[i].Total)
		}
	}
	if !softSeen {
		t.Fatal("soft_answers gave no soft VQA reward")
	}
}

// The oracle expert passes the oracle's verdict through: 1 for a faithful clean render, low for a
// misaligned one, and an error naming the prompt when it has no spec.
func TestOracleExpert(t *testing.T) {
	c := DefaultConfig()
	c.Models = testDir
	one, zero := 1.0, 0.0
	c.Experts = map[string]ExpertConfig{Oracle: {Weight: &one}, Detector: {Weight: &zero}, VQA: {Weight: &zero}}
	ens, err := NewEnsembleFromConfig(testBackend, c)
	if err != nil {
		t.Fatal(err)
	}
	items := mixItems(t, GroupSize, 6)
	got, err := ens.Score(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Total != 1 || got[0].PerExpert[Oracle] != 1 {
		t.Fatalf("faithful clean render: %+v, want oracle 1 as the total", got[0])
	}
	if got[GroupSize/2].Total > 0.2 {
		t.Fatalf("misaligned render: total %v, want <= 0.2", got[GroupSize/2].Total)
	}
	if _, ok := got[0].PerExpert[Detector]; !ok {
		t.Fatal("weight-0 detector not logged as a monitor")
	}
	bad := items[:1]
	bad[0].Prompt.Spec = nil
	if _, err := ens.Score(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "oracle") {
		t.Fatalf("prompt without spec: %v, want an error naming the oracle", err)
	}
}

// TestOraclePartialCredit checks the oracle expert's partial_credit: exact images still score 1,
// inexact ones pc times the fraction of the prompt they meet (the evaluation's verdict with more
// room below 1), and the default is the evaluation's own score.
func TestOraclePartialCredit(t *testing.T) {
	items := mixItems(t, 4*GroupSize, 7)
	parser, err := oracle.NewParser(scene.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	score := func(pc *float64) []reward.Scores {
		c := DefaultConfig()
		c.Models = testDir
		one, zero := 1.0, 0.0
		c.Experts = map[string]ExpertConfig{Oracle: {Weight: &one, PartialCredit: pc}, Detector: {Weight: &zero}, VQA: {Weight: &zero}}
		return scoreWith(t, c, items)
	}
	half := 0.5
	strict, dense := score(nil), score(&half)
	above := 0
	for i, it := range items {
		res, err := parser.Score(it.Prompt, it.Image)
		if err != nil {
			t.Fatal(err)
		}
		if strict[i].Total != res.Score {
			t.Fatalf("item %d: default partial credit scores %v, the evaluation %v", i, strict[i].Total, res.Score)
		}
		want := 1.0
		if !res.Checks.Exact {
			want = 0.5 * res.Checks.Part()
		}
		if math.Abs(dense[i].Total-want) > 1e-12 || (res.Checks.Exact != (dense[i].Total == 1)) {
			t.Fatalf("item %d (%+v): partial credit 0.5 scores %v, want %v", i, res.Checks, dense[i].Total, want)
		}
		if !res.Checks.Exact && dense[i].Total > oracle.PartialCredit {
			above++
		}
	}
	if above == 0 {
		t.Fatal("no inexact item scored above the strict partial credit: the option changed nothing")
	}
	if _, err := NewOracleBackend(scene.DefaultConfig(), 1); err == nil {
		t.Fatal("partial credit 1 accepted")
	}
}

// TestShippedExpertConfigs loads every expert configuration the repository ships
// (configs/experts/*.yaml and the ladder's experts-*.yaml): runs name them by path, so a key or
// value their loader refuses must fail here, not when a run starts.
func TestShippedExpertConfigs(t *testing.T) {
	root := filepath.Join("..", "..", "configs")
	a, errA := filepath.Glob(filepath.Join(root, "experts", "*.yaml"))
	b, errB := filepath.Glob(filepath.Join(root, "ladder", "experts-*.yaml"))
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	paths := append(a, b...)
	if len(paths) < 3 {
		t.Fatalf("found %d expert configs under %s", len(paths), root)
	}
	for _, p := range paths {
		if _, err := LoadConfig(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// scoreWith scores items with the ensemble configuration c describes.
func scoreWith(t *testing.T, c Config, items []reward.Item) []reward.Scores {
	t.Helper()
	ens, err := NewEnsembleFromConfig(testBackend, c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ens.Score(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	return got
}
