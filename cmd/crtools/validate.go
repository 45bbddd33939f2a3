package main

import (
	"github.com/spf13/cobra"
)

func init() { registerCommand(newValidateCommand) }

func newValidateCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "validate JOB.yaml...",
		Short: "check job specs against the schema",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return failf("validate is not available yet")
		},
	}
}
