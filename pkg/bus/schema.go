package bus

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/prompts"
)

// SchemaVersion is the version of every message this code writes (field "v"). A reader accepts
// versions 1..SchemaVersion and refuses newer ones (an old worker must not guess at a newer
// message); additions that old readers may ignore do not bump it, changes of meaning do.
const SchemaVersion = 1

// Type names carried in the Bicot-Type header, so a misrouted message is recognised before
// decoding.
const (
	TypeBatchTask      = "batch_task"
	TypeSample         = "sample"
	TypeScoredSample   = "scored_sample"
	TypePolicyAnnounce = "policy_announce"
	TypeDeadLetter     = "dead_letter"
	TypeEvent          = "event"
)

// Message is what the publish helpers send.
type Message interface {
	// MsgType is the Bicot-Type header value.
	MsgType() string
	// MsgID is the Nats-Msg-Id for JetStream de-duplication ("" for none).
	MsgID() string
	// Validate reports the first thing wrong with the message.
	Validate() error
}

// SamplingParams are the rollout's sampling settings for a batch.
type SamplingParams struct {
	Temperature float64 `json:"temperature"`
	// CFGWeight is the classifier-free guidance weight for image tokens (1 = no guidance).
	CFGWeight float64 `json:"cfg_weight"`
	// MaxPlanTokens bounds the semantic-level CoT (text plan); 0 = no plan is sampled.
	MaxPlanTokens int `json:"max_plan_tokens"`
	// TopK restricts sampling to the k most likely tokens; 0 = off.
	TopK int `json:"top_k,omitempty"`
	// ImageLogp says which distribution the image tokens' logp_old is recorded under:
	// config.ImageLogpGuided ("" too) for the guided one they are drawn from, config.ImageLogpConditional for
	// the conditional logits alone, which is what a learner training the conditional logits needs.
	ImageLogp string `json:"image_logp,omitempty"`
	// ExclusiveCells: a plan never names a cell twice (config.Sampling.ExclusiveCells); the
	// recorded plan log-probs are under that masked distribution.
	ExclusiveCells bool `json:"exclusive_cells,omitempty"`
}

// Validate checks the ranges.
func (s SamplingParams) Validate() error {
	switch {
	case !finite(s.Temperature) || s.Temperature <= 0:
		return fmt.Errorf("temperature %v: want a finite value > 0", s.Temperature)
	case !finite(s.CFGWeight) || s.CFGWeight < 0:
		return fmt.Errorf("cfg_weight %v: want a finite value >= 0", s.CFGWeight)
	case s.MaxPlanTokens < 0:
		return fmt.Errorf("max_plan_tokens %d: want >= 0", s.MaxPlanTokens)
	case s.TopK < 0:
		return fmt.Errorf("top_k %d: want >= 0", s.TopK)
	case !config.ValidImageLogp(s.ImageLogp):
		return fmt.Errorf("image_logp %q: want %q or %q", s.ImageLogp, config.ImageLogpGuided, config.ImageLogpConditional)
	}
	return nil
}

// PromptRef is one prompt of a batch with its global index in the prompt data set.
type PromptRef struct {
	Index  int            `json:"index"`
	Prompt prompts.Prompt `json:"prompt"`
}

// BatchTask asks a rollout worker for G samples of each prompt under one policy version.
type BatchTask struct {
	V             int            `json:"v"`
	Run           string         `json:"run"`
	Step          int64          `json:"step"`
	PolicyVersion int64          `json:"policy_version"`
	Prompts       []PromptRef    `json:"prompts"`
	G             int            `json:"g"`
	Seed          uint64         `json:"seed"`
	Sampling      SamplingParams `json:"sampling"`
	// Attempt counts re-dispatches of a straggling batch; it is part of the message id so a
	// deliberate re-dispatch is not dropped as a duplicate.
	Attempt int `json:"attempt,omitempty"`
}

func (*BatchTask) MsgType() string { return TypeBatchTask }

// MsgID is run/step/task/<first prompt index>+<count>/<attempt>.
func (t *BatchTask) MsgID() string {
	first := -1
	if len(t.Prompts) > 0 {
		first = t.Prompts[0].Index
	}
	return fmt.Sprintf("%s/%d/task/%d+%d/%d", t.Run, t.Step, first, len(t.Prompts), t.Attempt)
}

// Validate checks header fields, group size, prompts and sampling parameters.
func (t *BatchTask) Validate() error {
	if err := header(t.V, t.Run); err != nil {
		return fmt.Errorf("batch task: %w", err)
	}
	where := fmt.Sprintf("batch task %s step %d", t.Run, t.Step)
	switch {
	case t.Step < 0:
		return fmt.Errorf("%s: negative step", where)
	case t.PolicyVersion < 0:
		return fmt.Errorf("%s: negative policy_version %d", where, t.PolicyVersion)
	case t.G < 1 || t.G > config.MaxGroupSize:
		return fmt.Errorf("%s: group size g=%d, want 1..%d", where, t.G, config.MaxGroupSize)
	case len(t.Prompts) == 0 || len(t.Prompts) > config.MaxPromptsPerTask:
		return fmt.Errorf("%s: %d prompts, want 1..%d", where, len(t.Prompts), config.MaxPromptsPerTask)
	case t.Attempt < 0:
		return fmt.Errorf("%s: negative attempt", where)
	}
	seen := make(map[int]bool, len(t.Prompts))
	for i, p := range t.Prompts {
		if p.Index < 0 {
			return fmt.Errorf("%s: prompts[%d] has negative index %d", where, i, p.Index)
		}
		if seen[p.Index] {
			return fmt.Errorf("%s: prompt index %d appears twice", where, p.Index)
		}
		seen[p.Index] = true
		if strings.TrimSpace(p.Prompt.Prompt) == "" {
			return fmt.Errorf("%s: prompts[%d] (index %d) has empty prompt text", where, i, p.Index)
		}
	}
	if err := t.Sampling.Validate(); err != nil {
		return fmt.Errorf("%s: sampling: %w", where, err)
	}
	return nil
}

// Sample is one rollout: the plan (semantic-level CoT) and image (token-level CoT) a policy
// version sampled for a prompt, with the log-probabilities recorded at sampling time (with CFG, as
// sampled), which the learner uses as logp_old.
type Sample struct {
	V             int    `json:"v"`
	Run           string `json:"run"`
	Step          int64  `json:"step"`
	PromptIndex   int    `json:"prompt_index"`
	SampleIndex   int    `json:"sample_index"`
	G             int    `json:"g"`
	PolicyVersion int64  `json:"policy_version"`
	// PlanTokens may be padded past PlanLen (the tokens up to and including end-of-text); only
	// the first PlanLen count. PlanLogp has one entry per PlanTokens entry.
	PlanTokens []int32   `json:"plan_tokens"`
	PlanLogp   []float32 `json:"plan_logp"`
	PlanLen    int       `json:"plan_len"`
	// PlanTruncated: the plan hit max_plan_tokens without end-of-text.
	PlanTruncated bool `json:"plan_truncated,omitempty"`
	// ImageTokens always has the full image length (an image has no end-of-sequence; hitting the
	// length is normal, not truncation).
	ImageTokens []int32        `json:"image_tokens"`
	ImageLogp   []float32      `json:"image_logp"`
	Prompt      prompts.Prompt `json:"prompt"`
	// PNG of the decoded image, optional: reward workers decode the tokens themselves when absent.
	PNG []byte `json:"png,omitempty"`
	// Worker that produced the sample (for diagnostics).
	Worker string `json:"worker,omitempty"`
	// Attempt is the dispatch attempt of the task that produced the sample. It is part of the
	// message id, so a group handed out again (a straggler, or the steps a restarted learner lost)
	// is not dropped by JetStream's de-duplication as a copy of the first attempt's samples; the
	// learner still keeps one sample per key.
	Attempt int `json:"attempt,omitempty"`
}

func (*Sample) MsgType() string { return TypeSample }

// Key is the sample's identity: run/step/prompt/sample.
func (s *Sample) Key() string {
	return SampleKey(s.Run, s.Step, s.PromptIndex, s.SampleIndex)
}

// MsgID is the sample key, with the attempt after the first: run/step/prompt/sample[/aN].
func (s *Sample) MsgID() string {
	if s.Attempt > 0 {
		return fmt.Sprintf("%s/a%d", s.Key(), s.Attempt)
	}
	return s.Key()
}

// SampleKey formats (run, step, prompt, sample) as the wire's sample key.
func SampleKey(run string, step int64, prompt, sample int) string {
	return fmt.Sprintf("%s/%d/%d/%d", run, step, prompt, sample)
}

// Validate checks identities, lengths, token ids and that log-probabilities are finite and <= 0.
func (s *Sample) Validate() error {
	if err := header(s.V, s.Run); err != nil {
		return fmt.Errorf("sample: %w", err)
	}
	where := "sample " + s.Key()
	switch {
	case s.Step < 0:
		return fmt.Errorf("%s: negative step", where)
	case s.PromptIndex < 0:
		return fmt.Errorf("%s: negative prompt_index", where)
	case s.G < 1 || s.G > config.MaxGroupSize:
		return fmt.Errorf("%s: group size g=%d, want 1..%d", where, s.G, config.MaxGroupSize)
	case s.SampleIndex < 0 || s.SampleIndex >= s.G:
		return fmt.Errorf("%s: sample_index %d outside group of %d", where, s.SampleIndex, s.G)
	case s.PolicyVersion < 0:
		return fmt.Errorf("%s: negative policy_version", where)
	case s.Attempt < 0:
		return fmt.Errorf("%s: negative attempt", where)
	case len(s.PlanLogp) != len(s.PlanTokens):
		return fmt.Errorf("%s: %d plan log-probs for %d plan tokens", where, len(s.PlanLogp), len(s.PlanTokens))
	case s.PlanLen < 0 || s.PlanLen > len(s.PlanTokens):
		return fmt.Errorf("%s: plan_len %d outside 0..%d", where, s.PlanLen, len(s.PlanTokens))
	case len(s.ImageTokens) == 0:
		return fmt.Errorf("%s: no image tokens", where)
	case len(s.ImageLogp) != len(s.ImageTokens):
		return fmt.Errorf("%s: %d image log-probs for %d image tokens", where, len(s.ImageLogp), len(s.ImageTokens))
	case strings.TrimSpace(s.Prompt.Prompt) == "":
		return fmt.Errorf("%s: empty prompt text", where)
	}
	if err := checkTokens(s.PlanTokens[:s.PlanLen]); err != nil {
		return fmt.Errorf("%s: plan_tokens: %w", where, err)
	}
	if err := checkTokens(s.ImageTokens); err != nil {
		return fmt.Errorf("%s: image_tokens: %w", where, err)
	}
	if err := checkLogp(s.PlanLogp[:s.PlanLen]); err != nil {
		return fmt.Errorf("%s: plan_logp: %w", where, err)
	}
	if err := checkLogp(s.ImageLogp); err != nil {
		return fmt.Errorf("%s: image_logp: %w", where, err)
	}
	if len(s.PNG) > 0 && !strings.HasPrefix(string(s.PNG[:min(8, len(s.PNG))]), "\x89PNG\r\n\x1a\n") {
		return fmt.Errorf("%s: png field is not a PNG image", where)
	}
	return nil
}

// ScoredSample is a Sample with its reward: the ensemble's total and each expert's part.
type ScoredSample struct {
	Sample
	Reward    float64            `json:"reward"`
	PerExpert map[string]float64 `json:"per_expert,omitempty"`
	// Scorer identifies the reward worker (diagnostics).
	Scorer string `json:"scorer,omitempty"`
}

func (*ScoredSample) MsgType() string { return TypeScoredSample }

// Validate checks the sample and that every reward is finite.
func (s *ScoredSample) Validate() error {
	if err := s.Sample.Validate(); err != nil {
		return fmt.Errorf("scored %w", err)
	}
	if !finite(s.Reward) || math.Abs(s.Reward) > MaxAbsReward {
		return fmt.Errorf("scored sample %s: reward is %v, want a finite value within ±%g", s.Key(), s.Reward, float64(MaxAbsReward))
	}
	for name, r := range s.PerExpert {
		if name == "" {
			return fmt.Errorf("scored sample %s: expert with empty name", s.Key())
		}
		if !finite(r) || math.Abs(r) > MaxAbsReward {
			return fmt.Errorf("scored sample %s: expert %q reward is %v, want a finite value within ±%g", s.Key(), name, r, float64(MaxAbsReward))
		}
	}
	return nil
}

// PolicyAnnounce tells every worker that a policy version is available in the object store.
type PolicyAnnounce struct {
	V       int    `json:"v"`
	Run     string `json:"run"`
	Version int64  `json:"version"`
	Step    int64  `json:"step"`
	// WeightsKey is the object-store key of the weights; SHA256 their hex digest.
	WeightsKey string    `json:"weights_key"`
	SHA256     string    `json:"sha256"`
	Time       time.Time `json:"time,omitzero"`
	// Learner is the announcing learner's incarnation: versions a dead learner announced past
	// its checkpoint are forgotten by workers once its successor announces. Repeat counts
	// periodic re-announcements of the same version.
	Learner string `json:"learner,omitempty"`
	Repeat  int    `json:"repeat,omitempty"`
	// Final: the run ends with this policy before its step count (the learner's time budget);
	// step Step is never trained.
	Final bool `json:"final,omitempty"`
}

func (*PolicyAnnounce) MsgType() string { return TypePolicyAnnounce }

// MsgID is run/policy/<version>[/<learner>][/r<repeat>]: a retried publish is dropped, while a
// periodic re-announcement and a restarted learner's announcement of a version its predecessor
// announced are kept (the newest message of the stream is what late joiners read).
func (p *PolicyAnnounce) MsgID() string {
	id := fmt.Sprintf("%s/policy/%d", p.Run, p.Version)
	if p.Learner != "" {
		id += "/" + p.Learner
	}
	if p.Repeat > 0 {
		id += fmt.Sprintf("/r%d", p.Repeat)
	}
	return id
}

// Validate checks the version, key and digest.
func (p *PolicyAnnounce) Validate() error {
	if err := header(p.V, p.Run); err != nil {
		return fmt.Errorf("policy announce: %w", err)
	}
	where := fmt.Sprintf("policy announce %s v%d", p.Run, p.Version)
	switch {
	case p.Version < 0:
		return fmt.Errorf("%s: negative version", where)
	case p.Step < 0:
		return fmt.Errorf("%s: negative step", where)
	case p.WeightsKey == "":
		return fmt.Errorf("%s: empty weights_key", where)
	}
	if b, err := hex.DecodeString(p.SHA256); err != nil || len(b) != 32 {
		return fmt.Errorf("%s: sha256 %q is not 64 hex digits", where, p.SHA256)
	}
	return nil
}

// DeadLetter records a message a pool gave up on, with why, for inspection and replay.
type DeadLetter struct {
	V          int               `json:"v"`
	Run        string            `json:"run"`
	Stream     string            `json:"stream"`
	Consumer   string            `json:"consumer"`
	Subject    string            `json:"subject"`
	Sequence   uint64            `json:"sequence"`
	Deliveries uint64            `json:"deliveries"`
	Error      string            `json:"error"`
	Headers    map[string]string `json:"headers,omitempty"`
	Data       []byte            `json:"data"`
	Time       time.Time         `json:"time,omitzero"`
}

func (*DeadLetter) MsgType() string { return TypeDeadLetter }

// MsgID is dead/<stream>/<sequence>: one dead letter per original message.
func (d *DeadLetter) MsgID() string { return fmt.Sprintf("dead/%s/%d", d.Stream, d.Sequence) }

// Validate checks that the record names its origin and reason.
func (d *DeadLetter) Validate() error {
	if err := header(d.V, d.Run); err != nil {
		return fmt.Errorf("dead letter: %w", err)
	}
	switch {
	case d.Stream == "" || d.Subject == "":
		return errors.New("dead letter: missing stream or subject")
	case d.Error == "":
		return fmt.Errorf("dead letter %s/%d: missing error", d.Stream, d.Sequence)
	}
	return nil
}

// MaxWorkerID bounds a worker id's length.
const MaxWorkerID = 256

// Event is progress reported by a worker to the coordinator.
type Event struct {
	V      int    `json:"v"`
	Run    string `json:"run"`
	Kind   string `json:"kind"`
	Worker string `json:"worker"`
	// Role: rollout, reward, learner.
	Role          string    `json:"role,omitempty"`
	Step          int64     `json:"step,omitempty"`
	PolicyVersion int64     `json:"policy_version,omitempty"`
	Count         int       `json:"count,omitempty"`
	Message       string    `json:"message,omitempty"`
	Time          time.Time `json:"time,omitzero"`
	// ID, when set, de-duplicates the event (e.g. worker/step/task_done).
	ID string `json:"id,omitempty"`
}

func (*Event) MsgType() string { return TypeEvent }

// MsgID is the event's ID (events without one are not de-duplicated).
func (e *Event) MsgID() string { return e.ID }

// Validate checks the header, kind and worker.
func (e *Event) Validate() error {
	if err := header(e.V, e.Run); err != nil {
		return fmt.Errorf("event: %w", err)
	}
	switch {
	case e.Kind == "":
		return fmt.Errorf("event from %q: empty kind", e.Worker)
	case e.Worker == "":
		return fmt.Errorf("event %s: empty worker", e.Kind)
	case len(e.Worker) > MaxWorkerID:
		return fmt.Errorf("event %s: worker id of %d bytes, longer than %d", e.Kind, len(e.Worker), MaxWorkerID)
	case !ValidRole(e.Role):
		return fmt.Errorf("event %s from %q: role %q is not rollout, reward or learner", e.Kind, e.Worker, e.Role)
	}
	return nil
}

func header(v int, run string) error {
	if v < 1 {
		return fmt.Errorf("schema version v=%d missing or invalid", v)
	}
	if v > SchemaVersion {
		return fmt.Errorf("schema version v=%d is newer than this reader (%d)", v, SchemaVersion)
	}
	return config.ValidateRunID(run)
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

func checkTokens(ts []int32) error {
	for i, t := range ts {
		if t < 0 {
			return fmt.Errorf("token %d is negative (%d)", i, t)
		}
	}
	return nil
}

// logpSlack tolerates rounding that leaves a log-probability of a certain token a hair above 0.
const logpSlack = 1e-4

func checkLogp(ls []float32) error {
	for i, l := range ls {
		x := float64(l)
		if !finite(x) {
			return fmt.Errorf("entry %d is %v", i, x)
		}
		if x > logpSlack {
			return fmt.Errorf("entry %d is %v > 0, not a log-probability", i, x)
		}
		if x < LogpFloor {
			return fmt.Errorf("entry %d is %v, below the floor %v of a sampled token's log-probability", i, x, LogpFloor)
		}
	}
	return nil
}

// LogpFloor bounds a recorded log-probability from below. A sampled token is never that unlikely
// (e^-80 ~ 1e-35), and the update's ratio exp(logp - logp_old) stays finite in float32 for any
// logp_old above it, so a message below it is refused rather than trained into NaN.
const LogpFloor = -80

// MaxAbsReward bounds a reward's magnitude: the ensembles' rewards are weighted sums of scores in
// [0, 1], so anything near it is not a reward, and the group's mean and spread of G such values
// cannot overflow.
const MaxAbsReward = 1e6

// Encode validates m and marshals it to JSON.
func Encode(m Message) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.MsgType(), err)
	}
	return b, nil
}

// Decode unmarshals data into m and validates it.
func Decode(data []byte, m Message) error {
	if err := json.Unmarshal(data, m); err != nil {
		return fmt.Errorf("decode %s: %w", m.MsgType(), err)
	}
	return m.Validate()
}

// SamplingFrom is the run config's sampling settings as the wire carries them.
func SamplingFrom(s config.Sampling) SamplingParams {
	return SamplingParams{Temperature: s.Temperature, CFGWeight: s.CFGWeight, MaxPlanTokens: s.MaxPlanTokens, ImageLogp: s.ImageLogp,
		ExclusiveCells: s.ExclusiveCells}
}
