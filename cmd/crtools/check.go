package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/crtools/crtools/engine/kernel"
)

func init() { registerCommand("check", newCheckCommand) }

func newCheckCommand(g *globalOptions) *cobra.Command {
	var ms, asJSON bool
	var only []string
	c := &cobra.Command{
		Use:   "check [--ms] [--json] [--feature NAME]...",
		Short: "test whether the kernel supports everything crtools needs",
		Long: `Probe, by trying each of them, the kernel features crtools relies on: ptrace
seize/interrupt and register sets, process_vm_readv/writev, pidfds, clone3
with set_tid, /proc/PID/map_files and pagemap, PAGEMAP_SCAN, userfaultfd
write-protect, kcmp, memfd, moving the vDSO, PR_SET_MM_MAP, TCP_REPAIR,
sock_diag, namespaces and netfilter. The probes run on a tiny throwaway child
process; crtools' own state is left alone. Needs root.

It prints a table (feature, ok or missing, what needs it) and "Looks good."
with exit status 0 when every required feature works; otherwise it names what
is missing and exits with 1. A missing optional feature only disables what
needs it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			known := map[string]bool{}
			for _, f := range kernel.Features() {
				known[f.Name] = true
			}
			for _, n := range only {
				if !known[n] {
					return usageErrorf("unknown feature %q (crtools check --help lists them)", n)
				}
			}
			logs, err := openLogs(logConfig{File: g.LogFile, Level: g.Verbosity, Format: g.LogFormat, ImagesDir: g.ImagesDir},
				time.Now(), cmd.ErrOrStderr())
			if err != nil {
				return failf("%v", err)
			}
			defer logs.Close()
			rep := kernel.Check(kernel.Options{MainlineOnly: ms, Only: only, Log: logs.Logger})
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return failf("write JSON: %v", err)
				}
			} else {
				printCheckReport(out, rep)
			}
			if !rep.OK && os.Geteuid() != 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "crtools check probes with ptrace, namespaces and raw sockets: run it as root.")
			}
			if !rep.OK {
				// The table (or JSON) already says what is missing.
				return &exitError{code: exitFailed, err: fmt.Errorf("missing kernel features: %s", strings.Join(rep.MissingRequired, ", ")), quiet: true}
			}
			return nil
		},
	}
	fl := c.Flags()
	fl.BoolVar(&ms, "ms", false, "leave out features mainline kernels lack (every feature probed today is in mainline)")
	fl.BoolVar(&asJSON, "json", false, "print the report as JSON")
	fl.StringArrayVar(&only, "feature", nil, "probe only the feature `NAME` (repeatable)")
	// The feature list goes into the help text when help is shown, not
	// whenever the command tree is built.
	c.SetHelpFunc(func(cmd *cobra.Command, args []string) {
		if !strings.Contains(cmd.Long, "\n\nFeatures:\n") {
			cmd.Long += "\n\nFeatures:\n" + featureList()
		}
		cmd.Root().HelpFunc()(cmd, args)
	})
	return c
}

// featureList is the list of probes for --help.
func featureList() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	for _, f := range kernel.Features() {
		req := "optional"
		if f.Required {
			req = "required"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s (Linux %s)\n", f.Name, req, f.NeededBy, f.MinKernel)
	}
	tw.Flush()
	return strings.TrimRight(b.String(), "\n")
}

// printCheckReport prints the table and the verdict.
func printCheckReport(w io.Writer, rep kernel.Report) {
	fmt.Fprintf(w, "Kernel %s\n\n", rep.Kernel)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "FEATURE\tSTATUS\tNEEDED BY")
	for _, r := range rep.Features {
		status := "ok"
		if !r.OK {
			status = "MISSING"
			if !r.Required {
				status = "missing"
			}
		}
		need := r.NeededBy
		if !r.Required {
			need += " [optional]"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, status, need)
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, r := range rep.Features {
		if !r.OK {
			fmt.Fprintf(w, "%s: %s\n", r.Name, r.Error)
		}
	}
	if len(rep.MissingOptional) > 0 {
		fmt.Fprintf(w, "Missing optional features (only what needs them is affected): %s\n",
			strings.Join(rep.MissingOptional, ", "))
	}
	if !rep.OK {
		fmt.Fprintf(w, "Missing required features: %s. crtools cannot dump or restore here.\n",
			strings.Join(rep.MissingRequired, ", "))
		return
	}
	fmt.Fprintln(w, "Looks good.")
}
