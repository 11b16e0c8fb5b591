package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/evaluate"
	"github.com/bicot-rl/bicot/pkg/experts"
	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/startup"
	"github.com/bicot-rl/bicot/pkg/vq"
)

func newAlignmentCmd(p *startup.Process) *cobra.Command {
	var (
		policy, models, codebook, promptFile, jsonOut, backend, expertConfig string
		o                                                                    = evaluate.Options{LimitPerType: 12, G: 8, Seed: 1, CFGWeight: 3}
		tieSpread                                                            = config.DefaultMinSpread
	)
	cmd := &cobra.Command{
		Use:   "alignment",
		Short: "Rank a policy's own samples with the experts and with the oracle, group by group",
		Long: "Samples G images per evaluation prompt with a policy checkpoint, scores them with the built-in\n" +
			"experts and with the oracle, and prints, per task type, the mean rank correlation between each\n" +
			"expert's reward (and the ensemble's) and the oracle score within a prompt's group - the\n" +
			"ranking GRPO's advantages follow. Low or negative values show where RL would be steered away\n" +
			"from better images. Groups the oracle ties count too (see --tie-spread): a reward that varies\n" +
			"there turns noise into advantages.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := logging.Component(p.Log(), "alignment")
			b, err := mlx.NewBackend(backend)
			if err != nil {
				return err
			}
			m, err := model.LoadFile(b, policy)
			if err != nil {
				return err
			}
			cb, err := vq.Load(codebook)
			if err != nil {
				return err
			}
			ps, err := prompts.ReadFile(promptFile)
			if err != nil {
				return err
			}
			ec := experts.DefaultConfig()
			ec.Models = models
			if expertConfig != "" {
				if ec, err = experts.LoadConfig(expertConfig); err != nil {
					return err
				}
			}
			ens, err := experts.NewEnsembleFromConfig(b, ec)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			start := time.Now()
			a, err := evaluate.RewardAlignment(ctx, m, cb, ps, ens, o, tieSpread)
			if err != nil {
				return err
			}
			printAlignment(cmd.OutOrStdout(), a)
			if jsonOut != "" {
				out, err := json.MarshalIndent(a, "", "  ")
				if err != nil {
					return err
				}
				if err := os.WriteFile(jsonOut, append(out, '\n'), 0o644); err != nil {
					return fmt.Errorf("write %s: %w", jsonOut, err)
				}
			}
			log.Info().Int("samples", a.Samples).Dur("elapsed", time.Since(start)).Msg("alignment measured")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&policy, "policy", "models/base.safetensors", "policy checkpoint whose samples are ranked")
	f.StringVar(&models, "models", "models/experts", "directory of the experts' weights")
	f.StringVar(&codebook, "codebook", "models/codebook.vq", "VQ codebook file")
	f.StringVar(&promptFile, "prompts", "data/prompts/eval.jsonl", "evaluation prompts (JSONL)")
	f.IntVar(&o.LimitPerType, "limit", o.LimitPerType, "first N prompts of each task type (0: all)")
	f.IntVar(&o.G, "g", o.G, "samples per prompt (a group)")
	f.Uint64Var(&o.Seed, "seed", o.Seed, "sampling seed")
	f.Float64Var(&o.CFGWeight, "cfg", o.CFGWeight, "classifier-free guidance weight")
	f.StringVar(&jsonOut, "json", "", "also write the result as JSON to this file (with every sample's rewards)")
	f.StringVar(&expertConfig, "expert-config", "", "expert ensemble YAML (weights, rules, remote servers); default: the built-in experts in --models")
	f.Float64Var(&tieSpread, "tie-spread", tieSpread, "groups the oracle ties count as agreement when the reward spans less than this, else as 0 (0: leave them out)")
	f.StringVar(&backend, "backend", "", "gomlx backend (default $BICOT_BACKEND or go:parallelism=-1)")
	return cmd
}

func printAlignment(w io.Writer, a evaluate.Alignment) {
	names := a.Names()
	tied := 0
	for _, n := range a.TiedGroups {
		tied += n
	}
	fmt.Fprintf(w, "within-group Spearman of reward vs oracle (%d samples of %d prompts; %d groups tied by the oracle)\n", a.Samples, a.Prompts, tied)
	fmt.Fprintf(w, "%-10s %6s", "task type", "groups")
	for _, n := range names {
		fmt.Fprintf(w, " %8s", n)
	}
	fmt.Fprintln(w)
	row := func(label string, groups int, byName map[string]float64) {
		fmt.Fprintf(w, "%-10s %6d", label, groups)
		for _, n := range names {
			fmt.Fprintf(w, " %8.2f", byName[n])
		}
		fmt.Fprintln(w)
	}
	total := 0
	for _, t := range prompts.InReportOrder(a.Groups) {
		row(t, a.Groups[t], a.Spearman[t])
		total += a.Groups[t]
	}
	row("all", total, a.Overall)
}
