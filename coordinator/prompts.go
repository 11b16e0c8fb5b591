package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/promptgen"
	"github.com/bicot-rl/bicot/pkg/prompts"
)

// promptsCmd groups the prompt file tools: checking a file in the reference format and writing
// the scene world's benchmark files.
func promptsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "prompts",
		Short: "Check and generate prompt files (T2I-R1 JSONL format)",
	}
	cmd.AddCommand(promptsCheckCmd(), promptsGenerateCmd())
	return cmd
}

func promptsCheckCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check FILE",
		Short: "Validate a prompt file and count its prompts per task_type",
		Long: "Validate every line of a JSONL prompt file (reference fields, task_type, spatial_info, " +
			"numeracy_info, spec) and print the number of prompts per task_type. The first bad line " +
			"fails the command with FILE:LINE: reason.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := prompts.Check(args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				fmt.Fprintln(out, s.JSON())
				return nil
			}
			fmt.Fprint(out, s.Text())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"total": N, "task_types": {...}} instead of text`)
	return cmd
}

func promptsGenerateCmd() *cobra.Command {
	var (
		seed          uint64
		out           string
		trainN, evalN int
		rlN           int
	)
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Write the scene world's train.jsonl, eval.jsonl and rl.jsonl",
		Long: "Generate the benchmark prompt files: train.jsonl (pretraining prompts: no held-out " +
			"combination, shuffled), eval.jsonl (each prompt asks for a held-out combination, grouped " +
			"by task_type) and rl.jsonl (reinforcement-learning prompts: each asks for a held-out " +
			"combination, no text in eval.jsonl, shuffled). The files depend only on the flags.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := os.MkdirAll(out, 0o755); err != nil {
				return fmt.Errorf("prompts generate: %w", err)
			}
			write := func(split promptgen.Split, ps []prompts.Prompt) error {
				path := filepath.Join(out, string(split)+".jsonl")
				if err := prompts.WriteFile(path, ps); err != nil {
					return fmt.Errorf("prompts generate: %w", err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %d prompts\n", path, len(ps))
				return nil
			}
			train, err := promptgen.GenerateSplit(promptgen.Train, seed, trainN)
			if err != nil {
				return fmt.Errorf("prompts generate: %w", err)
			}
			eval, err := promptgen.GenerateSplit(promptgen.Eval, seed, evalN)
			if err != nil {
				return fmt.Errorf("prompts generate: %w", err)
			}
			rl, err := promptgen.GenerateRL(seed, rlN, eval)
			if err != nil {
				return fmt.Errorf("prompts generate: %w", err)
			}
			for _, s := range []struct {
				split promptgen.Split
				ps    []prompts.Prompt
			}{{promptgen.Train, train}, {promptgen.Eval, eval}, {promptgen.RL, rl}} {
				if err := write(s.split, s.ps); err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.Uint64Var(&seed, "seed", promptgen.DefaultSeed, "generator seed")
	f.StringVar(&out, "out", "data/prompts", "output directory")
	f.IntVar(&trainN, "train-per-type", promptgen.DefaultTrainPerType, "training prompts per task_type")
	f.IntVar(&evalN, "eval-per-type", promptgen.DefaultEvalPerType, "evaluation prompts per task_type")
	f.IntVar(&rlN, "rl-per-type", promptgen.DefaultRLPerType, "reinforcement-learning prompts per task_type (fewer where the held-out prompts outside eval run out)")
	return cmd
}
