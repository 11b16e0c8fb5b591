package reward

import (
	"context"
	"errors"
	"image"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/bicot-rl/bicot/pkg/prompts"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// funcBackend is a backend computed by a function, for exercising the ensemble's error paths.
type funcBackend struct {
	out   Output
	f     func(ctx context.Context, qs []Query) ([]Raw, error)
	calls atomic.Int32
}

func (b *funcBackend) Output() Output { return b.out }
func (b *funcBackend) Infer(ctx context.Context, qs []Query) ([]Raw, error) {
	b.calls.Add(1)
	return b.f(ctx, qs)
}

func scoreBackend(vals ...float64) *funcBackend {
	return &funcBackend{out: OutputScore, f: func(_ context.Context, qs []Query) ([]Raw, error) {
		out := make([]Raw, len(qs))
		for i := range qs {
			v := vals[i%len(vals)]
			out[i] = Raw{Score: &v}
		}
		return out, nil
	}}
}

func yesBackend(p float64) *funcBackend {
	return &funcBackend{out: OutputAnswers, f: func(_ context.Context, qs []Query) ([]Raw, error) {
		out := make([]Raw, len(qs))
		for i, q := range qs {
			for range q.Questions {
				out[i].Answers = append(out[i].Answers, Answer{Yes: p, No: 1 - p})
			}
		}
		return out, nil
	}}
}

func testItems(n int) []Item {
	img := image.NewRGBA(image.Rect(0, 0, 32, 32))
	items := make([]Item, n)
	for i := range items {
		items[i] = Item{Image: img, Prompt: prompts.Prompt{Prompt: "a red circle", TaskType: prompts.Color, Nouns: []string{"circle"}, AttrNouns: []string{"red circle"}}}
	}
	items[n-1].Prompt = prompts.Prompt{Prompt: "two circles", TaskType: prompts.Numeracy, Nouns: []string{"circle"}, NumeracyInfo: []prompts.NumeracyInfo{{ObjName: "circle", Num: 2}}}
	return items
}

func TestEnsembleWeightedSum(t *testing.T) {
	e, err := NewEnsemble(
		Expert{Name: "hps", Backend: scoreBackend(0, math.Log(3)), Rule: DefaultHPSRule(), Weight: 1},
		Expert{Name: "vqa", Backend: yesBackend(0.8), Rule: VQARule{}, Weight: 2},
		Expert{Name: "orm", Backend: yesBackend(0.6), Rule: ORMRule{}, Weight: 0.5},
	)
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.Score(context.Background(), testItems(3))
	if err != nil {
		t.Fatal(err)
	}
	want := []map[string]float64{
		{"hps": 0.5, "vqa": 0.8, "orm": 0.6},
		{"hps": 0.75, "vqa": 0.8, "orm": 0.6},
		{"hps": 0.5, "vqa": 0, "orm": 0.6}, // numeracy: VQA shortcut, backend not asked
	}
	for i, s := range got {
		total := 0.0
		for name, w := range map[string]float64{"hps": 1, "vqa": 2, "orm": 0.5} {
			if !near(s.PerExpert[name], want[i][name]) {
				t.Errorf("sample %d %s = %v, want %v", i, name, s.PerExpert[name], want[i][name])
			}
			total += w * want[i][name]
		}
		if !near(s.Total, total) {
			t.Errorf("sample %d total %v, want %v", i, s.Total, total)
		}
	}
	if names := e.Experts(); strings.Join(names, ",") != "hps,vqa,orm" {
		t.Fatalf("experts %v", names)
	}
}

func TestEnsembleRejectsBadOutputs(t *testing.T) {
	nanBackend := scoreBackend(0, math.NaN())
	tests := []struct {
		name string
		x    Expert
		want []string
	}{
		{"NaN score", Expert{Name: "hps", Backend: nanBackend, Rule: DefaultHPSRule(), Weight: 1}, []string{`expert "hps"`, "sample 1", "NaN"}},
		{"wrong count", Expert{Name: "orm", Rule: ORMRule{}, Weight: 1, Backend: &funcBackend{out: OutputAnswers, f: func(_ context.Context, qs []Query) ([]Raw, error) {
			return make([]Raw, len(qs)-1), nil
		}}}, []string{`expert "orm"`, "2 results for 3 queries"}},
		{"probability > 1", Expert{Name: "vqa", Rule: VQARule{}, Weight: 1, Backend: yesBackend(1.5)}, []string{`expert "vqa"`, "sample 0", "outside [0, 1]"}},
		{"backend error", Expert{Name: "det", Rule: DefaultDetectorRule(), Weight: 1, Backend: &funcBackend{out: OutputBoxes, f: func(context.Context, []Query) ([]Raw, error) {
			return nil, errors.New("model crashed")
		}}}, []string{`expert "det"`, "model crashed"}},
		{"Inf box", Expert{Name: "det", Rule: DefaultDetectorRule(), Weight: 1, Backend: &funcBackend{out: OutputBoxes, f: func(_ context.Context, qs []Query) ([]Raw, error) {
			out := make([]Raw, len(qs))
			out[2].Boxes = []Box{{Label: "circle", Score: math.Inf(1), Box: [4]float64{0, 0, 1, 1}}}
			return out, nil
		}}}, []string{`expert "det"`, "sample 2", "+Inf"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := NewEnsemble(Expert{Name: "ok", Backend: scoreBackend(1), Rule: DefaultHPSRule(), Weight: 1}, tc.x)
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.Score(context.Background(), testItems(3))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestEnsembleTimeout(t *testing.T) {
	slow := &funcBackend{out: OutputScore, f: func(ctx context.Context, qs []Query) ([]Raw, error) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Second):
			return nil, errors.New("not cancelled")
		}
	}}
	e, err := NewEnsemble(
		Expert{Name: "slow", Backend: slow, Rule: DefaultHPSRule(), Weight: 1, Timeout: 20 * time.Millisecond},
		Expert{Name: "vqa", Backend: yesBackend(0.5), Rule: VQARule{}, Weight: 1},
	)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Score(context.Background(), testItems(2))
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), `expert "slow"`) {
		t.Fatalf("err = %v, want a deadline error naming the expert", err)
	}
}

func TestEnsembleRunsExpertsConcurrently(t *testing.T) {
	// Each backend waits until both have started: a sequential ensemble would time out.
	started := make(chan struct{}, 2)
	wait := func(out Output) *funcBackend {
		inner := yesBackend(0.5)
		return &funcBackend{out: out, f: func(ctx context.Context, qs []Query) ([]Raw, error) {
			started <- struct{}{}
			for len(started) < 2 {
				select {
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-time.After(time.Millisecond):
				}
			}
			if out == OutputScore {
				return scoreBackend(0).f(ctx, qs)
			}
			return inner.f(ctx, qs)
		}}
	}
	e, err := NewEnsemble(
		Expert{Name: "a", Backend: wait(OutputScore), Rule: DefaultHPSRule(), Weight: 1, Timeout: 5 * time.Second},
		Expert{Name: "b", Backend: wait(OutputAnswers), Rule: ORMRule{}, Weight: 1, Timeout: 5 * time.Second},
	)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Score(context.Background(), testItems(2)); err != nil {
		t.Fatal(err)
	}
}

func TestNewEnsembleValidates(t *testing.T) {
	ok := Expert{Name: "hps", Backend: scoreBackend(0), Rule: DefaultHPSRule(), Weight: 1}
	for name, xs := range map[string][]Expert{
		"none":       nil,
		"no name":    {{Backend: scoreBackend(0), Rule: DefaultHPSRule(), Weight: 1}},
		"duplicate":  {ok, ok},
		"mismatch":   {{Name: "x", Backend: scoreBackend(0), Rule: ORMRule{}, Weight: 1}},
		"NaN weight": {{Name: "x", Backend: scoreBackend(0), Rule: DefaultHPSRule(), Weight: math.NaN()}},
		"negative":   {{Name: "x", Backend: scoreBackend(0), Rule: DefaultHPSRule(), Weight: -1}},
		"no backend": {{Name: "x", Rule: DefaultHPSRule(), Weight: 1}},
	} {
		if _, err := NewEnsemble(xs...); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestEnsembleMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	// Registering again (a worker started again in the same process) shares the series.
	if again, err := NewMetrics(reg); err != nil || again.rewards != m.rewards {
		t.Fatalf("registering again: %v, same series %v", err, err == nil && again.rewards == m.rewards)
	}
	e, err := NewEnsemble(
		Expert{Name: "vqa", Backend: yesBackend(0.8), Rule: VQARule{}, Weight: 1},
		Expert{Name: "hps", Backend: scoreBackend(math.NaN()), Rule: DefaultHPSRule(), Weight: 1},
	)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Instrumented(m).Score(context.Background(), testItems(3)); err == nil {
		t.Fatal("NaN accepted")
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, mt := range f.GetMetric() {
			key := f.GetName() + "/" + mt.GetLabel()[0].GetValue()
			switch {
			case mt.Counter != nil:
				got[key] = mt.GetCounter().GetValue()
			case mt.Histogram != nil:
				got[key] = float64(mt.GetHistogram().GetSampleCount())
			}
		}
	}
	want := map[string]float64{
		"bicot_reward_expert_failures_total/hps": 1,
		"bicot_reward_expert_batch_seconds/hps":  1,
		"bicot_reward_expert_batch_seconds/vqa":  1,
		"bicot_reward_expert_reward/vqa":         3,
	}
	if len(got) != len(want) {
		t.Fatalf("metrics %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("metrics %v, want %v", got, want)
		}
	}
}
