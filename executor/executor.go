// Package executor runs a plan: step by step, logging each, with a
// progress line on a terminal. When a step fails it runs the undo of every
// completed step in reverse order (stopping at a point of no return, such
// as a tree that was killed after a good dump) and returns a Journal of
// what ran, what was undone and what could not be.
//
// The executor is the only layer between the pure planner and the engine:
// it resolves pid files, launches exec targets, runs hooks, takes the
// recipe lock, manages the temporary images directory, and calls the
// engine's phases through engine.NewDumper / engine.NewRestorer (which
// tests replace with fakes).
package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/planner"
	"github.com/crtools/crtools/spec"
)

// FaultEnv names a hidden environment variable that makes the step of
// that name fail (tests: make each step fail in turn and check the
// world). "NAME" fails the step before it does anything; "NAME:after"
// lets it do all its work and then fails it, so that its own undo runs
// too (a step whose last act fails). The CLI copies it into
// Options.FaultStep.
const FaultEnv = "CRTOOLS_FAULT_STEP"

// FaultAfter is the suffix of a FaultStep that fails a step after its work.
const FaultAfter = ":after"

// ErrInjected is the error of a step failed by fault injection.
var ErrInjected = errors.New("fault injected")

// ErrEngineMissing: the engine package for a job's kind is not built in.
var ErrEngineMissing = errors.New("engine not available")

// Options configure a run.
type Options struct {
	Log zerolog.Logger
	// PidLog, if set, gives the logger for per-process work (--log-pid).
	PidLog func(pid int) zerolog.Logger
	// LockDir holds the per-recipe lock files.
	LockDir string
	// Stdout and Stderr receive hook output.
	Stdout, Stderr io.Writer
	// Progress, if set, gets a one-line progress display (a terminal).
	Progress io.Writer
	// FaultStep names a step to fail (tests): NAME or NAME:after (FaultEnv).
	FaultStep string
	// NewDumper and NewRestorer default to the engine's factories.
	NewDumper   func(engine.DumpOptions) (engine.Dumper, error)
	NewRestorer func(engine.RestoreOptions) (engine.Restorer, error)
	// OnCommit is called once a checkpoint's images are in place (the
	// CLI moves pending log files into the directory).
	OnCommit func(imagesDir string)
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

// run is the state shared by the steps of one run.
type run struct {
	opts    Options
	plan    *planner.Plan
	job     *spec.Job
	log     zerolog.Logger
	journal *Journal

	lock      *recipeLock
	pid       int
	launched  *exec.Cmd
	reapAtEnd bool
	dumper    engine.Dumper
	restorer  engine.Restorer
	tmpDir    string
	finalDir  string // checkpoint: committed images; restore: images used
	progress  *progress
}

// Run executes plan and returns its journal. It never panics on a step
// error; every failure is in the journal (and in its Result).
func Run(ctx context.Context, plan *planner.Plan, opts Options) *Journal {
	if opts.NewDumper == nil {
		opts.NewDumper = engine.NewDumper
	}
	if opts.NewRestorer == nil {
		opts.NewRestorer = engine.NewRestorer
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Stdout == nil {
		opts.Stdout = io.Discard
	}
	if opts.Stderr == nil {
		opts.Stderr = io.Discard
	}
	if opts.LockDir == "" {
		opts.LockDir = DefaultLockDir
	}
	r := &run{
		opts: opts,
		plan: plan,
		job:  plan.Job,
		log:  opts.Log.With().Str("job", plan.Name).Logger(),
		journal: &Journal{
			Job:     plan.Name,
			Kind:    plan.Kind,
			Started: opts.Now().UTC(),
		},
	}
	if plan.Job != nil {
		r.journal.Source = plan.Job.Source
	}
	if opts.Progress != nil {
		r.progress = &progress{w: opts.Progress, total: len(plan.Steps)}
	}
	r.execute(ctx)
	r.cleanup()
	r.journal.Finished = opts.Now().UTC()
	r.journal.RootPid = r.pid
	if r.progress != nil {
		r.progress.clear()
	}
	return r.journal
}

// DefaultLockDir is where recipe locks live unless Options say otherwise.
const DefaultLockDir = "/run/crtools"

func (r *run) execute(ctx context.Context) {
	steps := r.plan.Steps
	recs := make([]*StepRecord, len(steps))
	for i, s := range steps {
		recs[i] = &StepRecord{Name: s.Name, Description: s.Description, Status: StatusNotRun, Undo: s.Undo}
	}
	r.journal.Steps = recs
	// barrier: steps before it are kept whatever happens later.
	barrier := 0
	for i, s := range steps {
		rec := recs[i]
		if r.progress != nil {
			r.progress.step(i+1, s.Name)
		}
		slog := r.log.With().Str("step", s.Name).Logger()
		slog.Info().Msgf("step %d/%d: %s", i+1, len(steps), s.Description)
		start := time.Now()
		err := r.runStep(ctx, s, slog)
		rec.Duration = time.Since(start)
		// undoFrom: the steps in [barrier, undoFrom) are undone on failure.
		undoFrom := i
		if err == nil {
			rec.Status = StatusDone
			slog.Debug().Dur("took", rec.Duration).Msg("step done")
			if s.Irreversible {
				barrier = i + 1
			}
			if r.opts.FaultStep != s.Name+FaultAfter {
				continue
			}
			// Injected after the step's work: it is done, so the
			// rollback undoes it too.
			err = fmt.Errorf("%w after step %s (%s)", ErrInjected, s.Name, FaultEnv)
			undoFrom = i + 1
		}
		rec.Error = err.Error()
		var le *LockedError
		if errors.As(err, &le) {
			rec.Status = StatusFailed
			r.journal.Result = ResultLocked
			r.journal.Error = err.Error()
			slog.Error().Msg(err.Error())
			return
		}
		if s.Optional {
			rec.Status = StatusWarning
			slog.Warn().Err(err).Msg("optional step failed; carrying on")
			continue
		}
		if undoFrom == i {
			rec.Status = StatusFailed
		}
		r.journal.Error = fmt.Sprintf("step %s: %v", s.Name, err)
		slog.Error().Err(err).Msg("step failed; rolling back")
		r.rollback(steps, recs, barrier, undoFrom)
		if rec.Status == StatusDone {
			rec.Status = StatusFailed // irreversible: the rollback left it
		}
		return
	}
	r.journal.Result = ResultDone
	if r.finalDir != "" {
		r.journal.ImagesDir = r.finalDir
	}
}

// rollback undoes completed steps in [barrier, failed) in reverse. A
// killed tree (an irreversible step) is never "undone" by removing its
// images: steps before the barrier stay.
func (r *run) rollback(steps []planner.Step, recs []*StepRecord, barrier, failed int) {
	incomplete := false
	for j := failed - 1; j >= barrier; j-- {
		if recs[j].Status != StatusDone {
			continue
		}
		s := steps[j]
		slog := r.log.With().Str("step", s.Name).Logger()
		err := r.undoStep(s)
		switch {
		case err == nil && s.Undo == "":
			recs[j].Status = StatusNoUndo
		case err == nil:
			recs[j].Status = StatusUndone
			slog.Info().Msg("undone: " + s.Undo)
		default:
			recs[j].Status = StatusUndoFailed
			recs[j].UndoError = err.Error()
			r.journal.Left = append(r.journal.Left, fmt.Sprintf("%s: %s failed: %v", s.Name, s.Undo, err))
			slog.Error().Err(err).Msg("undo failed")
			incomplete = true
		}
	}
	// The lock goes last, whatever happened.
	if r.lock != nil {
		r.lock.release()
		r.lock = nil
	}
	if barrier > 0 {
		for j := 0; j < barrier; j++ {
			switch {
			case recs[j].Status != StatusDone:
			case steps[j].Kind == planner.KindLock:
				recs[j].Status = StatusUndone // released above
			default:
				recs[j].Status = StatusKept
			}
		}
		r.journal.Error += fmt.Sprintf(" (steps up to %s are kept: point of no return)", steps[barrier-1].Name)
	}
	switch {
	case incomplete:
		r.journal.Result = ResultRollbackIncomplete
	case barrier > 0:
		r.journal.Result = ResultFailed
	default:
		r.journal.Result = ResultRolledBack
	}
}

// cleanup releases what a run holds whatever its result.
func (r *run) cleanup() {
	if r.dumper != nil {
		if err := r.dumper.Close(); err != nil {
			r.log.Warn().Err(err).Msg("close dumper")
		}
	}
	if r.restorer != nil {
		if err := r.restorer.Close(); err != nil {
			r.log.Warn().Err(err).Msg("close restorer")
		}
	}
	if r.launched != nil {
		if r.reapAtEnd {
			// The tree was killed by the dump; reap our child (bounded) so
			// its PID is free for a restore. The engine has let go of it.
			done := make(chan struct{})
			go func() { r.launched.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				r.log.Warn().Int("pid", r.pid).Msg("launched program not reaped after 5s")
			}
		} else {
			r.launched.Process.Release()
		}
	}
	if r.lock != nil {
		r.lock.release()
	}
	// Dump and restore read and write images without protobuf-go's
	// reflection, whose set-up would cost every run milliseconds
	// (engine/image/pb's doc.go); test/e2e checks this line.
	r.log.Debug().Bool("registered", image.ProtobufRegistered()).Msg("protobuf descriptors")
}

func (r *run) runStep(ctx context.Context, s planner.Step, log zerolog.Logger) error {
	if r.opts.FaultStep != "" && r.opts.FaultStep == s.Name {
		return fmt.Errorf("%w at step %s (%s)", ErrInjected, s.Name, FaultEnv)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	switch s.Kind {
	case planner.KindLock:
		l, err := acquireLock(r.opts.LockDir, r.plan.Name)
		if err != nil {
			return err
		}
		r.lock = l
		// create-temp-dir checks this again; checking now too means a
		// taken images directory fails before the tree is ever frozen.
		if r.plan.ImagesDir != "" && r.job.Checkpoint != nil {
			if err := checkFinalDirFree(r.plan.ImagesDir); err != nil {
				return err
			}
			// With the lock held, every temporary images directory of
			// this recipe is the debris of an earlier run that was
			// killed before it could roll back (makeTempDir): it goes
			// now, before the freeze, rather than in the frozen window.
			parent := filepath.Dir(r.plan.ImagesDir)
			removeStaleTemps(parent, planner.TempDirPrefix(r.plan.Name), r.log)
		}
		return nil
	case planner.KindUnlock:
		err := r.lock.release()
		r.lock = nil
		return err
	case planner.KindResolveTarget:
		return r.resolveTarget(ctx, log)
	case planner.KindHook:
		return r.runHook(ctx, s, false)
	case planner.KindFreeze:
		return r.freeze(ctx, log)
	case planner.KindCollect:
		return r.dumper.Collect(ctx)
	case planner.KindTempDir:
		return r.makeTempDir()
	case planner.KindWriteImages:
		return r.dumper.WriteImages(ctx, r.tmpDir)
	case planner.KindCommit:
		return r.commit()
	case planner.KindFinish:
		return r.finish()
	case planner.KindRetention:
		return r.retention()
	case planner.KindPickImages:
		return r.pickImages()
	case planner.KindLoad:
		return r.load(ctx, log)
	case planner.KindCreateTasks:
		return r.restorer.CreateTasks(ctx)
	case planner.KindRestoreState:
		return r.restorer.RestoreState(ctx)
	case planner.KindResume:
		if err := r.restorer.Resume(ctx); err != nil {
			return err
		}
		r.pid = r.restorer.RootPid()
		log.Info().Int("pid", r.pid).Msg("restored tree is running")
		return nil
	case planner.KindWait:
		st, err := r.restorer.Wait()
		if err != nil {
			return fmt.Errorf("wait for restored root %d: %w", r.pid, err)
		}
		r.journal.ExitStatus = &st
		log.Info().Int("pid", r.pid).Int("status", st).Msg("restored root exited")
		return nil
	}
	return fmt.Errorf("unknown step kind %q", s.Kind)
}

// undoStep undoes one completed step.
func (r *run) undoStep(s planner.Step) error {
	switch s.Kind {
	case planner.KindLock:
		err := r.lock.release()
		r.lock = nil
		return err
	case planner.KindResolveTarget:
		if r.launched == nil {
			return nil
		}
		// Our own launched program: kill it and reap it.
		r.launched.Process.Kill()
		_, err := r.launched.Process.Wait()
		r.launched = nil
		if err != nil && !errors.Is(err, unix.ECHILD) {
			return fmt.Errorf("reap launched program %d: %w", r.pid, err)
		}
		return nil
	case planner.KindHook:
		if s.Hook == nil || len(s.Hook.Undo) == 0 {
			return nil
		}
		return r.runHook(context.Background(), s, true)
	case planner.KindFreeze:
		return r.dumper.Resume()
	case planner.KindTempDir:
		if r.tmpDir == "" {
			return nil
		}
		err := os.RemoveAll(r.tmpDir)
		if err == nil {
			r.tmpDir = ""
		}
		return err
	case planner.KindCommit:
		// Unmark first so that a half-removed directory is no snapshot.
		os.Remove(filepath.Join(r.finalDir, CompleteMarker))
		if err := os.RemoveAll(r.finalDir); err != nil {
			return err
		}
		r.finalDir = ""
		return nil
	case planner.KindFinish:
		if r.plan.Finish == planner.FinishLeaveStopped {
			var errs []error
			for _, pid := range r.dumper.Pids() {
				if err := unix.Kill(pid, unix.SIGCONT); err != nil && !errors.Is(err, unix.ESRCH) {
					errs = append(errs, fmt.Errorf("continue %d: %w", pid, err))
				}
			}
			return errors.Join(errs...)
		}
		return nil
	case planner.KindCreateTasks:
		return r.restorer.Kill()
	}
	return nil // collect, write-images, load, ...: nothing to undo
}

func (r *run) hookEnv() hookEnv {
	dir := r.finalDir
	if dir == "" {
		dir = r.plan.ImagesDir
	}
	return hookEnv{Job: r.plan.Name, ImagesDir: dir, Pid: r.pid}
}

// runHook runs the action scripts, then the hook's command (or, when
// undo, the hook's undo command only).
func (r *run) runHook(ctx context.Context, s planner.Step, undo bool) error {
	hooks := r.jobHooks()
	timeout := hooks.Timeout.D()
	if s.Hook != nil && s.Hook.Timeout > 0 {
		timeout = s.Hook.Timeout.D()
	}
	env := r.hookEnv().vars(s.Action, undo)
	dir := r.job.BaseDir
	if undo {
		return runCommand(ctx, s.Hook.Undo, env, dir, timeout, r.opts.Stdout, r.opts.Stderr)
	}
	for _, sc := range hooks.Scripts {
		if err := runCommand(ctx, []string{sc}, env, dir, timeout, r.opts.Stdout, r.opts.Stderr); err != nil {
			return fmt.Errorf("action script: %w", err)
		}
	}
	if s.Hook != nil {
		return runCommand(ctx, s.Hook.Run, env, dir, timeout, r.opts.Stdout, r.opts.Stderr)
	}
	return nil
}

func (r *run) jobHooks() spec.Hooks {
	switch {
	case r.job.Checkpoint != nil:
		return r.job.Checkpoint.Hooks
	case r.job.Restore != nil:
		return r.job.Restore.Hooks
	}
	return spec.Hooks{}
}

// resolveTarget finds the PID of the tree's root (or launches it).
func (r *run) resolveTarget(ctx context.Context, log zerolog.Logger) error {
	t := r.job.Checkpoint.Target
	switch {
	case t.Pid != 0:
		r.pid = t.Pid
	case t.PidFile != "":
		b, err := os.ReadFile(t.PidFile)
		if err != nil {
			return fmt.Errorf("read pid file: %w", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			return fmt.Errorf("pid file %s: expected a process ID, got %q", t.PidFile, strings.TrimSpace(string(b)))
		}
		r.pid = pid
	case t.Exec != nil:
		return r.launch(ctx, t.Exec, log)
	}
	if err := unix.Kill(r.pid, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pid %d does not exist", r.pid)
		}
		return fmt.Errorf("process %d: %w", r.pid, err)
	}
	if r.pid == os.Getpid() {
		return fmt.Errorf("process %d is crtools itself", r.pid)
	}
	log.Info().Int("pid", r.pid).Msg("target")
	return nil
}

func (r *run) freeze(ctx context.Context, log zerolog.Logger) error {
	if r.opts.NewDumper == nil {
		return fmt.Errorf("dump %w (this crtools is built without engine/dump)", ErrEngineMissing)
	}
	c := r.job.Checkpoint
	o := engine.DumpOptions{
		Pid:             r.pid,
		Namespaces:      c.Namespaces,
		Root:            c.Options.Root,
		ExtUnixSk:       c.Options.ExtUnixSockets,
		EvasiveDevices:  c.Options.EvasiveDevices,
		LinkRemap:       c.Options.LinkRemap,
		TCPEstablished:  c.Options.TCPEstablished,
		ShellJob:        c.Options.ShellJob,
		FileLocks:       c.Options.FileLocks,
		GhostLimit:      c.Options.GhostLimit,
		TCPSkipInFlight: c.Options.TCPSkipInFlight,
		// ActionScripts stay with the executor, which runs them at each
		// hook step; the engine must not run them a second time.
		// The engine logs in later steps too: the job's logger, not
		// this step's (its lines would all say step=freeze).
		Log:    r.log,
		PidLog: r.opts.PidLog,
		// finish ends a good dump in this mode.
		KillAtFinish: r.finishMode() == engine.FinishKill,
	}
	if c.PageServer != nil {
		o.PageServer = &engine.PageServer{Address: c.PageServer.Address, Port: c.PageServer.Port}
	}
	if r.progress != nil {
		o.Progress = r.progress.bytes
	}
	d, err := r.opts.NewDumper(o)
	if err != nil {
		return fmt.Errorf("start dump of %d: %w", r.pid, err)
	}
	r.dumper = d
	return d.Freeze(ctx)
}

// makeTempDir creates the hidden sibling the images are written into.
func (r *run) makeTempDir() error {
	final := r.plan.ImagesDir
	parent := filepath.Dir(final)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", parent, err)
	}
	if err := checkFinalDirFree(final); err != nil {
		return err
	}
	// The temporary name carries the recipe's name ("~" cannot occur in
	// one, so the prefix is unambiguous). A run holding the recipe's lock
	// knows that every such directory left in parent is the debris of an
	// earlier run that was killed before it could roll back (SIGKILL, a
	// power cut): no other run of this recipe can be writing it. The lock
	// step removed them already (removeStaleTemps), before the freeze.
	prefix := planner.TempDirPrefix(r.plan.Name)
	d, err := os.MkdirTemp(parent, prefix+filepath.Base(final)+".tmp-")
	if err != nil {
		return fmt.Errorf("create temporary images directory: %w", err)
	}
	r.tmpDir = d
	return nil
}

// removeStaleTemps removes the temporary images directories named with
// prefix in parent. Failing to remove one is not an error: it is hidden,
// and snapshot listing, latestIn and retention ignore it.
func removeStaleTemps(parent, prefix string, log zerolog.Logger) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range ents {
		n := e.Name()
		if !e.IsDir() || !strings.HasPrefix(n, prefix) || !strings.Contains(n, ".tmp-") {
			continue
		}
		p := filepath.Join(parent, n)
		if err := os.RemoveAll(p); err != nil {
			log.Warn().Err(err).Str("dir", p).Msg("cannot remove the temporary images directory of an earlier run that did not finish")
			continue
		}
		log.Info().Str("dir", p).Msg("removed the temporary images directory of an earlier run of this recipe that did not finish")
	}
}

// checkFinalDirFree: the final images directory must not exist, or be an
// empty directory (rename(2) replaces an empty directory atomically).
func checkFinalDirFree(final string) error {
	st, err := os.Stat(final)
	if err != nil {
		return nil
	}
	if !st.IsDir() {
		return fmt.Errorf("images directory %s exists and is not a directory", final)
	}
	if ents, err := os.ReadDir(final); err == nil && len(ents) > 0 {
		return fmt.Errorf("images directory %s exists and is not empty (crtools never writes into an existing image set)", final)
	}
	return nil
}

// commit marks the images complete, fsyncs them and renames them into
// place: until the rename nothing under the final name exists.
func (r *run) commit() error {
	m := Marker{Job: r.plan.Name, Completed: r.opts.Now().UTC(), RootPid: r.pid}
	if err := writeMarker(r.tmpDir, m); err != nil {
		return err
	}
	// One syncfs of its filesystem and an fsync of the dir: the rename
	// below publishes only data that is on disk.
	if err := image.SyncDir(r.tmpDir); err != nil {
		return err
	}
	// unix.Rename, not os.Rename: Go refuses to rename onto an existing
	// directory, but rename(2) atomically replaces an empty one (the
	// user's `mkdir ckpt; crtools dump -D ckpt`).
	if err := unix.Rename(r.tmpDir, r.plan.ImagesDir); err != nil {
		return fmt.Errorf("rename images into place: %w", err)
	}
	r.tmpDir = ""
	r.finalDir = r.plan.ImagesDir
	if err := fsyncPath(filepath.Dir(r.finalDir)); err != nil {
		return err
	}
	if r.opts.OnCommit != nil {
		r.opts.OnCommit(r.finalDir)
	}
	return nil
}

// finishMode is how finish ends a good dump.
func (r *run) finishMode() engine.FinishMode {
	switch r.plan.Finish {
	case planner.FinishLeaveRunning:
		return engine.FinishLeaveRunning
	case planner.FinishLeaveStopped:
		return engine.FinishLeaveStopped
	}
	return engine.FinishKill
}

func (r *run) finish() error {
	mode := r.finishMode()
	if err := r.dumper.Finish(mode); err != nil {
		return err
	}
	if mode == engine.FinishKill && r.launched != nil {
		r.reapAtEnd = true
	}
	return nil
}

func (r *run) retention() error {
	ret := r.job.Checkpoint.Retention
	removed, err := Prune(r.plan.SnapshotsDir, r.plan.Name, ret.KeepLast, ret.KeepWithin.D(), r.opts.Now())
	r.journal.Pruned = append(r.journal.Pruned, removed...)
	for _, d := range removed {
		r.log.Info().Str("dir", d).Msg("pruned snapshot")
	}
	return err
}

func (r *run) pickImages() error {
	if r.plan.LatestIn != "" {
		d, err := LatestSnapshot(r.plan.LatestIn)
		if err != nil {
			return err
		}
		r.finalDir = d
		r.log.Info().Str("dir", d).Msg("newest complete snapshot")
		return nil
	}
	st, err := os.Stat(r.plan.ImagesDir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("images directory: %w (give -D the directory a dump wrote)", err)
	}
	if err != nil {
		return fmt.Errorf("images directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("images directory %s is not a directory", r.plan.ImagesDir)
	}
	r.finalDir = r.plan.ImagesDir
	return nil
}

func (r *run) load(ctx context.Context, log zerolog.Logger) error {
	if r.opts.NewRestorer == nil {
		return fmt.Errorf("restore %w (this crtools is built without engine/restore)", ErrEngineMissing)
	}
	rs := r.job.Restore
	o := engine.RestoreOptions{
		ImagesDir:      r.finalDir,
		Pid:            rs.Pid,
		Detached:       rs.Detached,
		Root:           rs.Options.Root,
		EvasiveDevices: rs.Options.EvasiveDevices,
		TCPEstablished: rs.Options.TCPEstablished,
		ShellJob:       rs.Options.ShellJob,
		FileLocks:      rs.Options.FileLocks,
		// ActionScripts: run by the executor's hook steps, not the engine.
		// The job's logger: the engine logs in later steps too.
		Log:    r.log,
		PidLog: r.opts.PidLog,
	}
	for _, v := range rs.VethPairs {
		o.VethPairs = append(o.VethPairs, engine.VethPair{Inside: v.Inside, Outside: v.Outside})
	}
	if r.progress != nil {
		o.Progress = r.progress.bytes
	}
	rst, err := r.opts.NewRestorer(o)
	if err != nil {
		return fmt.Errorf("start restore from %s: %w", r.finalDir, err)
	}
	r.restorer = rst
	return rst.Load(ctx)
}
