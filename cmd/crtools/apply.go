package main

import (
	"github.com/spf13/cobra"

	"github.com/crtools/crtools/spec"
)

func init() { registerCommand(newApplyCommand) }

type applyFlags struct {
	DryRun  bool
	Journal string
}

func newApplyCommand(g *globalOptions) *cobra.Command {
	f := &applyFlags{}
	c := &cobra.Command{
		Use:   "apply JOB.yaml",
		Short: "run a job spec (checkpoint or restore) with rollback",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return failf("apply is not available yet")
		},
	}
	c.Flags().BoolVar(&f.DryRun, "dry-run", false, "print the plan and change nothing")
	c.Flags().StringVar(&f.Journal, "journal", "", "write the journal of what ran and what was undone to `FILE` as JSON")
	return c
}

// runCLIJob runs a job built from command-line flags.
func runCLIJob(cmd *cobra.Command, g *globalOptions, job *spec.Job) error {
	return failf("%s engine not available", job.Kind)
}
