package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/test/harness"
)

// Acceptance tests of issue 3 that the per-feature tests leave out: the
// Python interpreter, restores of images written with -s and -R, restore
// -t with the right PID, and the exit status of the restored root with
// and without -d.

// TestIssue3Python: Debian's python3 holding a big dict and looping is
// dumped, killed, restored with its PID and carries on (same run, the
// dict intact, the loop counter moving).
func TestIssue3Python(t *testing.T) {
	py := harness.Python3(t)
	dumpRestoreVerify(t, py, harness.WorkloadFile(t, "pywork.py"))
}

// TestIssue3LeaveStoppedThenRestore: a dump with -s leaves the task
// stopped; once it is killed its images restore it, running, from where it
// was frozen.
func TestIssue3LeaveStoppedThenRestore(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	w := harness.StartWorkload(t, harness.BuildC(t, "simple.c"))
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	dir := dumpDir(t, w, "-s")
	waitState(t, w.Pid, "T")
	if tr := tracerOf(w.Pid); tr != 0 {
		t.Fatalf("after dump -s pid %d is traced by %d", w.Pid, tr)
	}
	killOriginal(t, w)
	rp.Forget(w.Pid)
	restoreDetached(t, w, dir)
	if st, err := procStat(w.Pid); err != nil || st.state == "T" {
		t.Fatalf("restored pid %d: state %+v, err %v; want running", w.Pid, st, err)
	}
	verifyRestored(t, w)
	waitExit(t, rp, w.Pid, 0)
}

// TestIssue3LeaveRunningThenRestore: a dump with -R lets the task run on;
// the images still hold the state at the dump, and a restore after the
// task was killed brings back that run (same token, progress past the
// last verify before the dump).
//
// Not memory.c: its shared file mapping keeps a counter in a file, which is
// outside the images (as with CRIU); the original, running on after the
// dump, may store a later count there before it is killed, and the restored
// run then rightly finds the file ahead of its own counter.
func TestIssue3LeaveRunningThenRestore(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	w := harness.StartWorkload(t, harness.BuildC(t, "simple.c"))
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	dir := dumpDir(t, w, "-R")
	if tr := tracerOf(w.Pid); tr != 0 {
		t.Fatalf("after dump -R pid %d is traced by %d", w.Pid, tr)
	}
	if st, err := procStat(w.Pid); err != nil || st.state == "T" {
		t.Fatalf("after dump -R pid %d: state %+v, err %v; want running", w.Pid, st, err)
	}
	killOriginal(t, w)
	rp.Forget(w.Pid)
	restoreDetached(t, w, dir)
	verifyRestored(t, w)
	waitExit(t, rp, w.Pid, 0)
}

// TestIssue3RestoreTreeMatches: restore -t with the PID of the images'
// root is accepted (the mismatch is TestRestoreErrors).
func TestIssue3RestoreTreeMatches(t *testing.T) {
	rp, w, dir := dumpedWorkload(t, harness.BuildC(t, "simple.c"))
	code, out := crtools(t, "restore", "-D", dir, "-d", "-t", fmt.Sprint(w.Pid))
	if code != 0 {
		t.Fatalf("restore -d -t %d: exit %d\n%s", w.Pid, code, out)
	}
	verifyRestored(t, w)
	waitExit(t, rp, w.Pid, 0)
}

// exitcodeSrc is a workload that exits with the status written into the
// file "exitcode" in its working directory (checked every millisecond),
// so that a test can make a restored task exit with a status of its
// choosing.
const exitcodeSrc = `#include "crt.h"

int main(void)
{
	uint64_t loops = 0;

	crt_init();
	crt_ready();
	for (;;) {
		FILE *f;

		if (crt_pending()) {
			CRT_CHECK(loops == crt_progress, "loops %" PRIu64 " progress %" PRIu64, loops,
				  (uint64_t)crt_progress);
			crt_report();
		}
		f = fopen("exitcode", "re");
		if (f) {
			int code = -1;

			if (fscanf(f, "%d", &code) == 1 && code >= 0)
				exit(code);
			fclose(f);
		}
		loops++;
		crt_tick();
		crt_sleep_ms(1);
	}
}
`

func buildExitcode(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "exitcode.c")
	if err := os.WriteFile(src, []byte(exitcodeSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	return harness.BuildC(t, src, "-I"+harness.WorkloadsDir(t))
}

// TestIssue3RestoreExitStatus: without -d crtools is the restored root's
// parent and exits with its status (42, and 128+15 for a SIGTERM); with
// -d crtools exits 0 as soon as the task runs and the status goes to the
// task's new parent (the test process, a child subreaper).
func TestIssue3RestoreExitStatus(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	bin := buildExitcode(t)

	attached := func(t *testing.T, finish func(w *harness.Workload), want int) {
		w := harness.StartWorkload(t, bin)
		w.MustReady(10 * time.Second)
		w.MustVerify(10 * time.Second)
		dir := dumpKill(t, w)
		rp.Forget(w.Pid)
		cmd := exec.Command(harness.BuildCrtools(t), "restore", "-D", dir, "-v", "2", "-o", filepath.Join(w.Dir, "restore.log"))
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		waitParent(t, w.Pid, cmd.Process.Pid, done, &out)
		w.MustVerify(10 * time.Second)
		finish(w)
		select {
		case err := <-done:
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != want {
				t.Fatalf("crtools restore exited %d, want %d (the restored task's status)\n%s", code, want, out.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("crtools restore did not exit after its task did\n%s", out.String())
		}
	}
	t.Run("attached exit 42", func(t *testing.T) {
		attached(t, func(w *harness.Workload) {
			if err := os.WriteFile(filepath.Join(w.Dir, "exitcode"), []byte("42\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, 42)
	})
	t.Run("attached SIGTERM", func(t *testing.T) {
		attached(t, func(w *harness.Workload) {
			if err := unix.Kill(w.Pid, unix.SIGTERM); err != nil {
				t.Fatal(err)
			}
		}, 128+int(unix.SIGTERM))
	})
	t.Run("detached", func(t *testing.T) {
		w := harness.StartWorkload(t, bin)
		w.MustReady(10 * time.Second)
		w.MustVerify(10 * time.Second)
		dir := dumpKill(t, w)
		rp.Forget(w.Pid)
		restoreDetached(t, w, dir) // fails unless crtools exits 0
		if st, err := procStat(w.Pid); err != nil || st.ppid != os.Getpid() {
			t.Fatalf("restored pid %d: %+v %v; want the test process %d as its parent", w.Pid, st, err, os.Getpid())
		}
		w.MustVerify(10 * time.Second)
		if err := os.WriteFile(filepath.Join(w.Dir, "exitcode"), []byte("42\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		waitExit(t, rp, w.Pid, 42)
	})
}

// waitParent waits until pid runs (untraced) as a child of parent.
func waitParent(t *testing.T, pid, parent int, done <-chan error, out fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := procStat(pid)
		if err == nil && st.ppid == parent && tracerOf(pid) == 0 && st.state != "T" {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("crtools restore exited (%v) before task %d ran under it\n%s", err, pid, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("restored task %d not running under crtools %d: %v %+v\n%s", pid, parent, err, st, out)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitState waits until pid is in the given /proc state.
func waitState(t *testing.T, pid int, state string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := procStat(pid)
		if err == nil && st.state == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d: state %+v (%v), want %s", pid, st, err, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// killOriginal kills the workload started by the test (after a dump that
// left it alive) and waits until the test reaped it, so its PID is free.
func killOriginal(t *testing.T, w *harness.Workload) {
	t.Helper()
	if err := syscall.Kill(w.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %d: %v", w.Pid, err)
	}
	select {
	case <-w.Exited():
	case <-time.After(10 * time.Second):
		t.Fatalf("workload %d did not die", w.Pid)
	}
}

// waitExit waits for the restored pid (re-parented to the test process)
// and checks its exit status.
func waitExit(t *testing.T, rp *harness.Reaper, pid, want int) {
	t.Helper()
	ws, err := rp.WaitPid(pid, 10*time.Second)
	if err != nil {
		t.Fatalf("wait for restored task %d: %v", pid, err)
	}
	if !ws.Exited() || ws.ExitStatus() != want {
		t.Fatalf("restored task %d ended with %v, want exit status %d", pid, ws, want)
	}
}
