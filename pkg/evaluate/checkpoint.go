package evaluate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"

	"github.com/gomlx/gomlx/backends"

	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// CheckpointOptions are the settings of `learner eval`: which policy, codebook and prompts, how
// to sample, and which files to write beside the result.
type CheckpointOptions struct {
	Checkpoint, Prompts, Codebook string
	// NoPlan samples without a plan (the token-only ablation).
	NoPlan bool
	// ExclusiveCells samples plans that never name a cell twice.
	ExclusiveCells bool
	// Limit keeps the first N prompts of each task type (0: all); G samples per prompt, Batch
	// prompts sampled together.
	Limit, G, Batch  int
	Seed             uint64
	CFG, Temperature float64
	// Grid, when set, is a PNG of the first GridPerType prompts of each task type: prompt and
	// plans on the left, the samples on the right.
	Grid        string
	GridPerType int
	// Samples, when set, is a JSONL file with a SampleRecord per sample.
	Samples string
	// Progress, when set, is called with done 0 before the first prompt (so a progress bar can
	// start its clock when sampling does) and after every batch.
	Progress func(done, total int)
}

// DefaultCheckpointOptions evaluate the shipped base policy on the evaluation prompts as the
// README's tables do.
func DefaultCheckpointOptions() CheckpointOptions {
	return CheckpointOptions{
		Checkpoint: "models/base.safetensors", Prompts: "data/prompts/eval.jsonl", Codebook: "models/codebook.vq",
		G: 4, Batch: 8, GridPerType: 2, Seed: 1, CFG: 3, Temperature: 1,
	}
}

// Validate rejects the sampling settings Run would reject, before any file is read.
func (o CheckpointOptions) Validate() error {
	if o.G < 1 || o.Batch < 1 {
		return fmt.Errorf("eval: g (%d) and batch (%d) must be >= 1", o.G, o.Batch)
	}
	if math.IsNaN(o.CFG) || math.IsInf(o.CFG, 0) || !(o.Temperature > 0) || math.IsInf(o.Temperature, 0) {
		return fmt.Errorf("eval: cfg %v must be finite and temperature %v > 0", o.CFG, o.Temperature)
	}
	return nil
}

// SampleRecord is one line of the samples file: what the policy wrote and drew for a prompt.
type SampleRecord struct {
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

// LoadPolicy loads a policy checkpoint onto backend and the codebook its image tokens index.
func LoadPolicy(backend backends.Backend, checkpoint, codebook string) (*model.Model, *vq.Codebook, error) {
	m, err := model.LoadFile(backend, checkpoint)
	if err != nil {
		return nil, nil, err
	}
	cb, err := vq.Load(codebook)
	if err != nil {
		return nil, nil, err
	}
	return m, cb, nil
}

// Checkpoint evaluates the checkpoint o names on backend (Run with o's sampling settings) and
// writes the grid and samples files o asks for. It stops after the batch during which ctx ends.
func Checkpoint(ctx context.Context, backend backends.Backend, o CheckpointOptions) (rep Report, err error) {
	if err := o.Validate(); err != nil {
		return Report{}, err
	}
	m, cb, err := LoadPolicy(backend, o.Checkpoint, o.Codebook)
	if err != nil {
		return Report{}, fmt.Errorf("eval: %w", err)
	}
	ps, err := prompts.ReadFile(o.Prompts)
	if err != nil {
		return Report{}, fmt.Errorf("eval: %w", err)
	}
	records, err := createRecords(o.Samples)
	if err != nil {
		return Report{}, fmt.Errorf("eval: %w", err)
	}
	defer func() { err = errors.Join(err, records.close()) }()
	var grid *gridRows
	if o.Grid != "" {
		grid = &gridRows{perType: o.GridPerType, count: map[string]int{}}
	}
	observe := func(s Sample) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := records.write(s); err != nil {
			return err
		}
		grid.add(s)
		return nil
	}
	if o.Progress != nil {
		o.Progress(0, len(LimitPerType(ps, o.Limit)))
	}
	res, err := Run(m, cb, ps, Options{LimitPerType: o.Limit, G: o.G, Batch: o.Batch, Seed: o.Seed,
		Temperature: o.Temperature, CFGWeight: o.CFG, NoPlan: o.NoPlan, ExclusiveCells: o.ExclusiveCells,
		Observe: observe, Progress: o.Progress})
	if err != nil {
		return Report{}, err
	}
	if grid != nil {
		if err := writeGrid(o.Grid, grid.rows, cb.Config()); err != nil {
			return Report{}, fmt.Errorf("eval: %w", err)
		}
	}
	return Report{Result: res, Checkpoint: o.Checkpoint, NoPlan: o.NoPlan, ExclusiveCells: o.ExclusiveCells, G: o.G, CFG: o.CFG,
		Temperature: o.Temperature, Seed: o.Seed}, nil
}

// records writes SampleRecords to a file; the zero value (no file asked for) writes nothing.
type records struct {
	path string
	f    *os.File
	enc  *json.Encoder
}

func createRecords(path string) (*records, error) {
	if path == "" {
		return &records{}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &records{path: path, f: f, enc: json.NewEncoder(f)}, nil
}

func (r *records) write(s Sample) error {
	if r.enc == nil {
		return nil
	}
	rec := SampleRecord{Prompt: s.Prompt.Prompt, TaskType: s.Prompt.TaskType, Sample: s.Index, Plan: s.Plan,
		PlanQuality: s.PlanQuality, Drawn: s.Drawn, FollowsPlan: s.FollowsPlan, Score: s.Score}
	if err := r.enc.Encode(rec); err != nil {
		return fmt.Errorf("write %s: %w", r.path, err)
	}
	return nil
}

func (r *records) close() error {
	if r.f == nil {
		return nil
	}
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("eval: write %s: %w", r.path, err)
	}
	return nil
}
