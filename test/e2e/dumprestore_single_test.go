package e2e

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/test/harness"
)

// Single-process workloads (issue 3): each is dumped, killed, restored with
// its PID and verified: its own checks pass, it is the same run, and it
// carried on.

func TestDumpRestoreSimple(t *testing.T) {
	dumpRestoreVerify(t, harness.BuildC(t, "simple.c"))
}

func TestDumpRestoreMemory(t *testing.T) {
	dumpRestoreVerify(t, harness.BuildC(t, "memory.c"))
}

func TestDumpRestoreSignals(t *testing.T) {
	dumpRestoreVerify(t, harness.BuildC(t, "signals.c"))
}

// SIGTRAP is the signal restore's own traps force (int3 and single-step):
// its action (SIG_IGN, or a handler with flags and a mask) and every
// thread's blocked mask must come back as dumped. The main thread is
// dumped inside pause() (the restart of a syscall depends on how the last
// injection leaves the task), which must go on after the restore. The
// restored task survives a dump with -R as well.
func TestDumpRestoreSigtrap(t *testing.T) {
	bin := harness.BuildC(t, "sigtrap.c")
	for _, mode := range []string{"ignore", "handler"} {
		t.Run(mode, func(t *testing.T) {
			harness.RequireRoot(t)
			rp := harness.Subreaper()
			w := harness.StartWorkload(t, bin, mode)
			inPause := func() { waitInSyscall(t, w.Pid, unix.SYS_PAUSE) }
			w.MustReady(10 * time.Second)
			inPause()
			w.MustVerify(10 * time.Second)
			inPause()
			dir := dumpKill(t, w)
			rp.Forget(w.Pid)
			restoreDetached(t, w, dir)
			inPause()
			if err := w.Verify(10 * time.Second); err != nil {
				t.Fatalf("after restore: %v\n%s", err, readLog(w, "restore.log"))
			}
			// The restored task is dumped again, left running (an
			// ignored SIGTRAP takes the dump's syscall-stop path).
			inPause()
			dumpDir(t, w, "-R")
			verifyRestoredPrep(t, w, inPause)
			waitWorkloadExit(t, rp, w)
		})
	}
}

func TestDumpRestoreProcess(t *testing.T) {
	dumpRestoreVerify(t, harness.BuildC(t, "process.c"))
}

func TestDumpRestoreFiles(t *testing.T) {
	dumpRestoreVerify(t, harness.BuildC(t, "files.c"))
}

// Tasks blocked in a syscall at dump time must resume it: the sleep ends
// when it should (the workload checks each sleep lasted its full time and
// that a verify is answered, i.e. the sleep did end).
func TestDumpRestoreSleepers(t *testing.T) {
	bin := harness.BuildC(t, "sleepers.c")
	for _, mode := range []string{"nanosleep", "select", "pause", "sigsuspend"} {
		var prep func(w *harness.Workload)
		if mode == "pause" {
			prep = func(w *harness.Workload) { waitInSyscall(t, w.Pid, unix.SYS_PAUSE) }
		}
		t.Run(mode, func(t *testing.T) { dumpRestoreVerifyPrep(t, bin, prep, mode) })
	}
}
