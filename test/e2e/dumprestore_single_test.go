package e2e

import (
	"testing"

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
