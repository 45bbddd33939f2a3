package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
)

func init() { registerCommand("plan", newPlanCommand) }

func newPlanCommand(g *globalOptions) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "plan JOB.yaml",
		Short: "print the numbered steps a job spec would run",
		Long: `Print the steps apply would run for each job of the spec file, in order,
each with how it is undone. Nothing is changed. A field whose engine does
not exist yet (e.g. pageServer) makes plan fail with "not supported yet".`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, plans, err := loadAndPlan(cmd, args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				b, err := json.MarshalIndent(plans, "", "  ")
				if err != nil {
					return failf("encode plan: %w", err)
				}
				fmt.Fprintln(out, string(b))
				return nil
			}
			for _, p := range plans {
				fmt.Fprint(out, p.Format())
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the plan as JSON")
	return c
}
