package executor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/planner"
	"github.com/crtools/crtools/spec"
)

// events records what fake engines were asked to do, in order.
type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	e.log = append(e.log, s)
	e.mu.Unlock()
}

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.log...)
}

func (e *events) has(s string) bool {
	for _, x := range e.list() {
		if x == s {
			return true
		}
	}
	return false
}

type fakeDumper struct {
	ev       *events
	pid      int
	failUndo bool          // Resume fails
	block    chan struct{} // Freeze waits on it when set
}

func (d *fakeDumper) Freeze(ctx context.Context) error {
	d.ev.add("freeze")
	if d.block != nil {
		<-d.block
	}
	return nil
}
func (d *fakeDumper) Collect(ctx context.Context) error { d.ev.add("collect"); return nil }
func (d *fakeDumper) WriteImages(ctx context.Context, dir string) error {
	d.ev.add("write")
	return os.WriteFile(filepath.Join(dir, "inventory.img"), []byte("fake"), 0o644)
}
func (d *fakeDumper) Resume() error {
	d.ev.add("resume")
	if d.failUndo {
		return errors.New("resume refused (fake)")
	}
	return nil
}
func (d *fakeDumper) Finish(m engine.FinishMode) error {
	d.ev.add(fmt.Sprintf("finish-%d", m))
	return nil
}
func (d *fakeDumper) Pids() []int  { return []int{d.pid} }
func (d *fakeDumper) Close() error { d.ev.add("close"); return nil }

type fakeRestorer struct {
	ev   *events
	opts engine.RestoreOptions
}

func (r *fakeRestorer) Load(ctx context.Context) error {
	r.ev.add("load " + filepath.Base(r.opts.ImagesDir))
	return nil
}
func (r *fakeRestorer) CreateTasks(ctx context.Context) error  { r.ev.add("create"); return nil }
func (r *fakeRestorer) RestoreState(ctx context.Context) error { r.ev.add("state"); return nil }
func (r *fakeRestorer) Resume(ctx context.Context) error       { r.ev.add("run"); return nil }
func (r *fakeRestorer) Kill() error                            { r.ev.add("kill"); return nil }
func (r *fakeRestorer) RootPid() int                           { return 4242 }
func (r *fakeRestorer) Wait() (int, error)                     { r.ev.add("wait"); return 7, nil }
func (r *fakeRestorer) Close() error                           { r.ev.add("close"); return nil }

// startSleeper starts a real process to be the target's PID.
func startSleeper(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

func loadJob(t *testing.T, yaml, base string) *spec.Job {
	t.Helper()
	jobs, err := spec.Load("test.yaml", []byte(yaml), base)
	if err != nil {
		t.Fatalf("load spec: %v", err)
	}
	return jobs[0]
}

func buildPlan(t *testing.T, job *spec.Job, now time.Time) *planner.Plan {
	t.Helper()
	p, err := planner.Build(job, now)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func testOpts(t *testing.T, ev *events, d *fakeDumper) Options {
	return Options{
		Log:     zerolog.New(zerolog.NewTestWriter(t)),
		LockDir: filepath.Join(t.TempDir(), "locks"),
		NewDumper: func(o engine.DumpOptions) (engine.Dumper, error) {
			d.pid = o.Pid
			return d, nil
		},
		NewRestorer: func(o engine.RestoreOptions) (engine.Restorer, error) {
			return &fakeRestorer{ev: ev, opts: o}, nil
		},
	}
}

func checkpointYAML(pid int, dir, marker string) string {
	return fmt.Sprintf(`apiVersion: crtools/v1
kind: Checkpoint
metadata: {name: fi}
spec:
  target: {pid: %d}
  imagesDir: %s/{{ .Time }}
  leaveRunning: true
  hooks:
    preDump: {run: [sh, -c, "echo pre > %s"], undo: [rm, -f, %s]}
    postDump: [sh, -c, "test -n \"$CRTOOLS_IMAGES_DIR\""]
  retention: {keepLast: 2}
`, pid, dir, marker, marker)
}

// TestCheckpointFaultEachStep makes every step of a checkpoint plan fail
// in turn and checks the world: no images directory (final or
// temporary), the pre-dump hook's side effect undone, the tree resumed if
// it was frozen, undos in reverse order, exit code 1.
func TestCheckpointFaultEachStep(t *testing.T) {
	pid := startSleeper(t)
	root := t.TempDir()
	snaps := filepath.Join(root, "snaps")
	marker := filepath.Join(root, "pre-dump-ran")
	job := loadJob(t, checkpointYAML(pid, snaps, marker), root)
	names := []string{}
	for _, s := range buildPlan(t, job, time.Now()).Steps {
		names = append(names, s.Name)
	}
	finishAt := -1
	for i, n := range names {
		if n == "finish" {
			finishAt = i
		}
	}
	for i, fault := range names {
		for _, after := range []bool{false, true} {
			run := fault
			if after {
				run += FaultAfter
			}
			t.Run(run, func(t *testing.T) { checkpointFault(t, fault, after, i >= finishAt, pid, snaps, marker, job) })
		}
	}
}

// checkpointFault runs one fault of TestCheckpointFaultEachStep; after:
// the step did its work before failing; pastFinish: the step is finish
// or a later one.
func checkpointFault(t *testing.T, fault string, after, pastFinish bool, pid int, snaps, marker string, job *spec.Job) {
	os.RemoveAll(snaps)
	os.Remove(marker)
	ev := &events{}
	d := &fakeDumper{ev: ev}
	opts := testOpts(t, ev, d)
	opts.FaultStep = fault
	if after {
		opts.FaultStep += FaultAfter
	}
	p := buildPlan(t, job, time.Now())
	j := Run(context.Background(), p, opts)
	optional := fault == "retention"
	if optional {
		if j.Result != ResultDone || j.ExitCode() != 0 {
			t.Fatalf("optional step failure: result %s, want done", j.Result)
		}
		if st := stepStatus(j, fault); st != StatusWarning {
			t.Errorf("retention status %s, want warning", st)
		}
		return
	}
	if j.Result != ResultRolledBack || j.ExitCode() != 1 {
		t.Fatalf("result %s (exit %d), want rolled-back (1); journal error %q", j.Result, j.ExitCode(), j.Error)
	}
	if !strings.Contains(j.Error, "fault injected") {
		t.Errorf("journal error %q does not name the fault", j.Error)
	}
	if st := stepStatus(j, fault); !after && st != StatusFailed || after && st != StatusUndone && st != StatusNoUndo {
		t.Errorf("failed step status %s", st)
	}
	for _, s := range j.Steps {
		if s.Status == StatusDone || s.Status == StatusUndoFailed {
			t.Errorf("step %s left %s after rollback", s.Name, s.Status)
		}
	}
	// World: no snapshot, no temporary directory.
	if ents, err := os.ReadDir(snaps); err == nil && len(ents) > 0 {
		var n []string
		for _, e := range ents {
			n = append(n, e.Name())
		}
		t.Errorf("images left behind: %v", n)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Errorf("pre-dump hook side effect left behind")
	}
	evs := ev.list()
	froze := ev.has("freeze")
	if froze != ev.has("resume") {
		t.Errorf("freeze/resume mismatch: %v", evs)
	}
	if ran := pastFinish && (after || fault != "finish"); ev.has("finish-2") != ran {
		t.Errorf("finish ran: %v, want %v (fault at %s): %v", ev.has("finish-2"), ran, fault, evs)
	}
	// The process itself is untouched by the fakes; it must still run.
	if !alive(pid) {
		t.Fatalf("target died")
	}
	// Undo ran in reverse order of the steps it undoes.
	assertReverse(t, j)
	// The lock is free again.
	l, err := acquireLock(opts.LockDir, "fi")
	if err != nil {
		t.Errorf("lock still held after rollback: %v", err)
	} else {
		l.release()
	}
}

func stepStatus(j *Journal, name string) string {
	for _, s := range j.Steps {
		if s.Name == name {
			return s.Status
		}
	}
	return ""
}

// assertReverse: every undone step comes before the failed one, and the
// journal's steps keep plan order (undo order is checked through events).
func assertReverse(t *testing.T, j *Journal) {
	t.Helper()
	failed := -1
	for i, s := range j.Steps {
		if s.Status == StatusFailed {
			failed = i
		}
		if s.Status == StatusUndone && failed >= 0 {
			t.Errorf("step %s after the failed one was undone", s.Name)
		}
	}
}

// TestUndoReverseOrder checks the exact order of engine calls in a
// rollback: resume (undo freeze) after temp dir removal, hook undo after
// resume.
func TestUndoReverseOrder(t *testing.T) {
	pid := startSleeper(t)
	root := t.TempDir()
	marker := filepath.Join(root, "m")
	ev := &events{}
	d := &fakeDumper{ev: ev}
	opts := testOpts(t, ev, d)
	opts.FaultStep = "commit"
	job := loadJob(t, checkpointYAML(pid, filepath.Join(root, "s"), marker), root)
	// Record hook undo into the events through a file check after.
	j := Run(context.Background(), buildPlan(t, job, time.Now()), opts)
	if j.Result != ResultRolledBack {
		t.Fatalf("result %s", j.Result)
	}
	want := []string{"freeze", "collect", "write", "resume", "close"}
	if got := ev.list(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("engine calls %v, want %v", got, want)
	}
	var undone []string
	for _, s := range j.Steps {
		if s.Status == StatusUndone {
			undone = append(undone, s.Name)
		}
	}
	wantUndone := []string{"lock", "hook-pre-dump", "freeze", "create-temp-dir"}
	if strings.Join(undone, ",") != strings.Join(wantUndone, ",") {
		t.Errorf("undone %v, want %v", undone, wantUndone)
	}
}

// TestRollbackIncomplete: an undo that fails gives exit 3 and says what
// is left.
func TestRollbackIncomplete(t *testing.T) {
	pid := startSleeper(t)
	root := t.TempDir()
	ev := &events{}
	d := &fakeDumper{ev: ev, failUndo: true}
	opts := testOpts(t, ev, d)
	opts.FaultStep = "write-images"
	job := loadJob(t, checkpointYAML(pid, filepath.Join(root, "s"), filepath.Join(root, "m")), root)
	j := Run(context.Background(), buildPlan(t, job, time.Now()), opts)
	if j.Result != ResultRollbackIncomplete || j.ExitCode() != 3 {
		t.Fatalf("result %s exit %d, want rollback-incomplete 3", j.Result, j.ExitCode())
	}
	if len(j.Left) != 1 || !strings.Contains(j.Left[0], "freeze") || !strings.Contains(j.Left[0], "resume refused") {
		t.Errorf("left %q", j.Left)
	}
	if stepStatus(j, "freeze") != StatusUndoFailed {
		t.Errorf("freeze status %s", stepStatus(j, "freeze"))
	}
	// The rest was still undone.
	if stepStatus(j, "create-temp-dir") != StatusUndone || stepStatus(j, "lock") != StatusUndone {
		t.Errorf("other undos did not run: %+v", j.Steps)
	}
}

// TestKillIsPointOfNoReturn: after a killing finish, a failing post-dump
// hook does not remove the images.
func TestKillIsPointOfNoReturn(t *testing.T) {
	pid := startSleeper(t)
	root := t.TempDir()
	y := fmt.Sprintf(`apiVersion: crtools/v1
kind: Checkpoint
metadata: {name: kill}
spec:
  target: {pid: %d}
  imagesDir: %s/img
  hooks: {postDump: [sh, -c, "exit 3"]}
`, pid, root)
	ev := &events{}
	opts := testOpts(t, ev, &fakeDumper{ev: ev})
	j := Run(context.Background(), buildPlan(t, loadJob(t, y, root), time.Now()), opts)
	if j.Result != ResultFailed {
		t.Fatalf("result %s", j.Result)
	}
	if stepStatus(j, "lock") != StatusUndone {
		t.Errorf("lock %s, want undone (released)", stepStatus(j, "lock"))
	}
	if stepStatus(j, "finish") != StatusKept || stepStatus(j, "commit") != StatusKept {
		t.Errorf("finish %s commit %s, want kept", stepStatus(j, "finish"), stepStatus(j, "commit"))
	}
	if _, err := os.Stat(filepath.Join(root, "img", CompleteMarker)); err != nil {
		t.Errorf("images removed after the point of no return: %v", err)
	}
	if !strings.Contains(j.Error, "exit status 3") || !strings.Contains(j.Error, "point of no return") {
		t.Errorf("error %q", j.Error)
	}
	if ev.has("resume") {
		t.Errorf("a killed tree was 'resumed': %v", ev.list())
	}
}

// TestRestoreFaultEachStep: every restore step failing in turn leaves no
// restored task (Kill ran whenever CreateTasks had) and the images as
// they were.
func TestRestoreFaultEachStep(t *testing.T) {
	root := t.TempDir()
	snaps := filepath.Join(root, "snaps")
	for i, name := range []string{"a", "b"} {
		d := filepath.Join(snaps, name)
		os.MkdirAll(d, 0o755)
		writeMarker(d, Marker{Job: "x", Completed: time.Unix(int64(1000+i), 0)})
	}
	flag := filepath.Join(root, "post-restore")
	y := fmt.Sprintf(`apiVersion: crtools/v1
kind: Restore
metadata: {name: r}
spec:
  imagesDir: {latestIn: %s}
  hooks:
    preRestore: [sh, -c, "test \"$CRTOOL_SCRIPT_ACTION\" = pre-restore"]
    postRestore: {run: [touch, %s], undo: [rm, %s]}
    postExit: ["true"]
`, snaps, flag, flag)
	job := loadJob(t, y, root)
	var faults []string
	for _, s := range buildPlan(t, job, time.Now()).Steps {
		faults = append(faults, s.Name, s.Name+FaultAfter)
	}
	for _, fault := range faults {
		t.Run(fault, func(t *testing.T) {
			ev := &events{}
			opts := testOpts(t, ev, nil)
			opts.FaultStep = fault
			j := Run(context.Background(), buildPlan(t, job, time.Now()), opts)
			if name, after := strings.CutSuffix(fault, FaultAfter); name == "hook-post-exit" || name == "unlock" || after && name == "wait" {
				// After the wait (point of no return) nothing is undone.
				if j.ExitCode() != 1 || stepStatus(j, "wait") != StatusKept {
					t.Errorf("after wait: exit %d, wait %s", j.ExitCode(), stepStatus(j, "wait"))
				}
				return
			}
			if j.Result != ResultRolledBack {
				t.Fatalf("result %s: %s", j.Result, j.Error)
			}
			if ev.has("create") != ev.has("kill") {
				t.Errorf("created tasks not killed: %v", ev.list())
			}
			if _, err := os.Stat(flag); err == nil {
				t.Errorf("post-restore side effect left")
			}
			if _, err := os.Stat(filepath.Join(snaps, "b", CompleteMarker)); err != nil {
				t.Errorf("images touched: %v", err)
			}
			if ev.has("load a") {
				t.Errorf("picked the older snapshot: %v", ev.list())
			}
		})
	}
	// And the happy path: exit status of the restored root in the journal.
	ev := &events{}
	j := Run(context.Background(), buildPlan(t, job, time.Now()), testOpts(t, ev, nil))
	if j.Result != ResultDone || j.ExitStatus == nil || *j.ExitStatus != 7 || j.RootPid != 4242 {
		t.Fatalf("happy path: %+v", j)
	}
	if !ev.has("load b") {
		t.Errorf("did not restore the newest snapshot: %v", ev.list())
	}
	os.Remove(flag)
}

// TestConcurrentRunsLocked: a second run of a recipe while the first
// holds its lock ends at once with ResultLocked (exit 4) and changes
// nothing.
func TestConcurrentRunsLocked(t *testing.T) {
	pid := startSleeper(t)
	root := t.TempDir()
	job := loadJob(t, checkpointYAML(pid, filepath.Join(root, "s"), filepath.Join(root, "m")), root)
	ev1 := &events{}
	block := make(chan struct{})
	d1 := &fakeDumper{ev: ev1, block: block}
	opts := testOpts(t, ev1, d1)
	done := make(chan *Journal)
	go func() { done <- Run(context.Background(), buildPlan(t, job, time.Now()), opts) }()
	for !ev1.has("freeze") {
		time.Sleep(5 * time.Millisecond)
	}
	ev2 := &events{}
	opts2 := testOpts(t, ev2, &fakeDumper{ev: ev2})
	opts2.LockDir = opts.LockDir
	start := time.Now()
	j2 := Run(context.Background(), buildPlan(t, job, time.Now()), opts2)
	if j2.Result != ResultLocked || j2.ExitCode() != 4 {
		t.Fatalf("second run: %s exit %d", j2.Result, j2.ExitCode())
	}
	if time.Since(start) > time.Second {
		t.Errorf("second run took %s; must exit at once", time.Since(start))
	}
	if !strings.Contains(j2.Error, `recipe "fi" is locked by another run`) {
		t.Errorf("message %q", j2.Error)
	}
	if len(ev2.list()) != 0 {
		t.Errorf("locked run touched the engine: %v", ev2.list())
	}
	close(block)
	if j1 := <-done; j1.Result != ResultDone {
		t.Fatalf("first run: %s %s", j1.Result, j1.Error)
	}
}

// TestRetentionManyRuns runs a recipe 12 times with keepLast 3 and checks
// that exactly the 3 newest remain, and that other directories (another
// recipe's snapshot, an unmarked directory, a leftover temporary one) are
// never pruned.
func TestRetentionManyRuns(t *testing.T) {
	pid := startSleeper(t)
	root := t.TempDir()
	snaps := filepath.Join(root, "snaps")
	os.MkdirAll(filepath.Join(snaps, "not-a-snapshot"), 0o755)
	os.MkdirAll(filepath.Join(snaps, ".old.tmp-123"), 0o755)
	other := filepath.Join(snaps, "other-recipe")
	os.MkdirAll(other, 0o755)
	writeMarker(other, Marker{Job: "someone-else", Completed: time.Unix(1, 0)})
	y := fmt.Sprintf(`apiVersion: crtools/v1
kind: Checkpoint
metadata: {name: many}
spec:
  target: {pid: %d}
  imagesDir: %s/{{ .Time }}
  leaveRunning: true
  retention: {keepLast: 3}
`, pid, snaps)
	job := loadJob(t, y, root)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var made []string
	for i := 0; i < 12; i++ {
		now = now.Add(time.Hour)
		ev := &events{}
		opts := testOpts(t, ev, &fakeDumper{ev: ev})
		n := now
		opts.Now = func() time.Time { return n }
		j := Run(context.Background(), buildPlan(t, job, now), opts)
		if j.Result != ResultDone {
			t.Fatalf("run %d: %s %s", i, j.Result, j.Error)
		}
		made = append(made, j.ImagesDir)
		if i >= 3 && len(j.Pruned) != 1 || i < 3 && len(j.Pruned) != 0 {
			t.Errorf("run %d pruned %v", i, j.Pruned)
		}
	}
	s, err := Snapshots(snaps)
	if err != nil {
		t.Fatal(err)
	}
	var mine []string
	for _, x := range s {
		if x.Marker.Job == "many" {
			mine = append(mine, x.Dir)
		}
	}
	if strings.Join(mine, ",") != strings.Join(made[9:], ",") {
		t.Errorf("kept %v, want %v", mine, made[9:])
	}
	for _, keep := range []string{"not-a-snapshot", ".old.tmp-123", "other-recipe"} {
		if _, err := os.Stat(filepath.Join(snaps, keep)); err != nil {
			t.Errorf("%s was pruned", keep)
		}
	}
	latest, err := LatestSnapshot(snaps)
	if err != nil || latest != made[11] {
		t.Errorf("latest %s %v, want %s", latest, err, made[11])
	}
}

// TestPruneKeepWithinAndParents: keepWithin keeps young snapshots, the
// newest is always kept, and a snapshot another kept one depends on (its
// "parent" link) is kept.
func TestPruneKeepWithinAndParents(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)
	mk := func(name string, age time.Duration) string {
		p := filepath.Join(dir, name)
		os.MkdirAll(p, 0o755)
		writeMarker(p, Marker{Job: "j", Completed: now.Add(-age)})
		return p
	}
	mk("a", 72*time.Hour)
	b := mk("b", 48*time.Hour)
	c := mk("c", 30*time.Hour)
	mk("d", 2*time.Hour)
	e := mk("e", time.Hour)
	os.Symlink("../b", filepath.Join(e, "parent"))
	removed, err := Prune(dir, "j", 0, 24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(removed, ",") != filepath.Join(dir, "a")+","+c {
		t.Errorf("removed %v, want a and c (b is e's parent)", removed)
	}
	if _, err := os.Stat(b); err != nil {
		t.Errorf("parent b pruned")
	}
	// Everything old: the newest one stays anyway.
	removed, err = Prune(dir, "j", 0, time.Minute, now.Add(1000*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	left, _ := Snapshots(dir)
	if len(left) != 2 || left[1].Dir != e {
		t.Errorf("after pruning all old: %v (removed %v)", left, removed)
	}
}

// TestHookEnvAndTimeout: hooks see the action, job name and images dir;
// a hook that outlives its timeout fails the step (and is killed).
func TestHookEnvAndTimeout(t *testing.T) {
	pid := startSleeper(t)
	root := t.TempDir()
	envFile := filepath.Join(root, "env")
	script := filepath.Join(root, "script.sh")
	os.WriteFile(script, []byte("#!/bin/sh\necho \"script $CRTOOL_SCRIPT_ACTION $CRTOOLS_SCRIPT_ACTION\" >> "+envFile+"\n"), 0o755)
	y := fmt.Sprintf(`apiVersion: crtools/v1
kind: Checkpoint
metadata: {name: envjob}
spec:
  target: {pid: %d}
  imagesDir: %s/img
  leaveRunning: true
  hooks:
    scripts: [script.sh]
    postDump: [sh, -c, 'echo "hook $CRTOOLS_SCRIPT_ACTION $CRTOOLS_JOB_NAME $CRTOOLS_IMAGES_DIR $CRTOOLS_INIT_PID" >> %s']
`, pid, root, envFile)
	ev := &events{}
	j := Run(context.Background(), buildPlan(t, loadJob(t, y, root), time.Now()), testOpts(t, ev, &fakeDumper{ev: ev}))
	if j.Result != ResultDone {
		t.Fatalf("%s: %s", j.Result, j.Error)
	}
	b, _ := os.ReadFile(envFile)
	want := fmt.Sprintf("script pre-dump pre-dump\nscript post-dump post-dump\nhook post-dump envjob %s/img %d\n", root, pid)
	if string(b) != want {
		t.Errorf("hook env:\n%s\nwant:\n%s", b, want)
	}

	y2 := fmt.Sprintf(`apiVersion: crtools/v1
kind: Checkpoint
metadata: {name: slow}
spec:
  target: {pid: %d}
  imagesDir: %s/img2
  hooks:
    preDump: {run: [sleep, "30"], timeout: 200ms}
`, pid, root)
	start := time.Now()
	ev2 := &events{}
	j2 := Run(context.Background(), buildPlan(t, loadJob(t, y2, root), time.Now()), testOpts(t, ev2, &fakeDumper{ev: ev2}))
	if j2.Result != ResultRolledBack || !strings.Contains(j2.Error, "timed out after 200ms") {
		t.Fatalf("%s: %s", j2.Result, j2.Error)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("timeout took %s", time.Since(start))
	}
	if ev2.has("freeze") {
		t.Errorf("froze after a failed pre-dump hook")
	}
}

// TestExecTargetKilledOnRollback: a launched program is our side effect;
// a failed dump kills it. On success with leaveRunning it runs on.
func TestExecTargetKilledOnRollback(t *testing.T) {
	root := t.TempDir()
	y := fmt.Sprintf(`apiVersion: crtools/v1
kind: Checkpoint
metadata: {name: ex}
spec:
  target:
    exec:
      command: [sh, -c, "echo started; touch ready; exec sleep 300"]
      stdout: out.txt
      ready: {file: ready, timeout: 5s}
  imagesDir: %s/img
  leaveRunning: true
`, root)
	job := loadJob(t, y, root)
	ev := &events{}
	opts := testOpts(t, ev, &fakeDumper{ev: ev})
	opts.FaultStep = "freeze"
	j := Run(context.Background(), buildPlan(t, job, time.Now()), opts)
	if j.Result != ResultRolledBack || j.RootPid == 0 {
		t.Fatalf("%s %s pid %d", j.Result, j.Error, j.RootPid)
	}
	if alive(j.RootPid) {
		t.Errorf("launched program %d still alive after rollback", j.RootPid)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "out.txt")); string(b) != "started\n" {
		t.Errorf("stdout file: %q", b)
	}
	os.Remove(filepath.Join(root, "ready"))
	ev2 := &events{}
	j2 := Run(context.Background(), buildPlan(t, job, time.Now()), testOpts(t, ev2, &fakeDumper{ev: ev2}))
	if j2.Result != ResultDone {
		t.Fatalf("%s %s", j2.Result, j2.Error)
	}
	if !alive(j2.RootPid) {
		t.Errorf("leaveRunning: launched program died")
	}
	p, _ := os.FindProcess(j2.RootPid)
	p.Kill()
	p.Wait()
}

// TestEngineMissing: without an engine the freeze step fails with a clear
// message and nothing is left.
func TestEngineMissing(t *testing.T) {
	pid := startSleeper(t)
	root := t.TempDir()
	job := loadJob(t, checkpointYAML(pid, filepath.Join(root, "s"), filepath.Join(root, "m")), root)
	opts := testOpts(t, &events{}, nil)
	opts.NewDumper = nil
	saved := engine.NewDumper
	engine.NewDumper = nil
	defer func() { engine.NewDumper = saved }()
	j := Run(context.Background(), buildPlan(t, job, time.Now()), opts)
	if j.Result != ResultRolledBack || !strings.Contains(j.Error, "dump engine not available") {
		t.Fatalf("%s: %s", j.Result, j.Error)
	}
}

// TestExecTargetNotReady: a program that never gets ready is killed by
// the failing step itself (a failed step has no undo).
func TestExecTargetNotReady(t *testing.T) {
	root := t.TempDir()
	y := fmt.Sprintf(`apiVersion: crtools/v1
kind: Checkpoint
metadata: {name: nr}
spec:
  target:
    exec:
      command: [sh, -c, "echo $$ > pid; exec sleep 300"]
      ready: {file: never, timeout: 300ms}
  imagesDir: %s/img
`, root)
	ev := &events{}
	j := Run(context.Background(), buildPlan(t, loadJob(t, y, root), time.Now()), testOpts(t, ev, &fakeDumper{ev: ev}))
	if j.Result != ResultRolledBack || !strings.Contains(j.Error, "not ready after 300ms (waiting for file") {
		t.Fatalf("%s: %s", j.Result, j.Error)
	}
	if j.RootPid == 0 || alive(j.RootPid) {
		t.Errorf("program %d left running", j.RootPid)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", j.RootPid)); err == nil {
		t.Errorf("program %d not reaped", j.RootPid)
	}
}

// TestProgressLine: the progress display redraws one line per step and
// per memory percentage, and clears it at the end.
func TestProgressLine(t *testing.T) {
	var b strings.Builder
	p := &progress{w: &b, total: 12}
	p.step(4, "freeze")
	p.step(7, "write-images")
	p.bytes(50<<20, 100<<20)
	p.bytes(50<<20, 100<<20) // same percentage: no redraw
	p.step(7, "write-images")
	p.bytes(3<<20, 0) // total unknown: MiB only
	p.bytes(3<<20+5, 0)
	p.clear()
	want := "\r\x1b[K[4/12] freeze\r\x1b[K[7/12] write-images\r\x1b[K[7/12] write-images  50% (50 MiB)" +
		"\r\x1b[K[7/12] write-images\r\x1b[K[7/12] write-images 3 MiB\r\x1b[K"
	if b.String() != want {
		t.Errorf("got %q\nwant %q", b.String(), want)
	}
}

// TestProgressLineConcurrent: a restore's two lanes report memory from two
// goroutines at once, not always in order: the line never goes back and
// ends at 100% (run with -race).
func TestProgressLineConcurrent(t *testing.T) {
	var b strings.Builder
	p := &progress{w: &b, total: 12}
	p.step(8, "restore-state")
	const total = 100 << 20
	var done atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 25 {
				p.bytes(done.Add(1<<20), total)
			}
		})
	}
	wg.Wait()
	p.bytes(40<<20, total) // late and behind: not drawn
	last := -1
	for _, f := range strings.Split(b.String(), "\r\x1b[K")[2:] {
		var pct int
		if _, err := fmt.Sscanf(f, "[8/12] restore-state %d%%", &pct); err != nil {
			t.Fatalf("line %q: %v", f, err)
		}
		if pct <= last {
			t.Errorf("progress went from %d%% to %d%%", last, pct)
		}
		last = pct
	}
	if last != 100 {
		t.Errorf("last percentage drawn %d, want 100", last)
	}
}

// TestImagesDirTaken: an existing non-empty images directory fails the
// job before the tree is frozen and is left untouched; an existing empty
// one is replaced atomically.
func TestImagesDirTaken(t *testing.T) {
	pid := startSleeper(t)
	root := t.TempDir()
	dir := filepath.Join(root, "ckpt")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "old.img"), []byte("keep"), 0o644)
	y := fmt.Sprintf("apiVersion: crtools/v1\nkind: Checkpoint\nmetadata: {name: taken}\nspec:\n  target: {pid: %d}\n  imagesDir: %s\n  leaveRunning: true\n", pid, dir)
	ev := &events{}
	j := Run(context.Background(), buildPlan(t, loadJob(t, y, root), time.Now()), testOpts(t, ev, &fakeDumper{ev: ev}))
	if j.Result != ResultRolledBack || !strings.Contains(j.Error, "step lock: images directory "+dir+" exists and is not empty") {
		t.Fatalf("%s: %s", j.Result, j.Error)
	}
	if ev.has("freeze") {
		t.Errorf("froze the tree for a taken directory")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "old.img")); string(b) != "keep" {
		t.Errorf("existing images touched")
	}
	os.Remove(filepath.Join(dir, "old.img"))
	ev = &events{}
	j = Run(context.Background(), buildPlan(t, loadJob(t, y, root), time.Now()), testOpts(t, ev, &fakeDumper{ev: ev}))
	if j.Result != ResultDone {
		t.Fatalf("empty dir: %s: %s", j.Result, j.Error)
	}
	if _, err := os.Stat(filepath.Join(dir, "inventory.img")); err != nil {
		t.Errorf("images not in the formerly empty directory: %v", err)
	}
}

// TestRetentionCronRecipe runs the retention of examples/cron-snapshots.yaml
// (keepLast 6 and keepWithin 24h) every two hours for three days, with a
// failed run now and then: after every run exactly the snapshots younger
// than 24h or among the newest 6 remain, a failed run prunes nothing and
// leaves nothing, and the newest complete one is always there.
func TestRetentionCronRecipe(t *testing.T) {
	pid := startSleeper(t)
	root := t.TempDir()
	b, err := os.ReadFile(filepath.Join("..", "examples", "cron-snapshots.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	snaps := filepath.Join(root, "snaps")
	pidFile := filepath.Join(root, "pid")
	os.WriteFile(pidFile, []byte(fmt.Sprint(pid)), 0o644)
	y := strings.NewReplacer("/run/long-computation.pid", pidFile, "/var/lib/crtools/long-computation", snaps,
		"log: {file: dump.log, level: 2}", "").Replace(string(b))
	if !strings.Contains(y, "retention: {keepLast: 6, keepWithin: 24h}") {
		t.Fatalf("the recipe's retention changed; update this test:\n%s", y)
	}
	job := loadJob(t, y, root)
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	type snap struct {
		dir string
		at  time.Time
	}
	var made []snap
	var pruneAt time.Time // the last successful run prunes as of its time
	for i := 0; i < 36; i++ {
		now = now.Add(2 * time.Hour)
		ev := &events{}
		opts := testOpts(t, ev, &fakeDumper{ev: ev})
		n := now
		opts.Now = func() time.Time { return n }
		failed := i%7 == 6
		if failed {
			opts.FaultStep = "commit"
		}
		j := Run(context.Background(), buildPlan(t, job, now), opts)
		if failed {
			if j.Result != ResultRolledBack || len(j.Pruned) != 0 {
				t.Fatalf("run %d: failed run: %s, pruned %v", i, j.Result, j.Pruned)
			}
		} else {
			if j.Result != ResultDone {
				t.Fatalf("run %d: %s %s", i, j.Result, j.Error)
			}
			made = append(made, snap{j.ImagesDir, now})
			pruneAt = now
		}
		var want []string
		for k, s := range made {
			if pruneAt.Sub(s.at) <= 24*time.Hour || k >= len(made)-6 {
				want = append(want, s.dir)
			}
		}
		all, err := Snapshots(snaps)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, s := range all {
			got = append(got, s.Dir)
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("after run %d (%s):\nkept %v\nwant %v", i, now, got, want)
		}
		if ents, _ := os.ReadDir(snaps); len(ents) != len(want) {
			t.Fatalf("after run %d: %d entries in %s, want %d snapshots only", i, len(ents), snaps, len(want))
		}
		if l, err := LatestSnapshot(snaps); err != nil || l != made[len(made)-1].dir {
			t.Fatalf("after run %d: latest %s %v", i, l, err)
		}
	}
}

// TestStaleTempDirsRemoved: a run holding the recipe's lock removes the
// temporary images directories an earlier run of the same recipe left
// when it was killed (SIGKILL: no rollback ran), and nothing else: not
// another recipe's, not a hidden directory of unknown origin.
func TestStaleTempDirsRemoved(t *testing.T) {
	pid := startSleeper(t)
	root := t.TempDir()
	snaps := filepath.Join(root, "snaps")
	stale := filepath.Join(snaps, ".stale~20260101T000000Z.tmp-123")
	os.MkdirAll(stale, 0o755)
	os.WriteFile(filepath.Join(stale, "pages-1.img"), []byte("half written"), 0o644)
	keep := []string{".stale.x~20260101T000000Z.tmp-9", ".other~20260101T000000Z.tmp-7", ".old.tmp-123"}
	for _, k := range keep {
		os.MkdirAll(filepath.Join(snaps, k), 0o755)
	}
	job := loadJob(t, fmt.Sprintf(`apiVersion: crtools/v1
kind: Checkpoint
metadata: {name: stale}
spec:
  target: {pid: %d}
  imagesDir: %s/{{ .Time }}
  leaveRunning: true
`, pid, snaps), root)
	ev := &events{}
	now := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	opts := testOpts(t, ev, &fakeDumper{ev: ev})
	opts.Now = func() time.Time { return now }
	j := Run(context.Background(), buildPlan(t, job, now), opts)
	if j.Result != ResultDone {
		t.Fatalf("run: %s %s", j.Result, j.Error)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale temporary directory of this recipe still there (%v)", err)
	}
	for _, k := range keep {
		if _, err := os.Stat(filepath.Join(snaps, k)); err != nil {
			t.Errorf("%s was removed: %v", k, err)
		}
	}
	if _, err := os.Stat(filepath.Join(j.ImagesDir, CompleteMarker)); err != nil {
		t.Errorf("the run's own snapshot is not complete: %v", err)
	}
}
