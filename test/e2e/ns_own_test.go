package e2e

import (
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

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
// without -n pid, is the control.
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

	cycleReportTree(t, rp, orig, done, report, ownNS, append([]string{"-l"}, nsArgs...), []string{"-l"}, nil)
}
