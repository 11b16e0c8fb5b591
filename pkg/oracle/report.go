package oracle

import (
	"github.com/bicot-rl/bicot/pkg/prompts"
)

// Report aggregates results: the mean score per task type and overall, and the rates of each check,
// so that an evaluation shows not just "the score" but whether counts, bindings and relations are
// right and how many extra objects images carry. A Report is not safe for concurrent use.
type Report struct {
	n                                      map[string]int
	sum                                    map[string]float64
	total                                  int
	scores                                 float64
	exact, countOK, unknownImgs, extraImgs int
	found, requested, bound, shapes, extra int
	relations, held                        int
	// Per task type: exact images, images with the right count, extra objects.
	tExact, tCount, tExtra map[string]int
}

// NewReport returns an empty report.
func NewReport() *Report {
	return &Report{
		n: map[string]int{}, sum: map[string]float64{},
		tExact: map[string]int{}, tCount: map[string]int{}, tExtra: map[string]int{},
	}
}

// Add records one result.
func (r *Report) Add(res Result) {
	t := res.TaskType
	if t == "" {
		t = "unknown"
	}
	r.n[t]++
	r.sum[t] += res.Score
	r.total++
	r.scores += res.Score
	c := res.Checks
	if c.Exact {
		r.exact++
		r.tExact[t]++
	}
	if c.CountOK {
		r.countOK++
		r.tCount[t]++
	}
	r.tExtra[t] += c.Extra
	if c.Unknown > 0 {
		r.unknownImgs++
	}
	if c.Extra > 0 {
		r.extraImgs++
	}
	r.found += c.Found
	r.requested += c.Requested
	r.bound += c.Bound
	r.shapes += c.Shapes
	r.extra += c.Extra
	r.relations += c.Relations
	r.held += c.RelationsHeld
}

// N is the number of results added.
func (r *Report) N() int { return r.total }

// TaskTypes lists the task types seen, in prompts.TaskTypes order, others after them sorted.
func (r *Report) TaskTypes() []string { return prompts.InReportOrder(r.n) }

// Scores returns the mean score per task type, "overall" (the mean over all results) and
// "overall_by_task" (the mean of the task-type means, GenEval's overall, which does not depend on
// how the evaluation set is balanced). Empty reports give an empty map.
func (r *Report) Scores() map[string]float64 {
	out := map[string]float64{}
	if r.total == 0 {
		return out
	}
	macro := 0.0
	for _, t := range r.TaskTypes() { // a fixed order, so the sum is the same float every time
		out[t] = r.sum[t] / float64(r.n[t])
		macro += out[t]
	}
	out["overall"] = r.scores / float64(r.total)
	out["overall_by_task"] = macro / float64(len(r.n))
	return out
}

// Checks returns the check breakdown over all results:
//   - exact_rate, count_ok_rate: fractions of images exactly right / with the right object count;
//   - extra_image_rate, unknown_image_rate: fractions of images with extra / unknown objects;
//   - objects_per_image, extra_per_image: mean things found and extra things per image;
//   - bound_rate, shape_rate: fractions of requested objects present with all attributes / with
//     the right shape;
//   - relation_rate: fraction of requested relations that hold (absent without relations);
//   - exact_rate/<task>, count_ok_rate/<task>, extra_per_image/<task>: the same per task type.
func (r *Report) Checks() map[string]float64 {
	out := map[string]float64{}
	if r.total == 0 {
		return out
	}
	n := float64(r.total)
	out["exact_rate"] = float64(r.exact) / n
	out["count_ok_rate"] = float64(r.countOK) / n
	out["extra_image_rate"] = float64(r.extraImgs) / n
	out["unknown_image_rate"] = float64(r.unknownImgs) / n
	out["objects_per_image"] = float64(r.found) / n
	out["extra_per_image"] = float64(r.extra) / n
	if r.requested > 0 {
		out["bound_rate"] = float64(r.bound) / float64(r.requested)
		out["shape_rate"] = float64(r.shapes) / float64(r.requested)
	}
	if r.relations > 0 {
		out["relation_rate"] = float64(r.held) / float64(r.relations)
	}
	for t, c := range r.n {
		out["exact_rate/"+t] = float64(r.tExact[t]) / float64(c)
		out["count_ok_rate/"+t] = float64(r.tCount[t]) / float64(c)
		out["extra_per_image/"+t] = float64(r.tExtra[t]) / float64(c)
	}
	return out
}

// Map merges Scores and Checks into one flat JSON-friendly map, with "n" the number of results and
// "n/<task>" the results per task type.
func (r *Report) Map() map[string]float64 {
	out := r.Scores()
	for k, v := range r.Checks() {
		out[k] = v
	}
	out["n"] = float64(r.total)
	for t, c := range r.n {
		out["n/"+t] = float64(c)
	}
	return out
}
