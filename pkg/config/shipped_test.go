package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every run config the repository ships (configs/*.yaml and the ladder's) loads, validates and
// names files that exist: the README and docs tell users to run them as they are, so a typo in
// a key or a path must fail here, not half an hour into someone's run. Expert ensembles
// (experts-*.yaml) and pretraining configs (pretrain*.yaml) are other formats, read by their own
// packages' tests (pkg/experts TestShippedExpertConfigs, pkg/pretrain TestShippedPretrainConfigs).
func TestShippedRunConfigs(t *testing.T) {
	root := filepath.Join("..", "..")
	top, err := filepath.Glob(filepath.Join(root, "configs", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ladder, err := filepath.Glob(filepath.Join(root, "configs", "ladder", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, path := range append(top, ladder...) {
		base := filepath.Base(path)
		if strings.HasPrefix(base, "experts-") || strings.HasPrefix(base, "pretrain") {
			continue
		}
		checked++
		t.Run(strings.TrimPrefix(path, root+string(filepath.Separator)), func(t *testing.T) {
			c, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("shipped config does not validate: %v", err)
			}
			files := map[string]string{
				"prompts": c.Prompts, "pretrain_prompts": c.PretrainPrompts, "policy_init": c.PolicyInit,
				"codebook": c.Codebook, "expert_config": c.ExpertConfig, "eval.prompts": c.Eval.Prompts,
				"experts": c.Experts,
			}
			for key, rel := range files {
				if rel == "" {
					continue
				}
				if _, err := os.Stat(filepath.Join(root, rel)); err != nil {
					t.Errorf("%s names %s, which the repository does not hold: %v", key, rel, err)
				}
			}
		})
	}
	if checked < 10 {
		t.Fatalf("found %d run configs under configs/; the glob is wrong", checked)
	}
}
