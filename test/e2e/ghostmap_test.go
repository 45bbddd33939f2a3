package e2e

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/crtools/crtools/test/harness"
)

// ghostmapWorkload starts testdata/ghostmap.c from a copy in a directory of
// its own, with a copy of the library testdata/ghostlib.c, and deletes
// both copies and the workload's shared.dat once it is ready: its exe
// link, library and MAP_SHARED mapping all name deleted files (the
// library's file lives on under another hard link).
func ghostmapWorkload(t *testing.T, env ...string) (w *harness.Workload, exe, lib string) {
	t.Helper()
	bin := buildTestdata(t, "ghostmap.c", "-ldl")
	so := buildTestdata(t, "ghostlib.c", "-shared", "-fPIC")
	dir := t.TempDir()
	exe, lib = filepath.Join(dir, "ghostmap"), filepath.Join(dir, "libghost.so")
	copyFile(t, bin, exe, 0o755)
	copyFile(t, so, lib, 0o644)
	w = harness.Start(t, harness.Config{Bin: exe, Args: []string{lib}, Env: env})
	w.MustReady(10 * time.Second)
	// The library keeps a second hard link: its name is gone, the file
	// is not (the dump takes its contents all the same).
	if err := os.Link(lib, filepath.Join(dir, "libghost.keep")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{exe, lib, filepath.Join(w.Dir, "shared.dat")} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	w.MustVerify(10 * time.Second)
	return w, exe, lib
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDumpRestoreDeletedMappings: a program whose executable and
// dlopen()ed library were deleted while it runs, with a MAP_SHARED mapping
// of a deleted file it also holds open (testdata/ghostmap.c). Dump saves
// one ghost per file (the fd and the mapping of shared.dat share theirs);
// restore brings the process back with the same PID, its exe link and
// maps naming the files "(deleted)" at their old paths, the library's code
// running, and the mapping and the fd one file (the workload writes
// through each and reads through the other). No recreated file is left.
// With --link-remap the same: the library, which still has another hard
// link, is linked back under a hidden name and comes back through its
// old name; files with no link left cannot be linked back and travel as
// ghosts.
func TestDumpRestoreDeletedMappings(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	t.Run("ghost", func(t *testing.T) { deletedMappingsCycle(t, rp, false) })
	t.Run("link-remap", func(t *testing.T) { deletedMappingsCycle(t, rp, false, "--link-remap") })
	t.Run("replaced", func(t *testing.T) { deletedMappingsCycle(t, rp, true) })
}

// deletedMappingsCycle dumps and restores a ghostmap workload. replaced:
// new files take the three old names before the restore (a package
// upgrade); they are left alone and the restored process has its deleted
// files under hidden names next to them.
func deletedMappingsCycle(t *testing.T, rp *harness.Reaper, replaced bool, opts ...string) {
	var env []string
	if replaced {
		env = []string{"GHOSTMAP_REPLACED=1"}
	}
	w, exe, lib := ghostmapWorkload(t, env...)
	paths := []string{exe, lib, filepath.Join(w.Dir, "shared.dat")}
	dir := filepath.Join(t.TempDir(), "images")
	start := time.Now()
	args := append([]string{"dump", "-t", fmt.Sprint(w.Pid), "-D", dir, "-v", "2", "-o", filepath.Join(w.Dir, "dump.log")}, opts...)
	if code, out := crtools(t, args...); code != 0 {
		t.Fatalf("crtools dump: exit %d\n%s\n%s", code, out, readLog(w, "dump.log"))
	}
	t.Logf("dump took %v", time.Since(start))
	select {
	case <-w.Exited():
	case <-time.After(10 * time.Second):
		t.Fatalf("dumped workload %d did not die", w.Pid)
	}
	rp.Forget(w.Pid)
	ghosts, _ := filepath.Glob(filepath.Join(dir, "ghost-file-*.img"))
	// The library still has a link: --link-remap links it back.
	if want := 3 - len(opts); len(ghosts) != want {
		t.Errorf("ghost images %v, want %d (executable, library unless linked back, shared.dat once for its fd and mapping)", ghosts, want)
	}
	const upgraded = "new version\n"
	if replaced {
		for _, p := range paths {
			if err := os.WriteFile(p, []byte(upgraded), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	restoreDetached(t, w, dir)
	// ghostName is the name the restored process shows for p.
	ghostName := func(p string) string {
		if !replaced {
			return regexp.QuoteMeta(p + " (deleted)")
		}
		return regexp.QuoteMeta(filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".crtools-ghost-")) + `\d+ \(deleted\)`
	}
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", w.Pid))
	if err != nil || !regexp.MustCompile("^"+ghostName(exe)+"$").MatchString(link) {
		t.Errorf("restored exe link %q (%v), want %s", link, err, ghostName(exe))
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", w.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if !regexp.MustCompile("(?m) " + ghostName(p) + "$").Match(maps) {
			t.Errorf("restored maps do not show %s:\n%s", ghostName(p), maps)
		}
		b, err := os.ReadFile(p)
		switch {
		case !replaced && !os.IsNotExist(err):
			t.Errorf("%s exists after restore (%v)", p, err)
		case replaced && string(b) != upgraded:
			t.Errorf("new file %s after restore: %q (%v), want %q", p, b, err, upgraded)
		}
	}
	for _, d := range []string{filepath.Dir(exe), w.Dir} {
		if left, _ := filepath.Glob(filepath.Join(d, ".*crtools*")); len(left) != 0 {
			t.Errorf("names left after restore: %v", left)
		}
	}
	verifyRestored(t, w)
	waitWorkloadExit(t, rp, w)
}

// TestDumpDeletedMappingOverGhostLimit: a deleted executable and library
// bigger than --ghost-limit: the dump is refused with the message of
// deleted fds (the limit, both ways out), writes no images, and the
// process runs on untouched.
func TestDumpDeletedMappingOverGhostLimit(t *testing.T) {
	harness.RequireRoot(t)
	w, _, _ := ghostmapWorkload(t)
	refused := filepath.Join(t.TempDir(), "refused")
	code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", refused, "--ghost-limit", "4K")
	if code == 0 || !strings.Contains(out, "more than the ghost file limit of 4096 bytes") ||
		!strings.Contains(out, "--ghost-limit") || !strings.Contains(out, "--link-remap") {
		t.Fatalf("dump over the ghost limit: exit %d\n%s", code, out)
	}
	t.Logf("refused: %s", strings.TrimSpace(out))
	if _, err := os.Stat(refused); !os.IsNotExist(err) {
		t.Errorf("refused dump left %s behind (%v)", refused, err)
	}
	w.MustVerify(10 * time.Second)
	w.MustVerify(10 * time.Second)
}
