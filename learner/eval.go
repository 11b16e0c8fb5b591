package main

import (
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/oracle"
	"github.com/bicot-rl/bicot/pkg/plan"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/scene"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/vq"
)

type evalOptions struct {
	Checkpoint, Prompts, Codebook, Backend string
	NoPlan                                 bool
	Limit, G, Batch, GridPerType           int
	Seed                                   uint64
	CFG, Temperature                       float64
	JSON, Grid, Samples                    string
}

// sampleRecord is one line of the --samples file: what the policy wrote and drew for a prompt.
type sampleRecord struct {
	Prompt      string  `json:"prompt"`
	TaskType    string  `json:"task_type"`
	Sample      int     `json:"sample"`
	Plan        string  `json:"plan"`
	PlanQuality float64 `json:"plan_quality"`
	// Drawn is the canonical plan of the scene the oracle reads in the image ("" if it reads
	// something that is not an object of the world).
	Drawn       string  `json:"drawn"`
	FollowsPlan bool    `json:"follows_plan"`
	Score       float64 `json:"score"`
}

// evalResult is the JSON the eval command writes: the oracle's mean score per task type and
// overall, the mean plan quality (plan.Quality of the sampled plans), and the diversity (the mean
// over prompts of distinct images among the G samples divided by G).
type evalResult struct {
	TaskTypes   map[string]float64 `json:"task_types"`
	Mean        float64            `json:"mean"`
	MeanByTask  float64            `json:"mean_by_task"`
	PlanQuality float64            `json:"plan_quality"`
	Diversity   float64            `json:"diversity"`
	// PlanParse is the fraction of samples whose plan parses into a scene on the canvas;
	// ImageFollowsPlan the fraction of those whose image shows exactly that scene (the token-level
	// CoT's fidelity, whatever the plan's quality).
	PlanParse        float64            `json:"plan_parse"`
	ImageFollowsPlan float64            `json:"image_follows_plan"`
	Checks           map[string]float64 `json:"checks"`
	N                int                `json:"n"`
	Prompts          int                `json:"prompts"`
	Checkpoint       string             `json:"checkpoint"`
	NoPlan           bool               `json:"no_plan"`
	G                int                `json:"g"`
	CFG              float64            `json:"cfg"`
	Temperature      float64            `json:"temperature"`
	Seed             uint64             `json:"seed"`
	Seconds          float64            `json:"seconds"`
}

func newEvalCmd() *cobra.Command {
	o := evalOptions{
		Checkpoint: "models/base.safetensors", Prompts: "data/prompts/eval.jsonl", Codebook: "models/codebook.vq",
		G: 4, Batch: 8, GridPerType: 2, Seed: 1, CFG: 3, Temperature: 1,
	}
	var logLevel string
	cmd := &cobra.Command{
		Use:   "eval",
		Short: "Sample the evaluation prompts with a checkpoint and score the images with the oracle",
		Long: "Sample G images per evaluation prompt (plan first, then image tokens), decode them with the\n" +
			"codebook and score them with the oracle. Prints a per-task-type table, and optionally writes\n" +
			"JSON {task_types, mean, plan_quality, diversity, ...} and a PNG grid of samples captioned with\n" +
			"their prompt and plans. Fixed seeds: the same flags give the same numbers.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logging.New(logging.Options{Level: logLevel})
			if err != nil {
				return err
			}
			log = logging.Component(log, "eval")
			res, err := runEval(cmd.ErrOrStderr(), o)
			if err != nil {
				return err
			}
			printEvalTable(cmd.OutOrStdout(), res)
			if o.JSON != "" {
				b, err := json.MarshalIndent(res, "", "  ")
				if err != nil {
					return err
				}
				if err := os.WriteFile(o.JSON, append(b, '\n'), 0o644); err != nil {
					return fmt.Errorf("eval: write %s: %w", o.JSON, err)
				}
			}
			log.Info().Int("samples", res.N).Float64("mean", res.Mean).Float64("seconds", res.Seconds).Msg("evaluated")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&logLevel, "log-level", "info", "log level")
	f.StringVar(&o.Checkpoint, "checkpoint", o.Checkpoint, "policy checkpoint (.safetensors)")
	f.StringVar(&o.Prompts, "prompts", o.Prompts, "evaluation prompt file (JSONL)")
	f.StringVar(&o.Codebook, "codebook", o.Codebook, "VQ codebook file")
	f.BoolVar(&o.NoPlan, "no-plan", o.NoPlan, "give an empty plan instead of sampling one (ablation)")
	f.IntVar(&o.Limit, "limit", o.Limit, "evaluate only the first N prompts of each task type (0: all)")
	f.IntVar(&o.G, "g", o.G, "samples per prompt")
	f.IntVar(&o.Batch, "batch", o.Batch, "prompts sampled together")
	f.Uint64Var(&o.Seed, "seed", o.Seed, "sampling seed")
	f.Float64Var(&o.CFG, "cfg", o.CFG, "classifier-free guidance weight on image tokens (0: off)")
	f.Float64Var(&o.Temperature, "temperature", o.Temperature, "sampling temperature")
	f.StringVar(&o.JSON, "json", o.JSON, "write the results as JSON to this file")
	f.StringVar(&o.Grid, "grid", o.Grid, "write a PNG grid of samples to this file")
	f.StringVar(&o.Samples, "samples", o.Samples, "write every sample's prompt, plan, drawn scene and score as JSONL to this file")
	f.IntVar(&o.GridPerType, "grid-per-type", o.GridPerType, "prompts per task type in the grid")
	f.StringVar(&o.Backend, "backend", o.Backend, "gomlx backend (default go:parallelism=-1)")
	return cmd
}

// limitPerType keeps the first n prompts of each task type (all when n <= 0).
func limitPerType(ps []prompts.Prompt, n int) []prompts.Prompt {
	if n <= 0 {
		return ps
	}
	seen := map[string]int{}
	var out []prompts.Prompt
	for _, p := range ps {
		if seen[p.TaskType] < n {
			seen[p.TaskType]++
			out = append(out, p)
		}
	}
	return out
}

type gridRow struct {
	prompt string
	plans  []string
	images []image.Image
}

func runEval(progress io.Writer, o evalOptions) (evalResult, error) {
	if o.G < 1 || o.Batch < 1 {
		return evalResult{}, fmt.Errorf("eval: g (%d) and batch (%d) must be >= 1", o.G, o.Batch)
	}
	if math.IsNaN(o.CFG) || math.IsInf(o.CFG, 0) || !(o.Temperature > 0) || math.IsInf(o.Temperature, 0) {
		return evalResult{}, fmt.Errorf("eval: cfg %v must be finite and temperature %v > 0", o.CFG, o.Temperature)
	}
	backend, err := mlx.NewBackend(o.Backend)
	if err != nil {
		return evalResult{}, fmt.Errorf("eval: %w", err)
	}
	m, err := model.LoadFile(backend, o.Checkpoint)
	if err != nil {
		return evalResult{}, fmt.Errorf("eval: %w", err)
	}
	cb, err := vq.Load(o.Codebook)
	if err != nil {
		return evalResult{}, fmt.Errorf("eval: %w", err)
	}
	if cb.K() != m.Config.ImageVocab || cb.TokensPerImage() != m.Config.ImageTokens {
		return evalResult{}, fmt.Errorf("eval: codebook %s has K=%d and %d tokens per image, the checkpoint expects %d and %d",
			o.Codebook, cb.K(), cb.TokensPerImage(), m.Config.ImageVocab, m.Config.ImageTokens)
	}
	vocab := tokenizer.New()
	if vocab.Size() != m.Config.TextVocab {
		return evalResult{}, fmt.Errorf("eval: tokenizer has %d ids, the checkpoint expects %d", vocab.Size(), m.Config.TextVocab)
	}
	all, err := prompts.ReadFile(o.Prompts)
	if err != nil {
		return evalResult{}, fmt.Errorf("eval: %w", err)
	}
	ps := limitPerType(all, o.Limit)
	if len(ps) == 0 {
		return evalResult{}, fmt.Errorf("eval: no prompts in %s", o.Prompts)
	}
	encoded := make([][]int32, len(ps))
	for i, p := range ps {
		if encoded[i], err = encode(vocab, p.Prompt); err != nil {
			return evalResult{}, fmt.Errorf("eval: prompt %d: %w", i, err)
		}
	}
	parser, err := oracle.NewParser(cb.Config())
	if err != nil {
		return evalResult{}, fmt.Errorf("eval: %w", err)
	}
	report := oracle.NewReport()
	var quality, diversity float64
	var parsedPlans, following int
	gridCount := map[string]int{}
	var grid []gridRow
	var records *json.Encoder
	if o.Samples != "" {
		f, err := os.Create(o.Samples)
		if err != nil {
			return evalResult{}, fmt.Errorf("eval: %w", err)
		}
		defer f.Close()
		records = json.NewEncoder(f)
	}
	bar := progressbar.NewOptions(len(ps), progressbar.OptionSetWriter(progress), progressbar.OptionShowCount(),
		progressbar.OptionSetItsString("prompts"), progressbar.OptionThrottle(time.Second), progressbar.OptionSetDescription("eval"))
	start := time.Now()
	for lo := 0; lo < len(ps); lo += o.Batch {
		hi := min(lo+o.Batch, len(ps))
		ids := make([]uint64, 0, hi-lo)
		for i := lo; i < hi; i++ {
			ids = append(ids, uint64(i))
		}
		samples, err := m.Sample(model.SampleRequest{Prompts: encoded[lo:hi], PromptIDs: ids, G: o.G, Seed: o.Seed,
			Temperature: o.Temperature, CFGWeight: o.CFG, NoPlan: o.NoPlan})
		if err != nil {
			return evalResult{}, fmt.Errorf("eval: %w", err)
		}
		for i := lo; i < hi; i++ {
			p := ps[i]
			distinct := map[string]bool{}
			row := gridRow{prompt: p.Prompt}
			keep := gridCount[p.TaskType] < o.GridPerType && o.Grid != ""
			for j := 0; j < o.G; j++ {
				s := samples[(i-lo)*o.G+j]
				img, err := cb.Decode(s.Codes)
				if err != nil {
					return evalResult{}, fmt.Errorf("eval: decode sample: %w", err)
				}
				res, err := parser.Score(p, img)
				if err != nil {
					return evalResult{}, fmt.Errorf("eval: score %q: %w", p.Prompt, err)
				}
				report.Add(res)
				planText := vocab.Decode(toInts(s.Plan))
				pq := plan.Quality(p, planText)
				quality += pq
				got, err := parser.Parse(img)
				if err != nil {
					return evalResult{}, fmt.Errorf("eval: parse sample: %w", err)
				}
				drawn := ""
				if len(got.Unknown) == 0 {
					drawn = plan.Canonical(got.Scene())
				}
				follows := false
				if ps, err := plan.Parse(planText, cb.Config()); err == nil && !o.NoPlan {
					parsedPlans++
					if follows = drawn != "" && drawn == plan.Canonical(ps); follows {
						following++
					}
				}
				if records != nil {
					rec := sampleRecord{Prompt: p.Prompt, TaskType: p.TaskType, Sample: j, Plan: planText, PlanQuality: pq,
						Drawn: drawn, FollowsPlan: follows, Score: res.Score}
					if err := records.Encode(rec); err != nil {
						return evalResult{}, fmt.Errorf("eval: write %s: %w", o.Samples, err)
					}
				}
				distinct[fmt.Sprint(s.Codes)] = true
				if keep {
					row.plans = append(row.plans, planText)
					row.images = append(row.images, img)
				}
			}
			diversity += float64(len(distinct)) / float64(o.G)
			if keep {
				gridCount[p.TaskType]++
				grid = append(grid, row)
			}
		}
		_ = bar.Add(hi - lo)
	}
	_ = bar.Finish()
	fmt.Fprintln(progress)
	sc := report.Scores()
	res := evalResult{
		TaskTypes: map[string]float64{}, Mean: sc["overall"], MeanByTask: sc["overall_by_task"],
		PlanQuality: quality / float64(report.N()), Diversity: diversity / float64(len(ps)),
		PlanParse: float64(parsedPlans) / float64(report.N()),
		Checks:    report.Checks(), N: report.N(), Prompts: len(ps), Checkpoint: o.Checkpoint, NoPlan: o.NoPlan,
		G: o.G, CFG: o.CFG, Temperature: o.Temperature, Seed: o.Seed, Seconds: time.Since(start).Seconds(),
	}
	if parsedPlans > 0 {
		res.ImageFollowsPlan = float64(following) / float64(parsedPlans)
	}
	for _, t := range report.TaskTypes() {
		res.TaskTypes[t] = sc[t]
	}
	if o.Grid != "" {
		if err := writeGrid(o.Grid, grid, cb.Config()); err != nil {
			return evalResult{}, fmt.Errorf("eval: %w", err)
		}
	}
	return res, nil
}

func toInts(ids []int32) []int {
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = int(id)
	}
	return out
}

func printEvalTable(w io.Writer, r evalResult) {
	mode := "with plans"
	if r.NoPlan {
		mode = "no plan"
	}
	fmt.Fprintf(w, "%s (%s, G=%d, cfg=%g, T=%g, seed=%d): %d samples of %d prompts\n",
		r.Checkpoint, mode, r.G, r.CFG, r.Temperature, r.Seed, r.N, r.Prompts)
	fmt.Fprintf(w, "%-12s %6s\n", "task type", "score")
	types := make([]string, 0, len(r.TaskTypes))
	for _, t := range prompts.TaskTypes {
		if _, ok := r.TaskTypes[t]; ok {
			types = append(types, t)
		}
	}
	for t := range r.TaskTypes {
		if !slices.Contains(types, t) {
			types = append(types, t)
		}
	}
	for _, t := range types {
		fmt.Fprintf(w, "%-12s %6.3f\n", t, r.TaskTypes[t])
	}
	fmt.Fprintf(w, "%-12s %6.3f\n", "mean", r.Mean)
	fmt.Fprintf(w, "%-12s %6.3f\n", "plan quality", r.PlanQuality)
	fmt.Fprintf(w, "%-12s %6.3f\n", "diversity", r.Diversity)
	if !r.NoPlan {
		fmt.Fprintf(w, "%-18s %6.3f\n", "plan_parse", r.PlanParse)
		fmt.Fprintf(w, "%-18s %6.3f\n", "image_follows_plan", r.ImageFollowsPlan)
	}
	for _, k := range []string{"exact_rate", "count_ok_rate", "extra_image_rate", "bound_rate", "relation_rate"} {
		if v, ok := r.Checks[k]; ok {
			fmt.Fprintf(w, "%-18s %6.3f\n", k, v)
		}
	}
}

// writeGrid draws one row per prompt: the prompt and each sample's plan on the left, the samples
// (scaled 3x) on the right.
func writeGrid(path string, rows []gridRow, cfg scene.Config) error {
	const scale, textW, pad = 3, 560, 6
	face := basicfont.Face7x13
	lineH := face.Metrics().Height.Ceil()
	side := cfg.ImageSize() * scale
	maxImgs := 0
	for _, r := range rows {
		maxImgs = max(maxImgs, len(r.images))
	}
	charsPerLine := (textW - 2*pad) / 7
	var heights []int
	var texts [][]string
	total := 0
	for _, r := range rows {
		lines := wrap("prompt: "+r.prompt, charsPerLine)
		for j, p := range r.plans {
			if p == "" {
				p = "(empty)"
			}
			lines = append(lines, wrap(fmt.Sprintf("plan %d: %s", j+1, p), charsPerLine)...)
		}
		h := max(side, len(lines)*lineH) + 2*pad
		heights, texts = append(heights, h), append(texts, lines)
		total += h
	}
	width := textW + maxImgs*(side+pad) + pad
	canvas := image.NewRGBA(image.Rect(0, 0, width, max(total, 1)))
	draw.Draw(canvas, canvas.Bounds(), image.NewUniform(color.RGBA{235, 235, 235, 255}), image.Point{}, draw.Src)
	y := 0
	for i, r := range rows {
		d := &font.Drawer{Dst: canvas, Src: image.NewUniform(color.Black), Face: face}
		for k, line := range texts[i] {
			d.Dot = fixed.P(pad, y+pad+(k+1)*lineH-3)
			d.DrawString(line)
		}
		for j, img := range r.images {
			x0 := textW + j*(side+pad)
			b := img.Bounds()
			for yy := 0; yy < side; yy++ {
				for xx := 0; xx < side; xx++ {
					canvas.Set(x0+xx, y+pad+yy, img.At(b.Min.X+xx/scale, b.Min.Y+yy/scale))
				}
			}
		}
		y += heights[i]
		for xx := 0; xx < width; xx++ {
			canvas.Set(xx, y-1, color.Gray{180})
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write grid: %w", err)
	}
	if err := scene.WritePNG(f, canvas); err != nil {
		f.Close()
		return fmt.Errorf("write grid %s: %w", path, err)
	}
	return f.Close()
}

func wrap(s string, n int) []string {
	var lines []string
	cur := ""
	for _, w := range strings.Fields(s) {
		if cur != "" && len(cur)+1+len(w) > n {
			lines = append(lines, cur)
			cur = "  " + w
			continue
		}
		if cur != "" {
			cur += " "
		}
		cur += w
	}
	return append(lines, cur)
}
