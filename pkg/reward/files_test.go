package reward

import (
	"os"
	"testing"

	"github.com/bicot-rl/bicot/pkg/prompts"
)

// TestRulesAcceptPromptFiles runs every rule over every prompt of our prompt files, and of the
// reference's training file when $BICOT_REFERENCE_PROMPTS names it, with a detection of every
// noun: no prompt may make a rule fail or leave [0, 1].
func TestRulesAcceptPromptFiles(t *testing.T) {
	files := []string{"../../data/prompts/train.jsonl", "../../data/prompts/eval.jsonl"}
	if ref := os.Getenv("BICOT_REFERENCE_PROMPTS"); ref != "" {
		files = append(files, ref)
	}
	score := 0.75
	rules := []Rule{DefaultDetectorRule(), VQARule{}, ORMRule{}, DefaultHPSRule()}
	seen := 0
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			t.Logf("skip %s: %v", f, err)
			continue
		}
		ps, err := prompts.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		seen++
		for i, p := range ps {
			var boxes []Box
			for k, n := range p.Nouns {
				boxes = append(boxes, cell(n, 0.9, k%4, (k*3)%4))
			}
			for _, r := range rules {
				if v, ok := r.Shortcut(p); ok {
					if err := checkReward(v); err != nil {
						t.Fatalf("%s:%d %T shortcut: %v", f, i+1, r, err)
					}
					continue
				}
				raw := Raw{}
				switch r.Output() {
				case OutputBoxes:
					raw.Boxes = boxes
				case OutputAnswers:
					for range r.Questions(p) {
						raw.Answers = append(raw.Answers, Answer{Yes: 0.6, No: 0.3})
					}
				case OutputScore:
					raw.Score = &score
				}
				v, err := r.Reward(p, raw)
				if err == nil {
					err = checkReward(v)
				}
				if err != nil {
					t.Fatalf("%s:%d %T on %q: %v", f, i+1, r, p.Prompt, err)
				}
			}
		}
	}
	if seen == 0 {
		t.Skip("no prompt files in this checkout")
	}
}
