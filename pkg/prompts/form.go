package prompts

// The forms of a prompt, beside its task type: what kind of request it makes.
const (
	FormRelation  = "relation"  // a relation between two objects (spatial_info or a spec relation)
	FormCount     = "count"     // a number of objects (numeracy_info)
	FormAttribute = "attribute" // objects and their attributes only
)

// Forms lists the forms.
var Forms = []string{FormAttribute, FormCount, FormRelation}

// Form is what p asks for beyond its objects: a relation, a count, or only objects with their
// attributes, in that order of precedence. A task type's score breaks down by it where its
// prompts mix forms - knowledge prompts name a shape, a colour, a count or a relation indirectly
// (docs/world.md) - so a type's gain can be traced to the kind of request that moves.
func Form(p Prompt) string {
	switch {
	case p.SpatialInfo != nil || (p.Spec != nil && len(p.Spec.Relations) > 0):
		return FormRelation
	case len(p.NumeracyInfo) > 0:
		return FormCount
	default:
		return FormAttribute
	}
}
