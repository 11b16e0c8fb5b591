// Package runfiles names and reads the files a run leaves in its store besides checkpoints and
// weights: the metrics (the learner's line per step, in segments), eval.json (laptop mode's oracle
// evaluation) and the kept samples (samples/step-<N>/index.json and the images it names). The
// learner writes the samples through it; the dashboard (pkg/dashboard) and the report
// (pkg/report) read all three through it, so a change of layout is a change here only.
//
// Everything read here comes from a store other processes write, possibly another party's
// bucket, so every read is bounded in size and every name taken from a request or an index is
// checked before it becomes a key.
package runfiles

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bicot-rl/bicot/pkg/store"
)

// Size bounds of what is read from a store.
const (
	// MaxMetricsBytes bounds a run's metrics, all segments together: a line is about 1.5 KB, so this is tens of thousands
	// of steps.
	MaxMetricsBytes = 64 << 20
	// MaxIndexBytes bounds one step's samples index (P*G entries of a few hundred bytes).
	MaxIndexBytes = 16 << 20
	// MaxImageBytes bounds one sample image (a 32x32 PNG is well under 4 KB).
	MaxImageBytes = 4 << 20
	// MaxEvalBytes bounds eval.json.
	MaxEvalBytes = 16 << 20
)

// ErrTooLarge is returned (wrapped) when an object exceeds its read bound.
var ErrTooLarge = errors.New("object exceeds its size bound")

// MetricsSegmentSteps is how many steps' lines one metrics segment holds. The store has no
// append: the learner rewrites the current segment each step, so a step costs at most this many
// lines of upload, not the whole history.
const MetricsSegmentSteps = 100

// MetricsPrefix is the folder of the metrics segments: metrics/<first step, 12 digits>.jsonl,
// each the lines of MetricsSegmentSteps consecutive steps, in key order = step order.
func MetricsPrefix(run string) string { return run + "/metrics/" }

// MetricsSegmentKey is the key of the segment that holds step's line.
func MetricsSegmentKey(run string, step int64) string {
	return fmt.Sprintf("%s%012d.jsonl", MetricsPrefix(run), MetricsSegmentStart(step))
}

// MetricsSegmentStart is the first step of the segment that holds step.
func MetricsSegmentStart(step int64) int64 { return step - step%MetricsSegmentSteps }

// LegacyMetricsKey is where runs of earlier versions kept all their lines in one file; it is
// still read, before the segments.
func LegacyMetricsKey(run string) string { return run + "/metrics.jsonl" }

// EvalKey is where laptop mode writes eval.json.
func EvalKey(run string) string { return run + "/eval.json" }

// ConfigKey is where laptop mode writes the run's config.yaml.
func ConfigKey(run string) string { return run + "/config.yaml" }

// SamplesPrefix is the folder of every kept step's samples.
func SamplesPrefix(run string) string { return run + "/samples/" }

// SamplesDir is the folder of one step's kept samples: the step in 12 digits, like checkpoints,
// so keys sort in step order.
func SamplesDir(run string, step int64) string {
	return fmt.Sprintf("%sstep-%012d/", SamplesPrefix(run), step)
}

// IndexName is the file in a step's samples folder that lists its groups and samples.
const IndexName = "index.json"

// IndexKey is the key of a step's samples index.
func IndexKey(run string, step int64) string { return SamplesDir(run, step) + IndexName }

// ImageName is the file name of a sample's image within its step's folder: by group (the prompt
// index, unique within a step) and sample index.
func ImageName(promptIndex, sampleIndex int) string {
	return fmt.Sprintf("p%d-s%d.png", promptIndex, sampleIndex)
}

var imageName = regexp.MustCompile(`^p[0-9]{1,9}-s[0-9]{1,4}\.png$`)

// ValidImageName reports whether name is one ImageName makes: the only names a reader turns
// into keys, so a request cannot reach outside the samples folder.
func ValidImageName(name string) bool { return imageName.MatchString(name) }

// StepSamples is a kept step's index.json.
type StepSamples struct {
	Run  string `json:"run"`
	Step int64  `json:"step"`
	// PolicyVersion is the version the step's update started from; each sample names the version
	// it was drawn with (the same when strictly on-policy, up to staleness versions older else).
	PolicyVersion int64         `json:"policy_version"`
	Groups        []SampleGroup `json:"groups"`
	Time          time.Time     `json:"time"`
}

// SampleGroup is one prompt's G samples.
type SampleGroup struct {
	PromptIndex int    `json:"prompt_index"`
	Prompt      string `json:"prompt"`
	TaskType    string `json:"task_type,omitempty"`
	// Filtered: the group's rewards tied (grpo.filter_zero_std) and it was not trained; its
	// advantages are 0.
	Filtered bool           `json:"filtered,omitempty"`
	Samples  []SampleRecord `json:"samples"`
}

// SampleRecord is one sample of a group.
type SampleRecord struct {
	SampleIndex int `json:"sample_index"`
	// Plan is the semantic-level chain of thought, decoded with the tokenizer.
	Plan          string             `json:"plan"`
	PlanTruncated bool               `json:"plan_truncated,omitempty"`
	Reward        float64            `json:"reward"`
	PerExpert     map[string]float64 `json:"per_expert,omitempty"`
	Advantage     float64            `json:"advantage"`
	PolicyVersion int64              `json:"policy_version"`
	// Image is the PNG's file name in the step's folder (ImageName).
	Image string `json:"image"`
}

// Validate checks what a reader relies on: the step, and image names that stay in the folder.
func (s StepSamples) Validate() error {
	if s.Step < 0 {
		return fmt.Errorf("samples index: step %d", s.Step)
	}
	for _, g := range s.Groups {
		for _, smp := range g.Samples {
			if !ValidImageName(smp.Image) {
				return fmt.Errorf("samples index step %d prompt %d: image name %q", s.Step, g.PromptIndex, smp.Image)
			}
		}
	}
	return nil
}

// readAll reads key up to limit bytes.
func readAll(ctx context.Context, st store.Store, key string, limit int64) ([]byte, error) {
	rc, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(store.ContextReader(ctx, rc), limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("read %s: %w (%d bytes)", key, ErrTooLarge, limit)
	}
	return b, nil
}

// ReadMetrics returns the run's metrics records (the learner's StepRecord lines), one JSON object
// per learned step in step order: the legacy metrics.jsonl, then every segment. Blank and
// unparseable lines (a line cut short by a crash) are left out. Every reader of the metrics goes
// through here: this is the one place that knows how the learner stores them. A run without
// metrics yet gives an error wrapping store.ErrNotFound.
func ReadMetrics(ctx context.Context, st store.Store, run string) ([]json.RawMessage, error) {
	keys := []string{}
	if _, err := st.Stat(ctx, LegacyMetricsKey(run)); err == nil {
		keys = append(keys, LegacyMetricsKey(run))
	}
	segs, err := st.List(ctx, MetricsPrefix(run))
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	for _, o := range segs {
		if strings.HasSuffix(o.Key, ".jsonl") {
			keys = append(keys, o.Key)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("metrics of run %s: %w", run, store.ErrNotFound)
	}
	var out []json.RawMessage
	budget := int64(MaxMetricsBytes)
	for _, key := range keys {
		b, err := readAll(ctx, st, key, budget)
		if errors.Is(err, store.ErrNotFound) {
			continue // a segment dropped by a resuming learner since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
		budget -= int64(len(b))
		for line := range bytes.SplitSeq(b, []byte("\n")) {
			line = bytes.TrimSpace(line)
			if len(line) == 0 || line[0] != '{' || !json.Valid(line) {
				continue
			}
			out = append(out, json.RawMessage(line))
		}
	}
	return out, nil
}

// MetricsStep is the step of a metrics record (-1 when it has none).
func MetricsStep(rec json.RawMessage) int64 {
	var r struct {
		Step *int64 `json:"step"`
	}
	if json.Unmarshal(rec, &r) != nil || r.Step == nil {
		return -1
	}
	return *r.Step
}

// ReadEval returns eval.json as stored (not found: an error wrapping store.ErrNotFound).
func ReadEval(ctx context.Context, st store.Store, run string) (json.RawMessage, error) {
	b, err := readAll(ctx, st, EvalKey(run), MaxEvalBytes)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("eval: %s is not JSON", EvalKey(run))
	}
	return b, nil
}

// ReadConfig returns the run's config.yaml as laptop mode records it (not found: an error
// wrapping store.ErrNotFound).
func ReadConfig(ctx context.Context, st store.Store, run string) ([]byte, error) {
	return readAll(ctx, st, ConfigKey(run), 1<<20)
}

// SampleSteps lists the steps whose samples were kept, ascending. A step counts once its index
// is written, which the learner does after its images.
func SampleSteps(ctx context.Context, st store.Store, run string) ([]int64, error) {
	prefix := SamplesPrefix(run)
	objs, err := st.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("samples: list %s: %w", prefix, err)
	}
	var steps []int64
	for _, o := range objs {
		rest, ok := strings.CutPrefix(o.Key, prefix+"step-")
		if !ok {
			continue
		}
		num, ok := strings.CutSuffix(rest, "/"+IndexName)
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n < 0 {
			continue
		}
		steps = append(steps, n)
	}
	slices.Sort(steps)
	return slices.Compact(steps), nil
}

// ReadSamples returns a kept step's index, validated.
func ReadSamples(ctx context.Context, st store.Store, run string, step int64) (StepSamples, error) {
	var s StepSamples
	b, err := readAll(ctx, st, IndexKey(run, step), MaxIndexBytes)
	if err != nil {
		return s, fmt.Errorf("samples of step %d: %w", step, err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("samples of step %d: %w", step, err)
	}
	if err := s.Validate(); err != nil {
		return s, err
	}
	return s, nil
}

// pngMagic starts every PNG file.
var pngMagic = []byte("\x89PNG\r\n\x1a\n")

// ReadImage returns a kept sample's PNG; name must be a valid image name.
func ReadImage(ctx context.Context, st store.Store, run string, step int64, name string) ([]byte, error) {
	if !ValidImageName(name) {
		return nil, fmt.Errorf("sample image %q: %w", name, store.ErrNotFound)
	}
	b, err := readAll(ctx, st, SamplesDir(run, step)+name, MaxImageBytes)
	if err != nil {
		return nil, fmt.Errorf("sample image: %w", err)
	}
	if !bytes.HasPrefix(b, pngMagic) {
		return nil, fmt.Errorf("sample image %s of step %d is not a PNG", name, step)
	}
	return b, nil
}

// PutSamples writes a step's kept samples: every image first, then the index, so a reader that
// finds the index finds the images it names. images maps image names to PNG bytes; each must be
// named by the index and every name in the index must be given.
func PutSamples(ctx context.Context, st store.Store, idx StepSamples, images map[string][]byte) error {
	if err := idx.Validate(); err != nil {
		return err
	}
	named := map[string]bool{}
	for _, g := range idx.Groups {
		for _, s := range g.Samples {
			if named[s.Image] {
				return fmt.Errorf("samples of step %d: image %s named twice", idx.Step, s.Image)
			}
			named[s.Image] = true
			if _, ok := images[s.Image]; !ok {
				return fmt.Errorf("samples of step %d: no image %s", idx.Step, s.Image)
			}
		}
	}
	if len(images) != len(named) {
		return fmt.Errorf("samples of step %d: %d images for %d samples", idx.Step, len(images), len(named))
	}
	dir := SamplesDir(idx.Run, idx.Step)
	for _, name := range slices.Sorted(maps.Keys(images)) {
		b := images[name]
		if err := st.Put(ctx, dir+name, bytes.NewReader(b), int64(len(b))); err != nil {
			return fmt.Errorf("samples of step %d: %w", idx.Step, err)
		}
	}
	b, err := json.MarshalIndent(idx, "", " ")
	if err != nil {
		return fmt.Errorf("samples of step %d: %w", idx.Step, err)
	}
	if err := st.Put(ctx, dir+IndexName, bytes.NewReader(b), int64(len(b))); err != nil {
		return fmt.Errorf("samples of step %d: %w", idx.Step, err)
	}
	return nil
}
