// Package reward turns images into rewards the way T2I-R1 does: an ensemble of vision experts, each
// split into a Backend that produces raw outputs (boxes with labels and scores, yes/no
// probabilities, a scalar preference score) and a Rule that turns those raw outputs plus the
// prompt's reference metadata (nouns, attr_nouns, spatial_info, numeracy_info, task_type) into a
// reward in [0, 1].
//
// Backends are either built-in models of the scene world (package experts) or remote model servers
// speaking the HTTP/JSON protocol of docs/expert-protocol.md (RemoteBackend here; NewHandler serves
// any Backend over it). Rules are the reference's definitions (rules.go). An Ensemble runs its
// experts concurrently on a batch, each under its own timeout, validates every raw output and
// every reward (NaN, Inf and out-of-range values are errors naming the expert and the sample,
// never a silent zero), and sums the rewards with weights (the reference: equal weights of 1).
package reward

import (
	"context"
	"image"
	"time"

	"github.com/bicot-rl/bicot/pkg/prompts"
)

// Item is one sample to score: the prompt it was generated for and the decoded image.
type Item struct {
	Prompt prompts.Prompt
	Image  image.Image
}

// Scores is the ensemble's verdict on one item: the weighted sum and each expert's own reward
// (unweighted, in [0, 1]) for logging.
type Scores struct {
	Total     float64            `json:"total"`
	PerExpert map[string]float64 `json:"per_expert"`
}

// Output names the kind of raw output a backend produces and a rule consumes.
type Output string

// Raw output kinds.
const (
	// OutputBoxes: labelled boxes with confidence scores (a grounding detector).
	OutputBoxes Output = "boxes"
	// OutputAnswers: P(yes) and P(no) for each question of the query (VQA, ORM).
	OutputAnswers Output = "answers"
	// OutputScore: one real-valued score per image-prompt pair (a preference model).
	OutputScore Output = "score"
)

// Valid reports whether o is a known output kind.
func (o Output) Valid() bool {
	return o == OutputBoxes || o == OutputAnswers || o == OutputScore
}

// Query is what a backend is asked about one image.
type Query struct {
	Prompt prompts.Prompt
	Image  image.Image
	// Questions for answer backends (one Answer per question, in order); nil otherwise.
	Questions []string
}

// Box is one detection. Coordinates are fractions of the image width and height, so that they do
// not depend on the resolution: (X0, Y0) top-left, (X1, Y1) bottom-right.
type Box struct {
	Label string     `json:"label"`
	Score float64    `json:"score"`
	Box   [4]float64 `json:"box"`
}

// Centre returns the box centre.
func (b Box) Centre() (x, y float64) { return (b.Box[0] + b.Box[2]) / 2, (b.Box[1] + b.Box[3]) / 2 }

// Answer holds the probabilities of the answers "yes" and "no" to one question. They need not sum
// to one (a captioning model spreads mass over its whole vocabulary); rules use Yes/(Yes+No).
type Answer struct {
	Yes float64 `json:"yes"`
	No  float64 `json:"no"`
}

// Raw is a backend's output for one query; exactly the field of the backend's Output kind is set.
type Raw struct {
	Boxes   []Box    `json:"boxes,omitempty"`
	Answers []Answer `json:"answers,omitempty"`
	Score   *float64 `json:"score,omitempty"`
}

// Backend produces raw outputs for a batch of queries, one Raw per query in order. Implementations
// must be safe for concurrent use and should honour ctx.
type Backend interface {
	Output() Output
	Infer(ctx context.Context, qs []Query) ([]Raw, error)
}

// Rule turns raw outputs and prompt metadata into a reward in [0, 1].
type Rule interface {
	// Output is the raw output kind the rule consumes.
	Output() Output
	// Shortcut returns the reward for prompts the rule decides without looking at the image
	// (for instance VQA on spatial prompts); ok is false when the backend must be asked.
	Shortcut(p prompts.Prompt) (reward float64, ok bool)
	// Questions returns what to ask an answer backend about an image for prompt p.
	Questions(p prompts.Prompt) []string
	// Reward computes the reward from a validated raw output.
	Reward(p prompts.Prompt, raw Raw) (float64, error)
}

// Expert is a named backend and rule with a weight in the ensemble sum and a per-call timeout.
type Expert struct {
	Name    string
	Backend Backend
	Rule    Rule
	// Weight of the expert's reward in Scores.Total (the reference uses 1 for every expert).
	Weight float64
	// Timeout bounds one Score call of this expert (0: no timeout beyond the caller's context).
	Timeout time.Duration
}
