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

// TestNSPidFileOwnersAndLocks: a tree that is a pid namespace of its own
// (testdata/ns_own.c), where files are owned by a task, a process group and
// a thread (F_SETOWN, F_SETOWN_EX of pipes) and a task holds an flock and a
// POSIX lock,
// is dumped with -n pid -l, killed and restored into a new pid namespace.
// From inside the restored tree, F_GETOWN must name the owners by their
// pids inside the namespace (crtools reads them in its own, where the same
// tasks have other numbers), and the locks must still be held by the task
// (F_GETLK names it). The same tree in crtools' pid namespace, dumped
// without -n pid, is the control. (The owner of a regular file is not
// dumped at all yet: engine/dump records none.)
func TestNSPidFileOwnersAndLocks(t *testing.T) {
	harness.RequireRoot(t)
	t.Run("own-pid-ns", func(t *testing.T) { testFileOwnersAndLocks(t, true) })
	t.Run("crtools-pid-ns", func(t *testing.T) { testFileOwnersAndLocks(t, false) })
}

func testFileOwnersAndLocks(t *testing.T, ownNS bool) {
	rp := harness.Subreaper()
	bin := buildTestdata(t, "ns_own.c", "-pthread")
	work := t.TempDir()
	report := filepath.Join(work, "report")
	cmd := exec.Command(bin, report, work)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	nsArgs := []string{}
	if ownNS {
		cmd.SysProcAttr.Cloneflags = unix.CLONE_NEWPID
		nsArgs = []string{"-n", "pid"}
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s (own pid namespace: %v): %v", bin, ownNS, err)
	}
	orig := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { harness.KillTree(orig) })

	// ask waits for the init's report and returns its fields: PASS, the
	// counter and the token. log is crtools' log to show on a failure.
	ask := func(init int, when, log string) []string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if b, err := os.ReadFile(report); err == nil {
				if !strings.HasPrefix(string(b), "PASS ") {
					l, _ := os.ReadFile(log)
					t.Fatalf("%s: the tree reports %s%s", when, b, l)
				}
				f := strings.Fields(string(b))
				if len(f) != 3 {
					t.Fatalf("%s: report %q, want 3 fields", when, b)
				}
				return f
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: init %d wrote no report in 10 s", when, init)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	before := ask(orig, "before the dump", "") // the first report: ready
	_ = os.Remove(report)
	if err := unix.Kill(orig, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	before = ask(orig, "before the dump", "")

	dir := filepath.Join(t.TempDir(), "images")
	log := filepath.Join(t.TempDir(), "dump.log")
	args := append([]string{"dump", "-t", fmt.Sprint(orig), "-D", dir, "-l", "-v", "2", "-o", log}, nsArgs...)
	if code, out := crtools(t, args...); code != 0 {
		b, _ := os.ReadFile(log)
		t.Fatalf("crtools %v: exit %d\n%s\n%s", args, code, out, b)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("dumped init %d did not die", orig)
	}

	inits := nsInits(t)
	rlog := filepath.Join(t.TempDir(), "restore.log")
	if code, out := crtools(t, "restore", "-D", dir, "-d", "-l", "-v", "2", "-o", rlog); code != 0 {
		b, _ := os.ReadFile(rlog)
		t.Fatalf("crtools restore: exit %d\n%s\n%s", code, out, b)
	}
	restored := 0
	for pid := range nsInits(t) {
		if !inits[pid] {
			restored = pid
		}
	}
	if !ownNS {
		restored = orig // pids restored as dumped
	}
	if restored == 0 {
		b, _ := os.ReadFile(rlog)
		t.Fatalf("no restored init found among the test's children\n%s", b)
	}
	t.Cleanup(func() { harness.KillTree(restored) })
	_ = os.Remove(report)
	if err := unix.Kill(restored, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	after := ask(restored, "restored", rlog)
	if after[2] != before[2] {
		t.Errorf("restored token %s, want %s drawn before the dump", after[2], before[2])
	}
	if a, b := atoiT(t, after[1]), atoiT(t, before[1]); a < b {
		t.Errorf("restored counter %d is behind the one before the dump %d", a, b)
	}

	if err := unix.Kill(restored, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ws, err := rp.WaitPid(restored, 10*time.Second)
	if err != nil {
		t.Fatalf("wait for restored init %d: %v", restored, err)
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("restored init exited with %v, want 0", ws)
	}
}
