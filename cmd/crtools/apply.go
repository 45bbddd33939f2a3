package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/crtools/crtools/executor"
	"github.com/crtools/crtools/planner"
	"github.com/crtools/crtools/spec"
)

func init() { registerCommand("apply", newApplyCommand) }

// lockDirEnv overrides where recipe locks live (tests, unprivileged use).
const lockDirEnv = "CRTOOLS_LOCK_DIR"

type applyFlags struct {
	DryRun  bool
	Journal string
}

func newApplyCommand(g *globalOptions) *cobra.Command {
	f := &applyFlags{}
	c := &cobra.Command{
		Use:   "apply JOB.yaml",
		Short: "run a job spec (checkpoint or restore) with rollback",
		Long: `Run the jobs of a spec file in order, each with its own rollback: when a step
fails, the undo of every completed step runs in reverse and a journal says
what ran, what was undone and what could not be. Exit codes: 0 done; 1
failed and rolled back; 2 invalid spec; 3 rollback incomplete; 4 the
recipe is locked by another run.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Plan every job first: a field that is not supported yet in
			// the second document must fail before the first one runs.
			jobs, plans, err := loadAndPlan(cmd, args[0])
			if err != nil {
				return err
			}
			if f.DryRun {
				for _, p := range plans {
					fmt.Fprint(cmd.OutOrStdout(), p.Format())
				}
				fmt.Fprintln(cmd.OutOrStdout(), "Dry run: nothing was changed.")
				return nil
			}
			var journals []*executor.Journal
			defer func() {
				if f.Journal != "" {
					writeJournals(f.Journal, journals, cmd.ErrOrStderr())
				}
			}()
			for _, j := range jobs {
				jr, err := runJob(cmd, g, j, true)
				if jr != nil {
					journals = append(journals, jr)
				}
				if err != nil {
					return err
				}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&f.DryRun, "dry-run", false, "print the plan and change nothing")
	c.Flags().StringVar(&f.Journal, "journal", "", "write the journal of what ran and what was undone to `FILE` as JSON")
	return c
}

// maxSpecErrors bounds the problems listed for one file: a file that is
// no spec at all (a passwd file, a README) would list every line.
const maxSpecErrors = 10

// loadSpec loads a spec file; a bad spec is a usage error (exit 2): one
// line for one problem, else a count and every problem (up to
// maxSpecErrors) on its own line.
func loadSpec(path string) ([]*spec.Job, error) {
	jobs, err := spec.LoadFile(path)
	if err != nil {
		var es spec.Errors
		var e *spec.Error
		switch {
		case errors.As(err, &es) && len(es) > 1:
			var lines []string
			for i, x := range es {
				if i == maxSpecErrors {
					lines = append(lines, fmt.Sprintf("... and %d more", len(es)-maxSpecErrors))
					break
				}
				lines = append(lines, x.Error())
			}
			return nil, &exitError{code: exitUsage, err: fmt.Errorf("invalid spec (%d problems):\n%s", len(es), strings.Join(lines, "\n")), multiline: true}
		case errors.As(err, &es) || errors.As(err, &e):
			return nil, &exitError{code: exitUsage, err: fmt.Errorf("invalid spec: %s", err)}
		}
		return nil, &exitError{code: exitUsage, err: err}
	}
	return jobs, nil
}

// loadAndPlan loads the spec file path of a spec command (apply, plan)
// and plans each of its jobs.
func loadAndPlan(cmd *cobra.Command, path string) ([]*spec.Job, []*planner.Plan, error) {
	if err := noImagesDirFlag(cmd); err != nil {
		return nil, nil, err
	}
	jobs, err := loadSpec(path)
	if err != nil {
		return nil, nil, err
	}
	var plans []*planner.Plan
	for _, j := range jobs {
		p, err := buildPlan(j, time.Now())
		if err != nil {
			return nil, nil, err
		}
		plans = append(plans, p)
	}
	return jobs, plans, nil
}

// buildPlan plans a job; a field whose engine does not exist yet is a
// failure (exit 1), anything else wrong with the job is exit 2.
func buildPlan(j *spec.Job, now time.Time) (*planner.Plan, error) {
	p, err := planner.Build(j, now)
	if err != nil {
		var ns *planner.NotSupportedError
		if errors.As(err, &ns) {
			if j.Source == cliSource && ns.Flag != "" {
				return nil, &exitError{code: exitFailed, err: fmt.Errorf("%s: %s", ns.Flag, ns.Message())}
			}
			return nil, &exitError{code: exitFailed, err: fmt.Errorf("%s: %w", j.Source, err)}
		}
		return nil, &exitError{code: exitUsage, err: fmt.Errorf("%s: %w", j.Source, err)}
	}
	return p, nil
}

// cliSource is the Source of a job built from command-line flags.
const cliSource = "command line"

// runCLIJob runs a job built from command-line flags (dump, restore).
func runCLIJob(cmd *cobra.Command, g *globalOptions, job *spec.Job) error {
	_, err := runJob(cmd, g, job, false)
	return err
}

// runJob plans and executes one job and turns its journal into an exit
// code. fromSpec: the job came from apply (print the journal; a spec's
// log section applies).
func runJob(cmd *cobra.Command, g *globalOptions, job *spec.Job, fromSpec bool) (*executor.Journal, error) {
	start := time.Now()
	plan, err := buildPlan(job, start)
	if err != nil {
		return nil, err
	}
	lc := logConfig{File: g.LogFile, Level: g.Verbosity, Format: g.LogFormat, PerPid: g.LogPid}
	var specLog *spec.Log
	switch {
	case job.Checkpoint != nil:
		specLog = job.Checkpoint.Log
		lc.ImagesDir, lc.Pending = plan.ImagesDir, true
	case job.Restore != nil:
		specLog = job.Restore.Log
		lc.ImagesDir = plan.ImagesDir
		if plan.LatestIn != "" {
			lc.ImagesDir = plan.LatestIn
		}
	}
	if specLog != nil {
		// The spec's own log section, unless the command line says
		// otherwise.
		fl := cmd.Flags()
		if specLog.File != "" && !fl.Changed("log-file") {
			lc.File = specLog.File
		}
		if specLog.Level != nil && !fl.Changed("verbosity") {
			lc.Level = *specLog.Level
		}
		if specLog.Format != "" && !fl.Changed("log-format") {
			lc.Format = specLog.Format
		}
		lc.PerPid = lc.PerPid || specLog.PerPid
	}
	stderr := cmd.ErrOrStderr()
	term := isTerminal(stderr)
	logOut := stderr
	if term {
		logOut = &lineClearWriter{w: stderr}
	}
	logs, err := openLogs(lc, start, logOut)
	if err != nil {
		return nil, failf("%w", err)
	}
	defer logs.Close()

	opts := executor.Options{
		Log:       logs.Logger,
		PidLog:    logs.PidLogger,
		LockDir:   os.Getenv(lockDirEnv),
		Stdout:    cmd.OutOrStdout(),
		Stderr:    stderr,
		FaultStep: os.Getenv(executor.FaultEnv),
		OnCommit:  logs.Commit,
	}
	if term && lc.Level > 0 {
		opts.Progress = stderr
	}
	// SIGINT/SIGTERM cancel the run; the executor then rolls back. run
	// started catching them for the first job (g.signals).
	sigs := g.signals
	g.signals = nil
	if sigs == nil {
		sigs = catchSignals()
	}
	defer sigs.release()
	jr := executor.Run(sigs.context(), plan, opts)
	if fromSpec {
		jr.WriteText(cmd.OutOrStdout())
	}
	logFor(logs.Logger, jr)
	if !jr.Failed() {
		if jr.ExitStatus != nil && !fromSpec && *jr.ExitStatus != 0 {
			// crtools restore (not detached) exits with the status of
			// the restored root, as the man page's restore does.
			return jr, &exitError{code: *jr.ExitStatus, err: fmt.Errorf("restored task %d exited with status %d", jr.RootPid, *jr.ExitStatus), quiet: true}
		}
		return jr, nil
	}
	msg := jr.Error
	switch jr.Result {
	case executor.ResultRolledBack:
		msg += "; rolled back"
	case executor.ResultFailed:
		msg += "; later steps rolled back"
	case executor.ResultRollbackIncomplete:
		msg += "; rollback incomplete, left to fix: " + strings.Join(jr.Left, "; ")
	}
	if p := logs.Path(); p != "" {
		msg += " (log: " + p + ")"
	}
	return jr, &exitError{code: jr.ExitCode(), err: fmt.Errorf("%s %q failed: %s", strings.ToLower(job.Kind), job.Name(), msg)}
}

func logFor(log zerolog.Logger, jr *executor.Journal) {
	ev := log.Info()
	if jr.Failed() {
		ev = log.Error()
	}
	ev.Str("result", jr.Result).Str("images", jr.ImagesDir).Int("pid", jr.RootPid).Msg("job finished")
}

func writeJournals(path string, js []*executor.Journal, stderr io.Writer) {
	// Always an array, one journal per document, in order.
	b, err := json.MarshalIndent(js, "", "  ")
	if err == nil {
		err = os.WriteFile(path, append(b, '\n'), 0o644)
	}
	if err != nil {
		fmt.Fprintf(stderr, "crtools: write journal: %v\n", err)
	}
}

// lineClearWriter clears the progress line before each log line.
type lineClearWriter struct{ w io.Writer }

func (l *lineClearWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(l.w, "\r\x1b[K"); err != nil {
		return 0, err
	}
	return l.w.Write(p)
}

// noImagesDirFlag: a spec names its own images directory; -D next to a
// spec would be silently ignored, so it is an error.
func noImagesDirFlag(cmd *cobra.Command) error {
	if cmd.Flags().Changed("images-dir") {
		return usageErrorf("-D/--images-dir does not apply to %s: the spec names its imagesDir", cmd.Name())
	}
	return nil
}
