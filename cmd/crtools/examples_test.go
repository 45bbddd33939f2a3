package main

// End-to-end tests of the job layer on the real engine: the examples as
// written, and fault injection into each step of a checkpoint and of a
// restore of a live workload. They run the built crtools binary, as a
// user (or cron) would.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/executor"
	"github.com/crtools/crtools/planner"
	"github.com/crtools/crtools/spec"
)

var (
	binOnce sync.Once
	binDir  string // removed by TestMain
	binPath string
	binErr  error
)

// crtoolsBin builds the crtools binary once per test run (TestMain removes
// it) and makes the calling test process a child subreaper.
func crtoolsBin(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("these tests checkpoint real processes and need root (CI runs as root)")
	}
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "crtools-test-bin-"); binErr != nil {
			return
		}
		p := filepath.Join(binDir, "crtools")
		if out, err := exec.Command("go", "build", "-o", p, ".").CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		binPath = p
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	// Restored detached trees are re-parented to us when crtools exits;
	// as a subreaper we can reap them instead of leaving them to init.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("become child subreaper: %v", err)
	}
	return binPath
}

type cliResult struct {
	code           int
	stdout, stderr string
	journals       []executor.Journal
}

// crtoolsRun runs the binary with env additions and returns its result;
// --journal is added for apply so tests can read what happened.
func crtoolsRun(t *testing.T, env []string, args ...string) cliResult {
	t.Helper()
	bin := crtoolsBin(t)
	var jf string
	if len(args) > 0 && args[0] == "apply" {
		jf = filepath.Join(t.TempDir(), "journal.json")
		args = append([]string{"apply", "--journal", jf}, args[1:]...)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	r := cliResult{stdout: o.String(), stderr: e.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run crtools: %v", err)
	}
	if jf != "" {
		if b, err := os.ReadFile(jf); err == nil {
			if err := json.Unmarshal(b, &r.journals); err != nil {
				t.Fatalf("journal: %v\n%s", err, b)
			}
		}
	}
	return r
}

// jobKillReap kills a process that is our child (directly or as subreaper)
// and reaps it.
func jobKillReap(pid int) {
	if pid <= 0 {
		return
	}
	unix.Kill(pid, unix.SIGKILL)
	var ws unix.WaitStatus
	for i := 0; i < 100; i++ {
		wpid, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if wpid == pid || err != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// jobProcState is the state letter of /proc/PID/stat ("" if gone).
func jobProcState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return ""
	}
	return s[i+2 : i+3]
}

// waitGrows waits until file has more lines than n (the workload carries
// on) and returns its content.
func waitGrows(t *testing.T, file string, n int) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(file)
		if strings.Count(string(b), "\n") > n {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s stopped growing at %d lines:\n%s", file, n, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func lines(s string) int { return strings.Count(s, "\n") }

// TestExampleDemo runs examples/demo.yaml as the README says, with one
// change: its /tmp/crtools-demo directory is moved into the test's temp
// directory, so that a demo someone runs by hand on the same machine
// cannot disturb the test (nor the test the demo). The bundled counter
// (examples/counter) is copied next to it: the spec names it relative to
// its own directory.
func TestExampleDemo(t *testing.T) {
	crtoolsBin(t)
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", "demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	d := t.TempDir()
	demo := filepath.Join(d, "demo.yaml")
	os.WriteFile(demo, []byte(strings.ReplaceAll(string(b), "/tmp/crtools-demo", d)), 0o644)
	os.Mkdir(filepath.Join(d, "counter"), 0o755)
	for _, f := range []string{"counter.pl", "check.pl"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", "counter", f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(d, "counter", f), b, 0o755)
	}
	start := time.Now()
	r := crtoolsRun(t, []string{lockDirEnv + "=" + t.TempDir()}, "apply", demo)
	took := time.Since(start)
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if len(r.journals) != 2 || r.journals[0].RootPid != r.journals[1].RootPid || *r.journals[1].ExitStatus != 0 {
		t.Fatalf("journals: %+v", r.journals)
	}
	pid := r.journals[0].RootPid
	if !strings.Contains(r.stdout, fmt.Sprintf("OK: the restored counter carried on from where it was checkpointed: pid %d, ", pid)) {
		t.Errorf("no OK line for pid %d:\n%s", pid, r.stdout)
	}
	// The log goes to files: stderr (not a terminal) stays empty.
	if r.stderr != "" {
		t.Errorf("stderr: %q", r.stderr)
	}
	// Independently of check.pl: ticks 1..15 each exactly once, by the
	// same pid with the same in-memory token, one start, and the pause
	// after the checkpoint.
	out, _ := os.ReadFile(filepath.Join(d, "counter.out"))
	if strings.Count(string(out), " started ") != 1 {
		t.Errorf("started %d times:\n%s", strings.Count(string(out), " started "), out)
	}
	tokens := map[string]bool{}
	for i := 1; i <= 15; i++ {
		re := regexp.MustCompile(fmt.Sprintf(`(?m)^tick %d \(pid %d, token (\w+), sum %d\)`, i, pid, i*(i+1)/2))
		m := re.FindAllStringSubmatch(string(out), -1)
		if len(m) != 1 {
			t.Errorf("tick %d printed %d times", i, len(m))
			continue
		}
		tokens[m[0][1]] = true
	}
	if len(tokens) != 1 || !strings.Contains(string(out), "pause") {
		t.Errorf("tokens %v; output:\n%s", tokens, out)
	}
	t.Logf("demo took %s", took)
}

// TestExamplePrebake bakes the slow program, then starts it from its
// images: it is serving at once, without warming up again.
func TestExamplePrebake(t *testing.T) {
	crtoolsBin(t)
	// As written, with /tmp/crtools-prebake moved into the test's own
	// temp directory (see TestExampleDemo).
	d := t.TempDir()
	copyEx := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", name))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(d, name)
		os.WriteFile(p, []byte(strings.ReplaceAll(string(b), "/tmp/crtools-prebake", d)), 0o644)
		return p
	}
	bake, startSpec := copyEx("prebake.yaml"), copyEx("prebake-start.yaml")
	appOut := filepath.Join(d, "app.out")
	env := []string{lockDirEnv + "=" + t.TempDir()}
	r := crtoolsRun(t, env, "apply", bake)
	if r.code != 0 {
		t.Fatalf("bake: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	pid := r.journals[0].RootPid
	if jobProcState(pid) != "" {
		t.Fatalf("baked program %d still exists (state %s)", pid, jobProcState(pid))
	}
	before, _ := os.ReadFile(appOut)
	start := time.Now()
	r = crtoolsRun(t, env, "apply", startSpec)
	took := time.Since(start)
	if r.code != 0 {
		t.Fatalf("start: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	defer jobKillReap(pid)
	if r.journals[0].RootPid != pid {
		t.Errorf("restored as %d, baked as %d", r.journals[0].RootPid, pid)
	}
	out := waitGrows(t, appOut, lines(string(before))+2)
	if strings.Count(out, "warmed up") != 1 {
		t.Errorf("warmed up again:\n%s", out)
	}
	if !strings.HasSuffix(out, fmt.Sprintf("(pid %d)\n", pid)) {
		t.Errorf("not serving as %d:\n%s", pid, out)
	}
	t.Logf("prebaked start took %s (the warm-up takes 2s)", took)
}

// writeLiveJob writes to file a Checkpoint job named name that snapshots
// pid into snaps/{{ .Time }} and leaves it running; spec holds the job's
// further spec lines (indented two spaces, ending in a newline).
func writeLiveJob(t *testing.T, file, name string, pid int, spec string) {
	t.Helper()
	head := fmt.Sprintf(`apiVersion: crtools/v1
kind: Checkpoint
metadata: {name: %s}
spec:
  target: {pid: %d}
  imagesDir: snaps/{{ .Time }}
  leaveRunning: true
`, name, pid)
	if err := os.WriteFile(file, []byte(head+spec), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startCounter starts a perl counter as our child, in its own session,
// printing to out; it returns the pid.
func startCounter(t *testing.T, out string) *exec.Cmd {
	t.Helper()
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("perl", "-e", `$| = 1; print "started $$\n"; my $n = 0; while (1) { $n++; print "n=$n\n"; select(undef, undef, undef, 0.05); }`)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitGrows(t, out, 2)
	return cmd
}

// TestExampleCronSnapshotsAndRestoreLatest: the cron recipe run three
// times against a long computation, the computation "crashes", and
// restore-latest.yaml brings it back from the newest snapshot.
func TestExampleCronSnapshotsAndRestoreLatest(t *testing.T) {
	crtoolsBin(t)
	d := t.TempDir()
	out := filepath.Join(d, "calc.out")
	calc := startCounter(t, out)
	pid := calc.Process.Pid
	os.WriteFile(filepath.Join(d, "calc.pid"), []byte(strconv.Itoa(pid)+"\n"), 0o644)
	rewrite := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", name))
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "/run/long-computation.pid", filepath.Join(d, "calc.pid"))
		s = strings.ReplaceAll(s, "/var/lib/crtools/long-computation", filepath.Join(d, "snaps"))
		p := filepath.Join(d, name)
		os.WriteFile(p, []byte(s), 0o644)
		return p
	}
	cron, restore := rewrite("cron-snapshots.yaml"), rewrite("restore-latest.yaml")
	env := []string{lockDirEnv + "=" + t.TempDir()}
	// The first snapshot is taken by the crontab line, the second by the
	// systemd service, as written (only the installed paths differ).
	installed := strings.NewReplacer("/usr/local/bin/crtools", crtoolsBin(t), "/etc/crtools/cron-snapshots.yaml", cron,
		"/var/log/crtools-snapshot.log", filepath.Join(d, "cron.log"))
	byCron := installed.Replace(cronCommand(t))
	byTimer := installed.Replace(systemdExecStart(t))
	var snaps []string
	for i := 0; i < 3; i++ {
		var r cliResult
		switch i {
		case 0:
			r = runShell(t, env, byCron)
		case 1:
			r = runShell(t, env, byTimer)
		default:
			r = crtoolsRun(t, env, "apply", cron)
		}
		if r.code != 0 {
			t.Fatalf("snapshot %d: exit %d\n%s\n%s", i, r.code, r.stdout, r.stderr)
		}
		if i < 2 {
			// Run without --journal: find the new snapshot.
			all, err := executor.Snapshots(filepath.Join(d, "snaps"))
			if err != nil || len(all) != i+1 {
				t.Fatalf("after snapshot %d: %v %v", i, all, err)
			}
			r.journals = []executor.Journal{{ImagesDir: all[i].Dir}}
		}
		snaps = append(snaps, r.journals[0].ImagesDir)
		if _, err := os.Stat(filepath.Join(r.journals[0].ImagesDir, "dump.log")); err != nil {
			t.Errorf("dump.log not inside the snapshot: %v", err)
		}
		// leaveRunning: the computation carries on between snapshots.
		b, _ := os.ReadFile(out)
		waitGrows(t, out, lines(string(b))+3)
	}
	latest, err := executor.LatestSnapshot(filepath.Join(d, "snaps"))
	if err != nil || latest != snaps[2] {
		t.Fatalf("latest %s %v, want %s", latest, err, snaps[2])
	}
	// Crash.
	calc.Process.Kill()
	calc.Wait()
	crashed, _ := os.ReadFile(out)
	r := crtoolsRun(t, env, "apply", restore)
	if r.code != 0 {
		t.Fatalf("restore: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	defer jobKillReap(pid)
	if r.journals[0].RootPid != pid || !strings.Contains(r.stdout, "restored "+snaps[2]) {
		t.Errorf("restored pid %d (want %d); stdout %s", r.journals[0].RootPid, pid, r.stdout)
	}
	after := waitGrows(t, out, lines(string(crashed))+3)
	if strings.Count(after, "started") != 1 {
		t.Errorf("the computation started again:\n%s", after[len(crashed):])
	}
	if b, _ := os.ReadFile(filepath.Join(d, "cron.log")); !strings.Contains(string(b), `Journal of Checkpoint "long-computation": done`) {
		t.Errorf("the crontab line's log has no journal:\n%s", b)
	}
	// It resumed from the snapshot's count: the first new line continues
	// a count already seen before the crash, not from n=1.
	first := strings.SplitN(after[len(crashed):], "\n", 2)[0]
	if !strings.HasPrefix(first, "n=") || first == "n=1" || !strings.Contains(string(crashed), first+"\n") {
		t.Errorf("first line after restore %q does not continue the snapshot's count", first)
	}
}

// stepNames plans a spec file and returns its step names.
func stepNames(t *testing.T, file string) []string {
	t.Helper()
	jobs, err := spec.LoadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p, err := planner.Build(jobs[0], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range p.Steps {
		names = append(names, s.Name)
	}
	return names
}

// faultsOf lists every step of a spec file twice: failing before it does
// anything, and failing after its work (its own undo runs too).
func faultsOf(t *testing.T, file string) []string {
	var f []string
	for _, n := range stepNames(t, file) {
		f = append(f, n, n+executor.FaultAfter)
	}
	return f
}

// countsInOrder checks that a counter's output (started, n=1, n=2, ...)
// has every count exactly once and in order: the process kept its state
// through whatever happened, nothing repeated, nothing restarted.
func countsInOrder(t *testing.T, out string) {
	t.Helper()
	ls := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(ls) < 2 || !strings.HasPrefix(ls[0], "started ") {
		t.Fatalf("output does not start with one start line:\n%s", out)
	}
	for i, l := range ls[1:] {
		if l != fmt.Sprintf("n=%d", i+1) {
			t.Fatalf("line %d is %q, want n=%d (state lost or restarted)", i+2, l, i+1)
		}
	}
}

// TestRealCheckpointFaultEachStep makes each step of a checkpoint of a
// live workload fail in turn, before and after its work (on the real
// engine), and checks the world: the workload runs on with the same PID
// and its state (its count goes on, every number once and in order), it
// is not left stopped or traced, no images directory, no temporary
// directory, no hook side effect whose hook has an undo; exit code 1.
func TestRealCheckpointFaultEachStep(t *testing.T) {
	crtoolsBin(t)
	d := t.TempDir()
	out := filepath.Join(d, "w.out")
	w := startCounter(t, out)
	pid := w.Process.Pid
	flag, postFlag := filepath.Join(d, "pre-dump-flag"), filepath.Join(d, "post-dump-flag")
	job := filepath.Join(d, "job.yaml")
	writeLiveJob(t, job, "fault", pid, fmt.Sprintf(`  hooks:
    preDump: {run: [touch, %s], undo: [rm, %s]}
    postDump: {run: [touch, %s], undo: [rm, %s]}
  retention: {keepLast: 1}
`, flag, flag, postFlag, postFlag))
	lockDir := t.TempDir()
	for _, fault := range faultsOf(t, job) {
		t.Run(fault, func(t *testing.T) {
			before, _ := os.ReadFile(out)
			r := crtoolsRun(t, []string{lockDirEnv + "=" + lockDir, executor.FaultEnv + "=" + fault}, "apply", job)
			if strings.HasPrefix(fault, "retention") {
				// Optional: a warning, the snapshot stands.
				if r.code != 0 {
					t.Fatalf("exit %d: %s", r.code, r.stderr)
				}
				if ents, _ := os.ReadDir(filepath.Join(d, "snaps")); len(ents) != 1 {
					t.Errorf("snapshots after a failed retention: %v", ents)
				}
				os.RemoveAll(filepath.Join(d, "snaps"))
				os.Remove(flag)
				os.Remove(postFlag)
				return
			}
			if r.code != 1 || !strings.Contains(r.stderr, "fault injected") || !strings.Contains(r.stderr, "step "+strings.TrimSuffix(fault, executor.FaultAfter)) {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			if st := jobProcState(pid); st != "S" && st != "R" {
				t.Fatalf("workload state %q after failed dump", st)
			}
			if tp := tracerPid(pid); tp != 0 {
				t.Errorf("workload still traced by %d", tp)
			}
			countsInOrder(t, waitGrows(t, out, lines(string(before))+3))
			if ents, _ := os.ReadDir(filepath.Join(d, "snaps")); len(ents) != 0 {
				t.Errorf("images left: %v", ents)
			}
			for _, f := range []string{flag, postFlag} {
				if _, err := os.Stat(f); err == nil {
					t.Errorf("hook side effect %s left", filepath.Base(f))
				}
			}
		})
	}
	// Afterwards the recipe still works: the lock is free, the workload
	// can be checkpointed.
	if r := crtoolsRun(t, []string{lockDirEnv + "=" + lockDir}, "apply", job); r.code != 0 {
		t.Fatalf("apply after the faults: exit %d: %s", r.code, r.stderr)
	}
}

func tracerPid(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "TracerPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return -1
}

// TestRealRestoreFaultEachStep checkpoints a workload (killing it), then
// makes each restore step fail in turn, before and after its work: no
// restored task may be left behind, no side effect of a hook with an
// undo, and the images stay as they were; finally a restore succeeds
// with the same PID and the count carries on.
func TestRealRestoreFaultEachStep(t *testing.T) {
	crtoolsBin(t)
	d := t.TempDir()
	out := filepath.Join(d, "w.out")
	lockDir := t.TempDir()
	env := []string{lockDirEnv + "=" + lockDir}
	ck := filepath.Join(d, "ck.yaml")
	os.WriteFile(ck, []byte(`apiVersion: crtools/v1
kind: Checkpoint
metadata: {name: ck}
spec:
  target:
    exec:
      command: [perl, -e, '$| = 1; print "started $$\n"; my $n = 0; while (1) { $n++; print "n=$n\n"; select(undef, undef, undef, 0.05); }']
      stdout: w.out
      ready: {delay: 300ms}
  imagesDir: images
`), 0o644)
	r := crtoolsRun(t, env, "apply", ck)
	if r.code != 0 {
		t.Fatalf("checkpoint: exit %d\n%s", r.code, r.stderr)
	}
	pid := r.journals[0].RootPid
	preFlag, postFlag := filepath.Join(d, "pre-restore-flag"), filepath.Join(d, "post-restore-flag")
	rs := filepath.Join(d, "rs.yaml")
	os.WriteFile(rs, []byte(fmt.Sprintf(`apiVersion: crtools/v1
kind: Restore
metadata: {name: rs}
spec:
  imagesDir: images
  detached: true
  hooks:
    preRestore: {run: [touch, %s], undo: [rm, %s]}
    postRestore: {run: [touch, %s], undo: [rm, %s]}
`, preFlag, preFlag, postFlag, postFlag)), 0o644)
	sum := func() string {
		ents, _ := os.ReadDir(filepath.Join(d, "images"))
		var s []string
		for _, e := range ents {
			i, _ := e.Info()
			s = append(s, fmt.Sprintf("%s:%d", e.Name(), i.Size()))
		}
		return strings.Join(s, ",")
	}
	images := sum()
	outBefore, _ := os.ReadFile(out)
	for _, fault := range faultsOf(t, rs) {
		t.Run(fault, func(t *testing.T) {
			r := crtoolsRun(t, append(env, executor.FaultEnv+"="+fault), "apply", rs)
			defer jobKillReap(pid)
			if r.code != 1 || !strings.Contains(r.stderr, "fault injected") {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			// Give a killed task a moment to be reaped by its new parent.
			for i := 0; i < 50 && jobProcState(pid) != "" && jobProcState(pid) != "Z"; i++ {
				time.Sleep(10 * time.Millisecond)
			}
			if st := jobProcState(pid); st != "" && st != "Z" {
				t.Errorf("restored task %d left behind (state %s)", pid, st)
			}
			if s := sum(); s != images {
				t.Errorf("images changed: %s -> %s", images, s)
			}
			for _, f := range []string{preFlag, postFlag} {
				if _, err := os.Stat(f); err == nil {
					t.Errorf("hook side effect %s left", filepath.Base(f))
				}
			}
		})
	}
	// A restore that failed after resume ran the workload for a moment
	// before killing it: its output may have grown. Put the file back as
	// it was at the checkpoint so the final check sees one history.
	os.WriteFile(out, outBefore, 0o644)
	r = crtoolsRun(t, env, "apply", rs)
	if r.code != 0 {
		t.Fatalf("restore: exit %d\n%s", r.code, r.stderr)
	}
	defer jobKillReap(pid)
	if r.journals[0].RootPid != pid {
		t.Errorf("restored as %d, want %d", r.journals[0].RootPid, pid)
	}
	countsInOrder(t, waitGrows(t, out, lines(string(outBefore))+3))
}

// TestRealConcurrentApply: two applies of one recipe with the real
// binary; the second exits at once with code 4 while the first holds the
// lock, and the first completes.
func TestRealConcurrentApply(t *testing.T) {
	crtoolsBin(t)
	d := t.TempDir()
	w := startCounter(t, filepath.Join(d, "w.out"))
	job := filepath.Join(d, "job.yaml")
	writeLiveJob(t, job, "overlap", w.Process.Pid, `  hooks:
    preDump: [sh, -c, "touch started; sleep 3"]
`)
	env := []string{lockDirEnv + "=" + t.TempDir()}
	first := make(chan cliResult)
	go func() { first <- crtoolsRun(t, env, "apply", job) }()
	for i := 0; i < 500; i++ {
		if _, err := os.Stat(filepath.Join(d, "started")); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	r := crtoolsRun(t, env, "apply", job)
	if r.code != exitLocked || !strings.Contains(r.stderr, `recipe "overlap" is locked by another run (pid `) {
		t.Errorf("second apply: exit %d: %s", r.code, r.stderr)
	}
	// "At once": well before the first run's 3 s hook ends.
	if el := time.Since(start); el > 1500*time.Millisecond {
		t.Errorf("second apply took %s", el)
	}
	if r1 := <-first; r1.code != 0 {
		t.Errorf("first apply: exit %d: %s", r1.code, r1.stderr)
	}
	if ents, _ := os.ReadDir(filepath.Join(d, "snaps")); len(ents) != 1 {
		t.Errorf("snapshots: %v", ents)
	}
}

// TestCounterCheck: the demo's checker accepts a run that carried on and
// names what is wrong with one that was restarted, lost its memory or
// was never paused.
func TestCounterCheck(t *testing.T) {
	good := "counter 7 started (memory token abc123)\n" +
		"tick 1 (pid 7, token abc123, sum 1)\n" +
		"tick 2 (pid 7, token abc123, sum 3)   <- went on after a 1.2s pause\n" +
		"tick 3 (pid 7, token abc123, sum 6)\n" +
		"counter 7 done: 3 ticks, sum 6, token abc123\n"
	cases := []struct{ name, out, want string }{
		{"carried on", good, "OK: the restored counter carried on from where it was checkpointed: pid 7, memory token abc123, ticks 1-3 once each, resumed at tick 2"},
		{"restarted", strings.Replace(good, "tick 2 (pid 7, token abc123, sum 3)", "counter 7 started (memory token abc123)\ntick 2 (pid 7, token abc123, sum 3)", 1),
			"FAIL: the counter started more than once"},
		{"counted again", strings.Replace(good, "tick 3 (", "tick 1 (", 1), "FAIL: tick 1 where tick 3 was due"},
		{"other pid", strings.Replace(good, "tick 3 (pid 7", "tick 3 (pid 8", 1), "FAIL: tick 3 printed by pid 8, the counter is pid 7"},
		{"memory lost", strings.Replace(good, "tick 3 (pid 7, token abc123", "tick 3 (pid 7, token ffffff", 1), "FAIL: tick 3 has memory token ffffff"},
		{"sum lost", strings.Replace(good, "sum 6)", "sum 3)", 1), "FAIL: tick 3 says sum 3, the ticks add up to 6"},
		{"no pause", strings.Replace(good, "   <- went on after a 1.2s pause", "", 1), "FAIL: no pause"},
		{"unfinished", strings.Replace(good, "counter 7 done: 3 ticks, sum 6, token abc123\n", "", 1), "FAIL: the counter did not finish"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "out")
			os.WriteFile(f, []byte(c.out), 0o644)
			out, err := exec.Command(filepath.Join("..", "..", "examples", "counter", "check.pl"), f).CombinedOutput()
			ok := strings.HasPrefix(c.want, "OK")
			if (err == nil) != ok || !strings.HasPrefix(string(out), c.want) || strings.Count(string(out), "\n") != 1 {
				t.Errorf("check.pl: %v\n%s\nwant %q", err, out, c.want)
			}
		})
	}
}

// cronCommand returns the command of the one job line of
// examples/cron/crtools-snapshot.cron after checking the line's form
// (five schedule fields, a user, a command).
func cronCommand(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", "cron", "crtools-snapshot.cron"))
	if err != nil {
		t.Fatal(err)
	}
	var jobs []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			jobs = append(jobs, l)
		}
	}
	if len(jobs) != 1 {
		t.Fatalf("want one job line, got %q", jobs)
	}
	f := strings.Fields(jobs[0])
	field := regexp.MustCompile(`^(\*|[0-9]+(-[0-9]+)?)(/[0-9]+)?(,(\*|[0-9]+(-[0-9]+)?)(/[0-9]+)?)*$`)
	if len(f) < 7 {
		t.Fatalf("cron line %q: want 5 schedule fields, a user and a command", jobs[0])
	}
	for _, x := range f[:5] {
		if !field.MatchString(x) {
			t.Fatalf("cron line %q: bad schedule field %q", jobs[0], x)
		}
	}
	if f[5] != "root" || f[6] != "/usr/local/bin/crtools" || f[7] != "apply" {
		t.Fatalf("cron line %q: want root running /usr/local/bin/crtools apply", jobs[0])
	}
	return strings.Join(f[6:], " ")
}

// systemdExecStart checks examples/systemd/crtools-snapshot.{service,timer}
// (a oneshot service that takes exit 4 as success, a repeating timer
// that starts it) and returns the service's ExecStart.
func systemdExecStart(t *testing.T) string {
	t.Helper()
	unit := func(name string) map[string]string {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", "systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		kv := map[string]string{}
		section := ""
		for _, l := range strings.Split(string(b), "\n") {
			l = strings.TrimSpace(l)
			switch {
			case l == "" || strings.HasPrefix(l, "#"):
			case strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]"):
				section = l
			default:
				k, v, ok := strings.Cut(l, "=")
				if !ok || section == "" {
					t.Fatalf("%s: bad line %q", name, l)
				}
				kv[section+k] = v
			}
		}
		return kv
	}
	svc, tmr := unit("crtools-snapshot.service"), unit("crtools-snapshot.timer")
	if svc["[Service]Type"] != "oneshot" || svc["[Service]SuccessExitStatus"] != "4" || !strings.HasPrefix(svc["[Service]ExecStart"], "/usr/local/bin/crtools apply ") {
		t.Fatalf("service: %v", svc)
	}
	// The timer starts the service of its own name (no Unit= needed) and
	// repeats.
	span := regexp.MustCompile(`^([0-9]+ ?(usec|us|msec|ms|seconds?|sec|s|minutes?|min|m|hours?|hr|h|days?|d|weeks?|w) ?)+$`)
	if !span.MatchString(tmr["[Timer]OnUnitActiveSec"]) || tmr["[Install]WantedBy"] != "timers.target" || tmr["[Timer]Unit"] != "" {
		t.Fatalf("timer: %v", tmr)
	}
	return svc["[Service]ExecStart"]
}

// runShell runs a command line with sh, as cron does (systemd's ExecStart
// has no shell syntax here, so sh runs it the same way).
func runShell(t *testing.T, env []string, line string) cliResult {
	t.Helper()
	cmd := exec.Command("sh", "-c", line)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	r := cliResult{stdout: o.String(), stderr: e.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("sh -c %s: %v", line, err)
	}
	return r
}

// TestIssueExamplesRun applies the two examples of the issue
// (spec/testdata/issue-examples.yaml) as written, with their paths moved
// into the test's directory: four snapshots of a running counter named
// by a pid file (hooks print, dump.log inside each, keepLast 3 leaves
// three), then a crash, then the restore of the newest one (its
// vethPairs have nothing to map: these images hold no network
// namespace), and the counter carries on.
func TestIssueExamplesRun(t *testing.T) {
	crtoolsBin(t)
	d := t.TempDir()
	out := filepath.Join(d, "counter.out")
	calc := startCounter(t, out)
	pid := calc.Process.Pid
	pidFile := filepath.Join(d, "counter.pid")
	os.WriteFile(pidFile, []byte(strconv.Itoa(pid)+"\n"), 0o644)
	b, err := os.ReadFile(filepath.Join("..", "..", "spec", "testdata", "issue-examples.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	snaps := filepath.Join(d, "counter")
	s := strings.NewReplacer("/run/counter.pid", pidFile, "/var/lib/crtools/counter", snaps).Replace(string(b))
	docs := strings.SplitN(s, "\n---\n", 2)
	if len(docs) != 2 {
		t.Fatalf("want two documents:\n%s", s)
	}
	ck, rs := filepath.Join(d, "checkpoint.yaml"), filepath.Join(d, "restore.yaml")
	os.WriteFile(ck, []byte(docs[0]), 0o644)
	os.WriteFile(rs, []byte(docs[1]), 0o644)
	env := []string{lockDirEnv + "=" + t.TempDir()}
	var last string
	for i := 0; i < 4; i++ {
		r := crtoolsRun(t, env, "apply", ck)
		if r.code != 0 {
			t.Fatalf("snapshot %d: exit %d\n%s\n%s", i, r.code, r.stdout, r.stderr)
		}
		if !strings.HasPrefix(r.stdout, "freezing\ndone\n") {
			t.Errorf("hooks printed:\n%s", r.stdout)
		}
		last = r.journals[0].ImagesDir
		if _, err := os.Stat(filepath.Join(last, "dump.log")); err != nil {
			t.Errorf("no dump.log in the snapshot: %v", err)
		}
		if i == 3 && len(r.journals[0].Pruned) != 1 {
			t.Errorf("fourth run pruned %v, want the oldest", r.journals[0].Pruned)
		}
	}
	if all, _ := executor.Snapshots(snaps); len(all) != 3 || all[2].Dir != last {
		t.Fatalf("snapshots %v, want 3 ending with %s", all, last)
	}
	calc.Process.Kill()
	calc.Wait()
	crashed, _ := os.ReadFile(out)
	r := crtoolsRun(t, env, "apply", rs)
	if r.code != 0 {
		t.Fatalf("restore: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	defer jobKillReap(pid)
	if r.journals[0].RootPid != pid || r.journals[0].ImagesDir != last || !strings.HasPrefix(r.stdout, "restored\n") {
		t.Errorf("restored %d from %s (want %d from %s); stdout %q", r.journals[0].RootPid, r.journals[0].ImagesDir, pid, last, r.stdout)
	}
	after := waitGrows(t, out, lines(string(crashed))+3)
	if strings.Count(after, "started") != 1 {
		t.Errorf("the counter started again")
	}
}
