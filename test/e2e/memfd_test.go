package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/test/harness"
)

// TestDumpRestoreMemfd: a memfd open as a descriptor and mapped MAP_SHARED
// by a parent and its child comes back as one object: name (fd link and
// /proc/PID/maps), size, contents, seals (F_SEAL_GROW|F_SEAL_SHRINK, which
// still hold), the offsets of a shared and of a second open file
// description, a private mapping (a copied-on-write page of its own, the
// others still the memfd's), and writes after the restore through the fd,
// a mapping or the child's write(2) seen by the other task (memfd.c checks
// them before the dump and after the restore). A second memfd sealed with
// F_SEAL_WRITE and mapped read-only shared keeps its seal. crtools show
// lists both objects once.
func TestDumpRestoreMemfd(t *testing.T) {
	rp, w, dir := dumpedWorkload(t, harness.BuildC(t, "memfd.c"))

	code, out := crtools(t, "show", "-D", dir)
	if code != 0 {
		t.Fatalf("crtools show -D: exit %d\n%s", code, out)
	}
	// One object per memfd, however many fds and mappings: crt-memfd.test
	// and crt-sealed (memfd.c).
	if n := strings.Count(out, " memfd:crt-memfd.test: 12.0 KiB, seals SHRINK|GROW,"); n != 1 {
		t.Errorf("show lists memfd crt-memfd.test %d times, want once:\n%s", n, out)
	}
	if n := strings.Count(out, " memfd:crt-sealed: 7 B, seals SEAL|WRITE,"); n != 1 {
		t.Errorf("show lists memfd crt-sealed %d times, want once:\n%s", n, out)
	}
	if n := strings.Count(out, "\n  memfd "); n != 2 {
		t.Errorf("show lists %d memfd objects, want 2:\n%s", n, out)
	}
	// The second open file description, in both tasks.
	if n := strings.Count(out, "memfd:crt-memfd.test (O_RDONLY|O_LARGEFILE, pos 100)"); n != 2 {
		t.Errorf("show has the second open file description (O_RDONLY, pos 100) %d times, want 2:\n%s", n, out)
	}

	// Spoiled memfd images stop the restore in its load step with one
	// line naming the file, and no task is created.
	pagemaps, _ := filepath.Glob(filepath.Join(dir, "pagemap-shmem-*.img"))
	if len(pagemaps) != 2 {
		t.Fatalf("want the pagemaps of two memfds, have %v", pagemaps)
	}
	pagemap := filepath.Base(pagemaps[0])
	pr, err := image.OpenPath(pagemaps[0], image.ShmemPagemap)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := image.DecodePagemap(pr)
	pr.Close()
	if err != nil {
		t.Fatal(err)
	}
	pages := image.Pages.FileName(uint64(pm.PagesID))
	for _, c := range []struct {
		name  string
		spoil func(d string)
		want  []string
	}{
		{"bad magic", func(d string) { spoilAt(t, filepath.Join(d, "memfd.img"), 4, []byte{0xde, 0xad, 0xbe, 0xef}) },
			[]string{"read memfds: ", "memfd.img: bad magic 0xefbeadde for a MEMFD_INODE image"}},
		{"a directory", func(d string) {
			os.Remove(filepath.Join(d, "memfd.img"))
			os.Mkdir(filepath.Join(d, "memfd.img"), 0o755)
		}, []string{"read memfds: open image ", "memfd.img: is a directory"}},
		{"pagemap bad magic", func(d string) { spoilAt(t, filepath.Join(d, pagemap), 4, []byte{0xde, 0xad, 0xbe, 0xef}) },
			[]string{"read pages of memfd \"crt-", pagemap + ": bad magic 0xefbeadde for a SHMEM_PAGEMAP image"}},
		{"truncated pages", func(d string) { os.Truncate(filepath.Join(d, pages), 0) },
			[]string{"read pages of memfd \"crt-", pages + ": truncated at offset 0: page data of " + pagemap + " needs"}},
	} {
		bad := copyDir(t, dir)
		c.spoil(bad)
		code, out := crtools(t, "restore", "-D", bad, "-d", "-v", "0")
		if line := oneLine(t, c.name, code, out, c.want...); !strings.Contains(line, "step load") {
			t.Errorf("%s: restore failed after it began creating tasks: %s", c.name, line)
		}
		pidFree(t, w.Pid, c.name)
	}

	restoreDetached(t, w, dir)
	verifyRestored(t, w)
	waitWorkloadExit(t, rp, w)
}
