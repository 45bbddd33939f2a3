package main

import (
	"github.com/spf13/cobra"
)

func init() { registerCommand(newPlanCommand) }

func newPlanCommand(g *globalOptions) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "plan JOB.yaml",
		Short: "print the numbered steps a job spec would run",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return failf("plan is not available yet")
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the plan as JSON")
	return c
}
