package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/crtools/crtools/test/harness"
)

// TestPtyPairQueuedData: two pseudo-terminal pairs held by the task, with
// bytes queued at all four ends (a raw pair, a canonical one with a
// complete and a partial line). A dump that leaves the task running puts
// every byte back where it was; a dump and restore brings every byte to
// the new pairs (testdata/shelljob_ptydata.c checks them byte for byte,
// then that nothing more appears and the pair still carries data).
func TestPtyPairQueuedData(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	bin := buildTestdata(t, "shelljob_ptydata.c")

	t.Run("leave-running", func(t *testing.T) {
		w := harness.StartWorkload(t, bin)
		w.MustReady(10 * time.Second)
		dir := filepath.Join(t.TempDir(), "images")
		if code, out := crtools(t, "dump", "-R", "-t", fmt.Sprint(w.Pid), "-D", dir, "-v", "2", "-o", filepath.Join(w.Dir, "dump.log")); code != 0 {
			t.Fatalf("crtools dump -R: exit %d\n%s\n%s", code, out, readLog(w, "dump.log"))
		}
		w.MustVerify(10 * time.Second)
		w.MustVerify(10 * time.Second)
	})
	t.Run("restore", func(t *testing.T) {
		w := harness.StartWorkload(t, bin)
		w.MustReady(10 * time.Second)
		dir := dumpKill(t, w)
		rp.Forget(w.Pid)
		restoreDetached(t, w, dir)
		verifyRestored(t, w)
	})
}

// TestPtyControllingTerminal: a pair of the tree is the controlling
// terminal of a session of the tree (a child that called setsid), with a
// job of its own as the foreground group. After dump and restore the new
// pair is again that session's terminal with that foreground group:
// ^C typed on the master interrupts the job and not the session leader
// (testdata/shelljob_ctty.c).
func TestPtyControllingTerminal(t *testing.T) {
	dumpRestoreVerify(t, buildTestdata(t, "shelljob_ctty.c"))
}
