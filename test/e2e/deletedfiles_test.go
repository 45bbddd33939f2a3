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

// TestDumpRestoreDeletedFiles: a 2 MiB O_TMPFILE file and a small unlinked
// file held open (testdata/ghostfiles.c). The big one is over the default
// ghost limit: the dump is refused, naming the limit and both ways out,
// and the task runs on. With --ghost-limit 4M its contents travel in the
// images; with --link-remap it is linked back under a hidden name at dump
// time instead (the small one still travels), reopened from it on restore,
// and the name is removed.
func TestDumpRestoreDeletedFiles(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	bin := buildTestdata(t, "ghostfiles.c")
	cycle := func(t *testing.T, w *harness.Workload, opts ...string) {
		t.Helper()
		dir := filepath.Join(t.TempDir(), "images")
		args := append([]string{"dump", "-t", fmt.Sprint(w.Pid), "-D", dir, "-v", "2", "-o", filepath.Join(w.Dir, "dump.log")}, opts...)
		if code, out := crtools(t, args...); code != 0 {
			t.Fatalf("crtools dump %v: exit %d\n%s\n%s", opts, code, out, readLog(w, "dump.log"))
		}
		select {
		case <-w.Exited():
		case <-time.After(10 * time.Second):
			t.Fatalf("dumped workload %d did not die", w.Pid)
		}
		rp.Forget(w.Pid)
		hidden, _ := filepath.Glob(filepath.Join(w.Dir, ".crtools-link-remap.*"))
		if remap := len(opts) > 0 && opts[0] == "--link-remap"; remap != (len(hidden) == 1) {
			t.Fatalf("link-remap names after dump %v: %v", opts, hidden)
		}
		var imgSize int64
		filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				imgSize += fi.Size()
			}
			return nil
		})
		t.Logf("images with %v: %d bytes", opts, imgSize)
		restoreDetached(t, w, dir)
		if hidden, _ := filepath.Glob(filepath.Join(w.Dir, ".crtools-*")); len(hidden) != 0 {
			t.Errorf("names left in the workload's directory after restore: %v", hidden)
		}
		verifyRestored(t, w)
		waitWorkloadExit(t, rp, w)
	}

	t.Run("ghost-limit", func(t *testing.T) {
		w := harness.StartWorkload(t, bin)
		w.MustReady(10 * time.Second)
		w.MustVerify(10 * time.Second)
		refused := filepath.Join(t.TempDir(), "refused")
		code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", refused)
		if code != 1 || !strings.Contains(out, "ghost file limit of 1048576 bytes") || !strings.Contains(out, "--ghost-limit") ||
			!strings.Contains(out, "--link-remap") || !strings.Contains(out, "2097152 bytes") {
			t.Fatalf("dump of a 2 MiB deleted file: exit %d\n%s", code, out)
		}
		if _, err := os.Stat(refused); !os.IsNotExist(err) {
			t.Errorf("refused dump left %s behind (%v)", refused, err)
		}
		w.MustVerify(10 * time.Second)
		cycle(t, w, "--ghost-limit", "4M")
	})
	t.Run("link-remap", func(t *testing.T) {
		w := harness.StartWorkload(t, bin)
		w.MustReady(10 * time.Second)
		w.MustVerify(10 * time.Second)
		cycle(t, w, "--link-remap")
	})
}
