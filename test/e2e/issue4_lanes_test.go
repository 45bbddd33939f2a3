package e2e

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/crtools/crtools/test/harness"
)

// TestIssue4Lanes restores a tree of a root and 12 children that share
// nothing but the root's stdio (lanes.c): with two CPUs restore takes half
// of the children over to a second tracer thread (engine/restore/lanes.go),
// which the log says. Every child checks its own name, umask, blocked
// signal, handler, its own file (offset, identity, mode), its heap and a
// mapping, and reports; verify checks every child's report moves on with
// the pid fork gave it, and /proc of the tree is compared as for the other
// trees.
func TestIssue4Lanes(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	w := harness.StartWorkload(t, harness.BuildC(t, "lanes.c"), "12")
	w.MustReady(30 * time.Second)
	w.MustVerify(10 * time.Second)
	before := snapTree(t, w.Pid)
	if len(before) != 13 {
		t.Fatalf("%d processes before the dump, want 13", len(before))
	}
	dir := dumpKill(t, w)
	for pid := range before {
		rp.Forget(pid)
	}
	restoreDetached(t, w, dir)
	after := snapTree(t, w.Pid)
	compareSnaps(t, before, after, false)
	log := readLog(w, "restore.log")
	lane := strings.Contains(log, "second tracer restores processes")
	// Two CPUs or more (CI has them): the second lane must have run, else
	// this test would not test it.
	if runtime.NumCPU() >= 2 && !lane {
		t.Errorf("restore used one tracer on %d CPUs; its log:\n%s", runtime.NumCPU(), log)
	}
	verifyRestored(t, w)
	waitExit(t, rp, w.Pid, 0)
}
