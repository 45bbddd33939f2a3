package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/crtools/crtools/test/harness"
)

// Restore errors (issue 3): one clear line naming the object, exit 1, and
// nothing left behind.
func TestRestoreErrors(t *testing.T) {
	harness.RequireRoot(t)
	harness.Subreaper()
	w := harness.StartWorkload(t, harness.BuildC(t, "simple.c"))
	w.MustReady(10 * time.Second)
	dir := dumpKillLeaveRunning(t, w)

	t.Run("pid in use", func(t *testing.T) {
		// The workload still runs (dumped with -R): its PID is taken.
		code, out := crtools(t, "restore", "-D", dir, "-d")
		if code != 1 || !strings.Contains(out, fmt.Sprintf("pid %d is in use", w.Pid)) || !strings.Contains(out, "PID namespace") {
			t.Errorf("restore over a live pid: exit %d, output:\n%s", code, out)
		}
		w.MustVerify(10 * time.Second) // untouched
	})
	t.Run("tree mismatch", func(t *testing.T) {
		code, out := crtools(t, "restore", "-D", dir, "-d", "-t", fmt.Sprint(w.Pid+1))
		if code != 1 || !strings.Contains(out, fmt.Sprintf("does not match the root of the images (pid %d)", w.Pid)) {
			t.Errorf("restore -t other: exit %d, output:\n%s", code, out)
		}
	})
	t.Run("fifo image", func(t *testing.T) {
		// A FIFO in place of an image blocked the restore in open for
		// ever (SIGTERM did not stop it either); now it is refused.
		for _, name := range []string{"pstree.img", fmt.Sprintf("core-%d.img", w.Pid)} {
			bad := t.TempDir() + "/images"
			if err := exec.Command("cp", "-a", dir, bad).Run(); err != nil {
				t.Fatal(err)
			}
			if err := exec.Command("sh", "-c", "rm "+bad+"/"+name+" && mkfifo "+bad+"/"+name).Run(); err != nil {
				t.Fatal(err)
			}
			code, out := crtools(t, "restore", "-D", bad, "-d", "-v0")
			if code != 1 || !strings.Contains(out, name+": not a regular file") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
				t.Errorf("restore with a FIFO for %s: exit %d, output:\n%s", name, code, out)
			}
		}
		w.MustVerify(10 * time.Second) // untouched
	})
	t.Run("missing dir", func(t *testing.T) {
		code, out := crtools(t, "restore", "-D", dir+"-nope", "-d")
		if code != 1 || !strings.Contains(out, "-nope") {
			t.Errorf("restore from a missing dir: exit %d, output:\n%s", code, out)
		}
	})
}

// dumpKillLeaveRunning dumps with -R: the images are complete and the
// workload runs on.
func dumpKillLeaveRunning(t *testing.T, w *harness.Workload) string {
	t.Helper()
	dir := t.TempDir() + "/images"
	code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", dir, "-R")
	if code != 0 {
		t.Fatalf("crtools dump -R -t %d: exit %d\n%s", w.Pid, code, out)
	}
	return dir
}

// Without -d crtools stays the restored task's parent, waits for it and
// exits with its status.
func TestRestoreWaitsForTask(t *testing.T) {
	harness.RequireRoot(t)
	harness.Subreaper()
	w := harness.StartWorkload(t, harness.BuildC(t, "simple.c"))
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	dir := dumpKill(t, w)
	cmd := exec.Command(harness.BuildCrtools(t), "restore", "-D", dir)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Wait until the task runs under crtools.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := procStat(w.Pid)
		if err == nil && st.ppid == cmd.Process.Pid && tracerOf(w.Pid) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restored task %d not running under crtools %d: %v %+v\n%s", w.Pid, cmd.Process.Pid, err, st, out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	w.MustVerify(10 * time.Second)
	if err := w.VerifyAndExit(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("crtools restore (waiting for the task) exited with %v, want 0 (the task's status)\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("crtools restore did not exit after its task did\n%s", out.String())
	}
}
