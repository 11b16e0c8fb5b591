package experts

import (
	"context"
	"fmt"
	"image"
	"math/rand/v2"

	"github.com/bicot-rl/bicot/pkg/stats"

	"github.com/bicot-rl/bicot/pkg/oracle"
	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/scene"
)

// Evaluation of the built-in experts against ground truth on renders none of them trained on (a
// different seed stream), each on its own task:
//
//   - detector: precision and recall of (cell, shape) detections at the reference box threshold
//     0.3 on random scenes, half of them degraded (noise, blur, speckle, tint, a scrambled cell);
//     main metric F1.
//   - VQA: accuracy of P(yes) > 0.5 on balanced questions about such scenes.
//   - HPS: pairwise accuracy on (faithful render, degraded or misaligned render) pairs.
//   - ORM: ROC AUC on faithful versus misaligned renders of drawn prompts.
//   - ensemble: Spearman correlation of the ensemble total with the oracle's score (package oracle,
//     an exact pixel parser) on a mix of faithful and misaligned, clean and degraded images, in
//     groups of GroupSize images per prompt: pooled over all images, and averaged within groups.

// DetectorEval holds the detector's metrics.
type DetectorEval struct {
	Precision float64 `json:"precision"`
	Recall    float64 `json:"recall"`
	F1        float64 `json:"f1"`
}

// VQAEval holds the VQA model's metrics.
type VQAEval struct {
	Accuracy float64 `json:"accuracy"`
}

// HPSEval holds the preference model's metrics.
type HPSEval struct {
	PairwiseAccuracy float64 `json:"pairwise_accuracy"`
}

// ORMEval holds the alignment classifier's metrics.
type ORMEval struct {
	AUC      float64 `json:"auc"`
	Accuracy float64 `json:"accuracy"`
}

// EvalReport is the JSON experts-eval writes.
type EvalReport struct {
	Experts struct {
		Detector DetectorEval `json:"detector"`
		VQA      VQAEval      `json:"vqa"`
		HPS      HPSEval      `json:"hps"`
		ORM      ORMEval      `json:"orm"`
	} `json:"experts"`
	// EnsembleSpearman is the rank correlation of the ensemble's total with the oracle score.
	EnsembleSpearman float64 `json:"ensemble_spearman"`
	// EnsembleSpearmanWithinPrompt is the mean rank correlation within groups of GroupSize images
	// of one prompt, the ranking that group-relative advantages use.
	EnsembleSpearmanWithinPrompt float64 `json:"ensemble_spearman_within_prompt"`
	// ExpertSpearman is each expert's own reward's rank correlation with the oracle score.
	ExpertSpearman map[string]float64 `json:"expert_spearman"`
	N              int                `json:"n"`
	Seed           uint64             `json:"seed"`
}

// MainMetrics returns each expert's headline number (detector F1, VQA accuracy, HPS pairwise
// accuracy, ORM AUC).
func (r EvalReport) MainMetrics() map[string]float64 {
	return map[string]float64{
		Detector: r.Experts.Detector.F1,
		VQA:      r.Experts.VQA.Accuracy,
		HPS:      r.Experts.HPS.PairwiseAccuracy,
		ORM:      r.Experts.ORM.AUC,
	}
}

// evalSeedSalt separates evaluation draws from training draws of the same seed.
const evalSeedSalt = 0xe7a1

// Evaluate measures the set and the ensemble on n samples per metric.
func Evaluate(ctx context.Context, s *Set, ens *reward.Ensemble, n int, seed uint64) (EvalReport, error) {
	var rep EvalReport
	rep.N, rep.Seed = n, seed
	if n < 2 {
		return rep, fmt.Errorf("evaluate: n = %d, need at least 2", n)
	}
	rng := func(name string) *rand.Rand { return rand.New(rand.NewPCG(expertSeed(seed, name), evalSeedSalt)) }
	var err error
	if rep.Experts.Detector, err = evalDetector(ctx, s.Models[Detector], n, rng(Detector)); err != nil {
		return rep, err
	}
	if rep.Experts.VQA, err = evalVQA(ctx, s.Models[VQA], n, rng(VQA)); err != nil {
		return rep, err
	}
	if rep.Experts.HPS, err = evalHPS(ctx, s.Models[HPS], n, rng(HPS)); err != nil {
		return rep, err
	}
	if rep.Experts.ORM, err = evalORM(ctx, s.Models[ORM], n, rng(ORM)); err != nil {
		return rep, err
	}
	rep.EnsembleSpearman, rep.EnsembleSpearmanWithinPrompt, rep.ExpertSpearman, err = evalEnsemble(ctx, ens, n, rng("ensemble"))
	return rep, err
}

func evalDetector(ctx context.Context, m *Model, n int, rng *rand.Rand) (DetectorEval, error) {
	var r DetectorEval
	scenes := make([]scene.Scene, n)
	imgs := make([]image.Image, n)
	for i := range imgs {
		var err error
		if scenes[i], imgs[i], err = detectorImage(rng); err != nil {
			return r, err
		}
	}
	raws, err := m.Infer(ctx, queriesFor(imgs))
	if err != nil {
		return r, err
	}
	thr := reward.DefaultDetectorRule().BoxThreshold
	var tp, pred, truth float64
	for i, raw := range raws {
		want := map[[4]float64]string{}
		for _, o := range scenes[i].Objects {
			want[cellBox(o.Row*Grid+o.Col)] = string(o.Shape)
		}
		truth += float64(len(want))
		for _, b := range raw.Boxes {
			if b.Score <= thr {
				continue
			}
			pred++
			if want[b.Box] == b.Label {
				tp++
			}
		}
	}
	r.Precision = tp / max(pred, 1)
	r.Recall = tp / max(truth, 1)
	if r.Precision+r.Recall > 0 {
		r.F1 = 2 * r.Precision * r.Recall / (r.Precision + r.Recall)
	}
	return r, nil
}

func queriesFor(imgs []image.Image) []reward.Query {
	qs := make([]reward.Query, len(imgs))
	for i, img := range imgs {
		qs[i] = reward.Query{Image: img}
	}
	return qs
}

func evalVQA(ctx context.Context, m *Model, n int, rng *rand.Rand) (VQAEval, error) {
	qs := make([]reward.Query, n)
	truth := make([]bool, n)
	for i := range qs {
		sc, img, err := detectorImage(rng)
		if err != nil {
			return VQAEval{}, err
		}
		q, yes := question(sc, rng)
		qs[i] = reward.Query{Image: img, Questions: []string{q}}
		truth[i] = yes
	}
	raws, err := m.Infer(ctx, qs)
	if err != nil {
		return VQAEval{}, err
	}
	ok := 0
	for i, raw := range raws {
		if (raw.Answers[0].Yes > 0.5) == truth[i] {
			ok++
		}
	}
	return VQAEval{Accuracy: float64(ok) / float64(n)}, nil
}

func evalHPS(ctx context.Context, m *Model, n int, rng *rand.Rand) (HPSEval, error) {
	qs := make([]reward.Query, 0, 2*n)
	for range n {
		p, good, bad, err := preferencePair(rng)
		if err != nil {
			return HPSEval{}, err
		}
		qs = append(qs, reward.Query{Prompt: p, Image: good}, reward.Query{Prompt: p, Image: bad})
	}
	raws, err := m.Infer(ctx, qs)
	if err != nil {
		return HPSEval{}, err
	}
	ok := 0
	for i := 0; i < len(raws); i += 2 {
		if *raws[i].Score > *raws[i+1].Score {
			ok++
		}
	}
	return HPSEval{PairwiseAccuracy: float64(ok) / float64(n)}, nil
}

func evalORM(ctx context.Context, m *Model, n int, rng *rand.Rand) (ORMEval, error) {
	qs := make([]reward.Query, n)
	truth := make([]bool, n)
	for i := range qs {
		p, img, ok, err := alignedPair(rng)
		if err != nil {
			return ORMEval{}, err
		}
		qs[i] = reward.Query{Prompt: p, Image: img, Questions: []string{reward.ORMQuestion}}
		truth[i] = ok
	}
	raws, err := m.Infer(ctx, qs)
	if err != nil {
		return ORMEval{}, err
	}
	scores := make([]float64, n)
	correct := 0
	for i, raw := range raws {
		scores[i] = raw.Answers[0].Yes
		if (scores[i] > 0.5) == truth[i] {
			correct++
		}
	}
	return ORMEval{AUC: stats.AUC(scores, truth), Accuracy: float64(correct) / float64(n)}, nil
}

// GroupSize is the number of images per prompt in the ensemble evaluation, as in a GRPO group.
const GroupSize = 8

// EnsembleMix draws n (prompt, image) items for ensemble evaluation in groups of GroupSize images
// of one prompt (the last group may be short): a quarter each of faithful clean, faithful
// degraded, misaligned clean and misaligned degraded renders.
func EnsembleMix(n int, rng *rand.Rand) ([]reward.Item, error) {
	items := make([]reward.Item, 0, n)
	for len(items) < n {
		p, err := drawPrompt(rng)
		if err != nil {
			return nil, err
		}
		for i := 0; i < GroupSize && len(items) < n; i++ {
			var sc scene.Scene
			if i < GroupSize/2 {
				if sc, err = faithfulScene(p, rng); err != nil {
					return nil, err
				}
			} else {
				sc = misalignedScene(p, rng)
			}
			img, err := render(sc)
			if err != nil {
				return nil, err
			}
			var im image.Image = img
			if i%2 == 1 {
				im = degrade(img, rng, 0.2+0.8*rng.Float64())
			}
			items = append(items, reward.Item{Prompt: p, Image: im})
		}
	}
	return items, nil
}

func evalEnsemble(ctx context.Context, ens *reward.Ensemble, n int, rng *rand.Rand) (pooled, within float64, perExpert map[string]float64, err error) {
	items, err := EnsembleMix(n, rng)
	if err != nil {
		return 0, 0, nil, err
	}
	parser, err := oracle.NewParser(sceneCfg)
	if err != nil {
		return 0, 0, nil, err
	}
	truth := make([]float64, n)
	for i, it := range items {
		res, err := parser.Score(it.Prompt, it.Image)
		if err != nil {
			return 0, 0, nil, fmt.Errorf("oracle on sample %d: %w", i, err)
		}
		truth[i] = res.Score
	}
	scores, err := ens.Score(ctx, items)
	if err != nil {
		return 0, 0, nil, err
	}
	total := make([]float64, n)
	per := map[string][]float64{}
	for i, s := range scores {
		total[i] = s.Total
		for k, v := range s.PerExpert {
			per[k] = append(per[k], v)
		}
	}
	perExpert = map[string]float64{}
	for k, v := range per {
		perExpert[k] = stats.Spearman(v, truth)
	}
	// Within groups: the ranking GRPO's advantages depend on. Groups whose oracle scores all tie
	// have no ranking to match and are skipped.
	var sum float64
	var groups int
	for g := 0; g+GroupSize <= n; g += GroupSize {
		tr := truth[g : g+GroupSize]
		if stats.Spearman(tr, tr) == 0 {
			continue
		}
		sum += stats.Spearman(total[g:g+GroupSize], tr)
		groups++
	}
	if groups > 0 {
		within = sum / float64(groups)
	}
	return stats.Spearman(total, truth), within, perExpert, nil
}
