// Package report turns a run's files into one self-contained HTML page (`learner report`): inline
// CSS, charts drawn here as inline SVG, images as data: URIs, so the file can be mailed or
// archived and opened anywhere without a server. It shows the reward (total and per expert), KL,
// loss and step time over the steps from the run's metrics, the oracle evaluation per task type before
// and after training when eval.json exists, and the samples of the first and the last kept step
// side by side, matched by prompt (or task type). Everything is read through pkg/runfiles.
package report

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"image/png"
	"io"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/bicot-rl/bicot/pkg/runfiles"
	"github.com/bicot-rl/bicot/pkg/store"
)

// Step is what the report reads of one metrics record.
type Step struct {
	Step          int64 `json:"step"`
	PolicyVersion int64 `json:"policy_version"`
	Stats         struct {
		Loss       float64 `json:"loss"`
		RewardMean float64 `json:"reward_mean"`
		KL         float64 `json:"kl"`
		PlanKL     float64 `json:"plan_kl"`
		ImageKL    float64 `json:"image_kl"`
	} `json:"stats"`
	PerExpert    map[string]float64 `json:"per_expert"`
	WaitSeconds  float64            `json:"wait_seconds"`
	TrainSeconds float64            `json:"train_seconds"`
	StepSeconds  float64            `json:"step_seconds"`
	Time         time.Time          `json:"time"`
}

// EvalResult is what the report reads of one policy's oracle evaluation.
type EvalResult struct {
	TaskTypes map[string]float64 `json:"task_types"`
	Mean      float64            `json:"mean"`
	N         int                `json:"n"`
}

// Eval is eval.json: the initial and the final policy.
type Eval struct {
	Initial *EvalResult `json:"initial"`
	Final   *EvalResult `json:"final"`
}

// Report is everything the page shows.
type Report struct {
	Run       string
	Generated time.Time
	Steps     []Step
	// Eval is nil when the run has no eval.json.
	Eval *Eval
	// First and Last are the first and last kept steps' samples (Last nil when only one step
	// was kept, both nil when none).
	First, Last *runfiles.StepSamples
	// Images holds every shown sample's PNG by step and image name.
	Images map[int64]map[string][]byte
}

// maxShownGroups bounds the sample grid (a step holds P groups; P is 8 on a laptop).
const maxShownGroups = 16

// Build reads the run: its metrics (required), eval.json and the first and last kept steps'
// samples with their images (when there are any).
func Build(ctx context.Context, st store.Store, run string) (Report, error) {
	r := Report{Run: run, Generated: time.Now().UTC(), Images: map[int64]map[string][]byte{}}
	recs, err := runfiles.ReadMetrics(ctx, st, run)
	if err != nil {
		return r, fmt.Errorf("report of %s: %w", run, err)
	}
	for _, raw := range recs {
		var s Step
		if err := json.Unmarshal(raw, &s); err != nil {
			continue
		}
		r.Steps = append(r.Steps, s)
	}
	if len(r.Steps) == 0 {
		return r, fmt.Errorf("report of %s: the metrics hold no step", run)
	}
	if raw, err := runfiles.ReadEval(ctx, st, run); err == nil {
		var ev Eval
		if err := json.Unmarshal(raw, &ev); err != nil {
			return r, fmt.Errorf("report of %s: eval.json: %w", run, err)
		}
		r.Eval = &ev
	} else if !errors.Is(err, store.ErrNotFound) {
		return r, fmt.Errorf("report of %s: %w", run, err)
	}
	steps, err := runfiles.SampleSteps(ctx, st, run)
	if err != nil {
		return r, fmt.Errorf("report of %s: %w", run, err)
	}
	if len(steps) == 0 {
		return r, nil
	}
	first, err := readStep(ctx, st, run, steps[0], r.Images)
	if err != nil {
		return r, fmt.Errorf("report of %s: %w", run, err)
	}
	r.First = &first
	if len(steps) > 1 {
		last, err := readStep(ctx, st, run, steps[len(steps)-1], r.Images)
		if err != nil {
			return r, fmt.Errorf("report of %s: %w", run, err)
		}
		r.Last = &last
	}
	return r, nil
}

// readStep reads a kept step's index and the images of its first maxShownGroups groups, each
// checked to be a PNG before it is embedded.
func readStep(ctx context.Context, st store.Store, run string, step int64, images map[int64]map[string][]byte) (runfiles.StepSamples, error) {
	idx, err := runfiles.ReadSamples(ctx, st, run, step)
	if err != nil {
		return idx, err
	}
	if len(idx.Groups) > maxShownGroups {
		idx.Groups = idx.Groups[:maxShownGroups]
	}
	images[step] = map[string][]byte{}
	for _, g := range idx.Groups {
		for _, s := range g.Samples {
			b, err := runfiles.ReadImage(ctx, st, run, step, s.Image)
			if err != nil {
				return idx, err
			}
			if _, err := png.DecodeConfig(bytes.NewReader(b)); err != nil {
				return idx, fmt.Errorf("sample image %s of step %d: %w", s.Image, step, err)
			}
			images[step][s.Image] = b
		}
	}
	return idx, nil
}

// Pair is one row of the before/after grid: a group of the first kept step and one of the last.
type Pair struct {
	// Match says how the two were paired: "same prompt", "same task type" or "" (neither).
	Match         string
	Before, After *runfiles.SampleGroup
}

// Pairs matches the last step's groups with the first step's: the same prompt text first, then
// the same task type, then whatever is left, each first-step group used once.
func Pairs(first, last *runfiles.StepSamples) []Pair {
	if first == nil {
		return nil
	}
	if last == nil {
		out := make([]Pair, len(first.Groups))
		for i := range first.Groups {
			out[i] = Pair{Before: &first.Groups[i]}
		}
		return out
	}
	used := make([]bool, len(first.Groups))
	find := func(ok func(g *runfiles.SampleGroup) bool) *runfiles.SampleGroup {
		for i := range first.Groups {
			if !used[i] && ok(&first.Groups[i]) {
				used[i] = true
				return &first.Groups[i]
			}
		}
		return nil
	}
	out := make([]Pair, len(last.Groups))
	for i := range last.Groups {
		out[i].After = &last.Groups[i]
	}
	for i := range out {
		a := out[i].After
		if b := find(func(g *runfiles.SampleGroup) bool { return g.Prompt == a.Prompt }); b != nil {
			out[i].Before, out[i].Match = b, "same prompt"
		}
	}
	for i := range out {
		a := out[i].After
		if out[i].Before != nil || a.TaskType == "" {
			continue
		}
		if b := find(func(g *runfiles.SampleGroup) bool { return g.TaskType == a.TaskType }); b != nil {
			out[i].Before, out[i].Match = b, "same task type"
		}
	}
	for i := range out {
		if out[i].Before == nil {
			out[i].Before = find(func(*runfiles.SampleGroup) bool { return true })
		}
	}
	return out
}

// dataURI embeds a PNG.
func dataURI(b []byte) template.URL {
	// Safe as a URL: the bytes were checked to be a PNG and are base64-encoded here.
	return template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(b))
}

// view is what the template renders.
type view struct {
	Report
	Summary      []kv
	RewardChart  template.HTML
	KLChart      template.HTML
	LossChart    template.HTML
	TimeChart    template.HTML
	EvalChart    template.HTML
	EvalRows     []evalRow
	Pairs        []pairView
	BeforeStep   int64
	AfterStep    int64
	HasAfter     bool
	SamplesShown bool
}

type kv struct{ K, V string }

type evalRow struct {
	Task                  string
	Initial, Final, Delta string
	Better                bool
	Worse                 bool
}

type pairView struct {
	Match         string
	Before, After *groupView
}

type groupView struct {
	Prompt, TaskType string
	Samples          []sampleView
}

type sampleView struct {
	Src       template.URL
	Reward    string
	Advantage string
	Title     string
}

func (r Report) group(step int64, g *runfiles.SampleGroup) *groupView {
	if g == nil {
		return nil
	}
	gv := &groupView{Prompt: g.Prompt, TaskType: g.TaskType}
	for _, s := range g.Samples {
		title := fmt.Sprintf("sample %d, policy version %d\nplan: %s", s.SampleIndex, s.PolicyVersion, s.Plan)
		for _, k := range slices.Sorted(maps.Keys(s.PerExpert)) {
			title += fmt.Sprintf("\n%s %.3f", k, s.PerExpert[k])
		}
		gv.Samples = append(gv.Samples, sampleView{Src: dataURI(r.Images[step][s.Image]), Reward: fmt.Sprintf("%.2f", s.Reward),
			Advantage: fmt.Sprintf("%+.2f", s.Advantage), Title: title})
	}
	return gv
}

// WriteHTML renders the report as one self-contained HTML document.
func (r Report) WriteHTML(w io.Writer) error {
	v := view{Report: r}
	last := r.Steps[len(r.Steps)-1]
	var secs float64
	for _, s := range r.Steps {
		secs += s.StepSeconds
	}
	v.Summary = []kv{{"run", r.Run}, {"steps learned", fmt.Sprint(len(r.Steps))}, {"policy version", fmt.Sprint(last.PolicyVersion)},
		{"reward, first and last step", fmt.Sprintf("%.3f → %.3f", r.Steps[0].Stats.RewardMean, last.Stats.RewardMean)},
		{"learner time", (time.Duration(secs) * time.Second).String()}, {"generated", r.Generated.Format(time.RFC3339)}}
	if r.Eval != nil && r.Eval.Initial != nil && r.Eval.Final != nil {
		v.Summary = append(v.Summary, kv{"oracle mean, initial and final policy", fmt.Sprintf("%.3f → %.3f", r.Eval.Initial.Mean, r.Eval.Final.Mean)})
	}

	xs := make([]float64, len(r.Steps))
	col := func(f func(Step) float64) []float64 {
		out := make([]float64, len(r.Steps))
		for i, s := range r.Steps {
			out[i] = f(s)
		}
		return out
	}
	for i, s := range r.Steps {
		xs[i] = float64(s.Step)
	}
	experts := map[string]bool{}
	for _, s := range r.Steps {
		for k := range s.PerExpert {
			experts[k] = true
		}
	}
	reward := []series{{"total", col(func(s Step) float64 { return s.Stats.RewardMean })}}
	for _, e := range slices.Sorted(maps.Keys(experts)) {
		reward = append(reward, series{e, col(func(s Step) float64 {
			if x, ok := s.PerExpert[e]; ok {
				return x
			}
			return nan
		})})
	}
	v.RewardChart = lineChart(xs, reward)
	v.KLChart = lineChart(xs, []series{{"kl", col(func(s Step) float64 { return s.Stats.KL })},
		{"plan", col(func(s Step) float64 { return s.Stats.PlanKL })}, {"image", col(func(s Step) float64 { return s.Stats.ImageKL })}})
	v.LossChart = lineChart(xs, []series{{"loss", col(func(s Step) float64 { return s.Stats.Loss })}})
	v.TimeChart = lineChart(xs, []series{{"wait", col(func(s Step) float64 { return s.WaitSeconds })},
		{"train", col(func(s Step) float64 { return s.TrainSeconds })}, {"step", col(func(s Step) float64 { return s.StepSeconds })}})

	if ev := r.Eval; ev != nil && ev.Initial != nil && ev.Final != nil {
		tasks := slices.Sorted(maps.Keys(ev.Final.TaskTypes))
		var before, after []float64
		for _, t := range tasks {
			a, b := ev.Initial.TaskTypes[t], ev.Final.TaskTypes[t]
			before, after = append(before, a), append(after, b)
			v.EvalRows = append(v.EvalRows, evalRow{Task: t, Initial: fmt.Sprintf("%.3f", a), Final: fmt.Sprintf("%.3f", b),
				Delta: fmt.Sprintf("%+.3f", b-a), Better: b > a, Worse: b < a})
		}
		v.EvalRows = append(v.EvalRows, evalRow{Task: "mean", Initial: fmt.Sprintf("%.3f", ev.Initial.Mean), Final: fmt.Sprintf("%.3f", ev.Final.Mean),
			Delta: fmt.Sprintf("%+.3f", ev.Final.Mean-ev.Initial.Mean), Better: ev.Final.Mean > ev.Initial.Mean, Worse: ev.Final.Mean < ev.Initial.Mean})
		v.EvalChart = barChart(tasks, before, after)
	}

	if r.First != nil {
		v.SamplesShown, v.BeforeStep = true, r.First.Step
		if r.Last != nil {
			v.HasAfter, v.AfterStep = true, r.Last.Step
		}
		for _, p := range Pairs(r.First, r.Last) {
			pv := pairView{Match: p.Match, Before: r.group(v.BeforeStep, p.Before)}
			if r.Last != nil {
				pv.After = r.group(v.AfterStep, p.After)
			}
			v.Pairs = append(v.Pairs, pv)
		}
		// The closest pairs first: the same prompt, then the same task type.
		rank := map[string]int{"same prompt": 0, "same task type": 1, "": 2}
		sort.SliceStable(v.Pairs, func(i, j int) bool { return rank[v.Pairs[i].Match] < rank[v.Pairs[j].Match] })
	}
	var b bytes.Buffer
	if err := page.Execute(&b, v); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	_, err := w.Write(b.Bytes())
	return err
}
