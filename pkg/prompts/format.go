// Package prompts reads, writes and validates prompt files in the T2I-R1 reference format: one JSON
// object per line with the fields prompt, task_type, nouns, attr_nouns, spatial_info{obj1, obj2,
// locality} and numeracy_info[{obj_name, num}]. The reference's own training file loads unchanged.
// Prompts of our scene world carry one extension field, "spec" (see scene.Spec), that states the
// request exactly; unknown fields are kept and written back.
package prompts

import (
	"encoding/json"
	"slices"

	"github.com/bicot-rl/bicot/pkg/scene"
)

// Task types of the reference data, plus Knowledge for prompts that name things indirectly and need
// a plan to resolve (in the spirit of WISE).
const (
	Color      = "color"
	Shape      = "shape"
	Texture    = "texture"
	Spatial    = "spatial"
	NonSpatial = "non"
	Complex    = "complex"
	Numeracy   = "numeracy"
	Object     = "object"
	Knowledge  = "knowledge"
)

// TaskTypes lists every task type in report order.
var TaskTypes = []string{Color, Shape, Texture, Spatial, NonSpatial, Complex, Numeracy, Object, Knowledge}

// InReportOrder returns the keys of byType (task types) in TaskTypes order, any others after
// them sorted, so every table lists task types the same way.
func InReportOrder[V any](byType map[string]V) []string {
	var out, other []string
	for _, t := range TaskTypes {
		if _, ok := byType[t]; ok {
			out = append(out, t)
		}
	}
	for t := range byType {
		if !slices.Contains(TaskTypes, t) {
			other = append(other, t)
		}
	}
	slices.Sort(other)
	return append(out, other...)
}

// SpatialInfo is the reference's spatial_info object.
type SpatialInfo struct {
	Obj1     string `json:"obj1"`
	Obj2     string `json:"obj2"`
	Locality string `json:"locality"`
}

// NumeracyInfo is one entry of the reference's numeracy_info list.
type NumeracyInfo struct {
	ObjName string `json:"obj_name"`
	Num     int    `json:"num"`
}

// Prompt is one line of a prompt file.
type Prompt struct {
	Prompt       string         `json:"prompt"`
	TaskType     string         `json:"task_type"`
	Nouns        []string       `json:"nouns,omitempty"`
	AttrNouns    []string       `json:"attr_nouns,omitempty"`
	SpatialInfo  *SpatialInfo   `json:"spatial_info,omitempty"`
	NumeracyInfo []NumeracyInfo `json:"numeracy_info,omitempty"`

	// Spec is the scene world's exact statement of the request; nil for prompts from elsewhere.
	Spec *scene.Spec `json:"spec,omitempty"`

	// Extra keeps fields this package does not know, so that a file round-trips.
	Extra map[string]json.RawMessage `json:"-"`
}
