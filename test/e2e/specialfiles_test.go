package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crtools/crtools/test/harness"
)

// Issue 5 through the real engines: a process holding a pipe with 100000
// unread bytes, an eventfd, socket pairs with queued datagrams and stream
// bytes, and an epoll watching the eventfd and the pipe is dumped, killed
// and restored; its own checks prove that every byte, counter, datagram
// boundary and epoll watch came back (engine/files).
func TestDumpRestoreSpecialFiles(t *testing.T) {
	dumpRestoreVerify(t, harness.BuildC(t, "specialfiles.c"))
}

// File locks (flock, OFD, POSIX): without -l the dump is refused with a
// message naming the file and the option, and the workload carries on
// untouched; with -l the locks are held again after restore (flock and OFD
// taken by crtools on the open file, POSIX injected into the task).
func TestDumpRestoreFileLocks(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	w := harness.StartWorkload(t, harness.BuildC(t, "locks.c"))
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)

	refused := filepath.Join(t.TempDir(), "refused")
	code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", refused)
	if code != 1 || !strings.Contains(out, "-l/--file-locks") || !strings.Contains(out, filepath.Join(w.Dir, "flock.dat")) {
		t.Fatalf("dump without -l: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(refused); !os.IsNotExist(err) {
		t.Errorf("refused dump left %s behind (%v)", refused, err)
	}
	w.MustVerify(10 * time.Second) // still running, locks still held

	dir := filepath.Join(t.TempDir(), "images")
	code, out = crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", dir, "-l", "-v", "2", "-o", filepath.Join(w.Dir, "dump.log"))
	if code != 0 {
		t.Fatalf("crtools dump -l: exit %d\n%s\n%s", code, out, readLog(w, "dump.log"))
	}
	select {
	case <-w.Exited():
	case <-time.After(10 * time.Second):
		t.Fatalf("dumped workload %d did not die", w.Pid)
	}
	rp.Forget(w.Pid)
	restoreDetached(t, w, dir)
	verifyRestored(t, w)
	if ws, err := rp.WaitPid(w.Pid, 10*time.Second); err != nil || !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("restored workload: %v %v\n%s", ws, err, w.Output())
	}
}
