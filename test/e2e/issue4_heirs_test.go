package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/crtools/crtools/test/harness"
)

// TestIssue4Heirs restores a root and 6 children that keep most of what
// fork gave them (heirs.c): restore creates each child by fork from its
// restored parent (engine/restore/inherit.go), which the log says for
// every child, and then makes its memory the child's own: pages the child
// rewrote (also in a read-only mapping), pages only the parent touched
// after the fork (zeros in the child), a mapping the parent unmapped, one
// it added, another heap size. Every child checks all of it, its name and
// its parent-death signal, and reports; verify checks every report moves
// on with the pid fork gave, and the root's own memory. /proc of the tree
// is compared as for the other trees.
func TestIssue4Heirs(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	const n = 6
	w := harness.StartWorkload(t, harness.BuildC(t, "heirs.c"), "6")
	w.MustReady(30 * time.Second)
	w.MustVerify(10 * time.Second)
	before := snapTree(t, w.Pid)
	if len(before) != n+1 {
		t.Fatalf("%d processes before the dump, want %d", len(before), n+1)
	}
	dir := dumpKill(t, w)
	for pid := range before {
		rp.Forget(pid)
	}
	restoreDetached(t, w, dir)
	after := snapTree(t, w.Pid)
	compareSnaps(t, before, after, false)
	log := readLog(w, "restore.log")
	if got := strings.Count(log, "heir=true"); got != n {
		t.Errorf("%d children restored as heirs of their parent, want %d; the log:\n%s", got, n, lastLines(log, 40))
	}
	verifyRestored(t, w)
	waitExit(t, rp, w.Pid, 0)
}
