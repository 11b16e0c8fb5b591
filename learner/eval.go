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
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/bicot-rl/bicot/pkg/evaluate"
	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/scene"
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

// evalResult is the JSON the eval command writes: evaluate.Result (the oracle's mean score per
// task type and overall, plan quality, image-follows-plan, diversity, checks) and the settings
// that produced it.
type evalResult struct {
	evaluate.Result
	Checkpoint  string  `json:"checkpoint"`
	NoPlan      bool    `json:"no_plan"`
	G           int     `json:"g"`
	CFG         float64 `json:"cfg"`
	Temperature float64 `json:"temperature"`
	Seed        uint64  `json:"seed"`
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
	ps, err := prompts.ReadFile(o.Prompts)
	if err != nil {
		return evalResult{}, fmt.Errorf("eval: %w", err)
	}
	var records *json.Encoder
	if o.Samples != "" {
		f, err := os.Create(o.Samples)
		if err != nil {
			return evalResult{}, fmt.Errorf("eval: %w", err)
		}
		defer f.Close()
		records = json.NewEncoder(f)
	}
	gridCount := map[string]int{}
	var grid []gridRow
	observe := func(s evaluate.Sample) error {
		if records != nil {
			rec := sampleRecord{Prompt: s.Prompt.Prompt, TaskType: s.Prompt.TaskType, Sample: s.Index, Plan: s.Plan,
				PlanQuality: s.PlanQuality, Drawn: s.Drawn, FollowsPlan: s.FollowsPlan, Score: s.Score}
			if err := records.Encode(rec); err != nil {
				return fmt.Errorf("write %s: %w", o.Samples, err)
			}
		}
		if o.Grid == "" {
			return nil
		}
		if s.Index == 0 {
			if gridCount[s.Prompt.TaskType] >= o.GridPerType {
				return nil
			}
			gridCount[s.Prompt.TaskType]++
			grid = append(grid, gridRow{prompt: s.Prompt.Prompt})
		} else if len(grid) == 0 || grid[len(grid)-1].prompt != s.Prompt.Prompt || len(grid[len(grid)-1].plans) != s.Index {
			return nil // this prompt has no row in the grid
		}
		row := &grid[len(grid)-1]
		row.plans, row.images = append(row.plans, s.Plan), append(row.images, s.Image)
		return nil
	}
	total := len(evaluate.LimitPerType(ps, o.Limit))
	bar := progressbar.NewOptions(total, progressbar.OptionSetWriter(progress), progressbar.OptionShowCount(),
		progressbar.OptionSetItsString("prompts"), progressbar.OptionThrottle(time.Second), progressbar.OptionSetDescription("eval"))
	res, err := evaluate.Run(m, cb, ps, evaluate.Options{LimitPerType: o.Limit, G: o.G, Batch: o.Batch, Seed: o.Seed,
		Temperature: o.Temperature, CFGWeight: o.CFG, NoPlan: o.NoPlan, Observe: observe,
		Progress: func(done, _ int) { _ = bar.Set(done) }})
	if err != nil {
		return evalResult{}, err
	}
	_ = bar.Finish()
	fmt.Fprintln(progress)
	if o.Grid != "" {
		if err := writeGrid(o.Grid, grid, cb.Config()); err != nil {
			return evalResult{}, fmt.Errorf("eval: %w", err)
		}
	}
	return evalResult{Result: res, Checkpoint: o.Checkpoint, NoPlan: o.NoPlan, G: o.G, CFG: o.CFG,
		Temperature: o.Temperature, Seed: o.Seed}, nil
}

func printEvalTable(w io.Writer, r evalResult) {
	mode := "with plans"
	if r.NoPlan {
		mode = "no plan"
	}
	fmt.Fprintf(w, "%s (%s, G=%d, cfg=%g, T=%g, seed=%d): %d samples of %d prompts\n",
		r.Checkpoint, mode, r.G, r.CFG, r.Temperature, r.Seed, r.N, r.Prompts)
	fmt.Fprintf(w, "%-12s %6s\n", "task type", "score")
	for _, t := range prompts.InReportOrder(r.TaskTypes) {
		fmt.Fprintf(w, "%-12s %6.3f\n", t, r.TaskTypes[t])
	}
	fmt.Fprintf(w, "%-12s %6.3f\n", "mean", r.Mean)
	fmt.Fprintf(w, "%-12s %6.3f\n", "plan quality", r.PlanQuality)
	fmt.Fprintf(w, "%-12s %6.3f\n", "diversity", r.Diversity)
	fmt.Fprintf(w, "%-12s %6.3f\n", "distinct", r.DistinctScenes)
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
