package e2e

import (
	"testing"

	"github.com/crtools/crtools/test/harness"
)

// Issue 4 workloads through the whole cycle: dump (this helper's side)
// then restore (engine/restore) and verify.

func TestDumpRestoreThreads(t *testing.T) {
	dumpRestoreVerify(t, harness.BuildC(t, "threads.c"), "8")
}

// Issue 4's must-show: 64 threads, every TID and per-thread state intact.
func TestDumpRestoreThreads64(t *testing.T) {
	dumpRestoreVerify(t, harness.BuildC(t, "threads.c"), "64")
}

func TestDumpRestoreTree(t *testing.T) {
	dumpRestoreVerify(t, harness.BuildC(t, "tree.c"))
}

func TestDumpRestoreGo(t *testing.T) {
	dumpRestoreVerify(t, harness.BuildGo(t, "gowork"))
}
