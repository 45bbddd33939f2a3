package e2e

import (
	"testing"

	"github.com/crtools/crtools/test/harness"
)

// TestDumpRestoreMemfd: a memfd open as a descriptor and mapped MAP_SHARED
// by a parent and its child comes back as one object: name (fd link and
// /proc/PID/maps), size, contents, seals (F_SEAL_GROW|F_SEAL_SHRINK, which
// still hold), the offsets of a shared and of a second open file
// description, and writes after the restore through the fd, a mapping or
// the child's write(2) seen by the other task (memfd.c checks them before
// the dump and after the restore).
func TestDumpRestoreMemfd(t *testing.T) {
	dumpRestoreVerify(t, harness.BuildC(t, "memfd.c"))
}
