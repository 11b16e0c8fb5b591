package reward

import (
	"github.com/bicot-rl/bicot/pkg/prompts"
)

// Protocol is the version string of the expert server protocol (docs/expert-protocol.md). A change
// that old peers cannot read bumps the number; additive fields do not.
const Protocol = "bicot-expert/1"

// Paths of the protocol's endpoints.
const (
	PathInfo  = "/v1/info"
	PathInfer = "/v1/infer"
)

// Info is the reply of GET /v1/info.
type Info struct {
	Protocol string `json:"protocol"`
	Name     string `json:"name"`
	Output   Output `json:"output"`
	MaxBatch int    `json:"max_batch"`
}

// InferRequest is the body of POST /v1/infer.
type InferRequest struct {
	Protocol string      `json:"protocol"`
	Output   Output      `json:"output"`
	Items    []InferItem `json:"items"`
}

// InferItem is one image and what is asked about it.
type InferItem struct {
	// ImagePNG is the image as PNG, base64 (standard alphabet, padded) in JSON.
	ImagePNG  []byte         `json:"image_png"`
	Prompt    prompts.Prompt `json:"prompt"`
	Questions []string       `json:"questions,omitempty"`
}

// InferResponse is the body of a successful POST /v1/infer: one result per item, in order.
type InferResponse struct {
	Protocol string       `json:"protocol"`
	Results  []wireResult `json:"results"`
}

// wireResult distinguishes a missing field from an empty one, so that a reply without "boxes" is an
// error rather than "nothing detected".
type wireResult struct {
	Boxes   *[]Box    `json:"boxes,omitempty"`
	Answers *[]Answer `json:"answers,omitempty"`
	Score   *float64  `json:"score,omitempty"`
}

func toWire(out Output, r Raw) wireResult {
	var w wireResult
	switch out {
	case OutputBoxes:
		b := r.Boxes
		if b == nil {
			b = []Box{}
		}
		w.Boxes = &b
	case OutputAnswers:
		a := r.Answers
		if a == nil {
			a = []Answer{}
		}
		w.Answers = &a
	case OutputScore:
		w.Score = r.Score
	}
	return w
}

func (w wireResult) raw() Raw {
	var r Raw
	if w.Boxes != nil {
		r.Boxes = *w.Boxes
	}
	if w.Answers != nil {
		r.Answers = *w.Answers
	}
	r.Score = w.Score
	return r
}

// ErrorBody is the body of every non-2xx reply.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail says what went wrong; Code is one of the protocol's error codes.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error codes of the protocol.
const (
	CodeBadRequest          = "bad_request"          // 400: malformed body, image or field
	CodeUnsupportedProtocol = "unsupported_protocol" // 400: protocol string not served
	CodeWrongOutput         = "wrong_output"         // 400: the request asks for another output kind
	CodeTooLarge            = "too_large"            // 413: more items than max_batch, or body too big
	CodeMethodNotAllowed    = "method_not_allowed"   // 405
	CodeNotFound            = "not_found"            // 404
	CodeInternal            = "internal"             // 500: the model failed
)
