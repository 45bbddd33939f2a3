package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func init() { registerCommand("validate", newValidateCommand) }

func newValidateCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "validate JOB.yaml...",
		Short: "check job specs against the schema",
		Long: `Check each spec file against the job schema (embedded in crtools). Problems
are printed as FILE:LINE:COLUMN: FIELD: what is wrong and what was expected;
the exit code is 2 if any file is invalid.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := noImagesDirFlag(cmd); err != nil {
				return err
			}
			var firstErr error
			for _, a := range args {
				jobs, err := loadSpec(a)
				if err != nil {
					if firstErr == nil {
						firstErr = err
					} else {
						fmt.Fprintf(cmd.ErrOrStderr(), "crtools: %v\n", err)
					}
					continue
				}
				for _, j := range jobs {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: %s %q is valid\n", j.Source, j.Kind, j.Name())
				}
			}
			return firstErr
		},
	}
}
