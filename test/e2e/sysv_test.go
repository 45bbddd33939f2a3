package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/test/harness"
)

// sysvMaps returns the SysV shared memory lines of pid's maps: address
// range, protection, inode (the shmid) and name.
func sysvMaps(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatalf("read maps of %d: %v", pid, err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 6 && strings.HasPrefix(f[5], "/SYSV") {
			out = append(out, strings.Join([]string{f[0], f[1], f[4], f[5]}, " "))
		}
	}
	return out
}

// onlyChild returns the one child of pid.
func onlyChild(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	f := strings.Fields(string(b))
	if err != nil || len(f) != 1 {
		t.Fatalf("children of %d: %q %v, want one", pid, b, err)
	}
	c, _ := strconv.Atoi(f[0])
	return c
}

// readShmid reads the segment id sysvshm.c wrote into path, and has the
// test remove the segment at its end whatever happens.
func readShmid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	id, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = unix.SysvShmCtl(id, unix.IPC_RMID, nil) })
	return id
}

// TestDumpRestoreSysVShm: a parent and its child attached to one SysV
// shared memory segment of crtools' IPC namespace (sysvshm.c: the last
// page of the attachment mprotect'ed read-only, and a second, SHM_RDONLY
// attachment in the parent), both writing into it. The dump saves none of
// its pages (the segment, outside the tree, outlives it); the restored
// tasks have it attached at the same addresses with the same protections
// and the same id, see each other's writes and carry on. Once the
// segment is gone, a restore of the same images fails in its load step
// with one line naming the segment, and creates no task.
func TestDumpRestoreSysVShm(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	idFile := filepath.Join(t.TempDir(), "shmid")
	w := harness.StartWorkload(t, harness.BuildC(t, "sysvshm.c"), idFile)
	w.MustReady(10 * time.Second)
	shmid := readShmid(t, idFile) // written before the ready: removed at the end whatever fails
	w.MustVerify(10 * time.Second)
	child := onlyChild(t, w.Pid)
	before := map[int][]string{w.Pid: sysvMaps(t, w.Pid), child: sysvMaps(t, child)}
	if len(before[w.Pid]) != 3 || len(before[child]) != 3 {
		t.Fatalf("SysV mappings before the dump: parent %q, child %q; want 3 each", before[w.Pid], before[child])
	}
	dir := dumpKill(t, w)
	rp.Forget(w.Pid)
	pidFree(t, child, "dumped child")
	var ds unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(shmid, unix.IPC_STAT, &ds); err != nil || ds.Nattch != 0 {
		t.Fatalf("segment %d after the dump: nattch %d, %v; want it there, unattached", shmid, ds.Nattch, err)
	}
	// Each task's mm has its 3 VMAs of the segment, and its pagemap no
	// page of them: the segment, which holds them, outlives the tree.
	for _, pid := range []int{w.Pid, child} {
		code, out := crtools(t, "show", "-f", filepath.Join(dir, fmt.Sprintf("mm-%d.img", pid)))
		if code != 0 {
			t.Fatalf("crtools show -f mm-%d.img: exit %d\n%s", pid, code, out)
		}
		if n := strings.Count(out, "status: 0x401 (REGULAR|SYSVIPC)"); n != 3 {
			t.Errorf("mm-%d.img has %d REGULAR|SYSVIPC VMAs, want 3:\n%s", pid, n, out)
		}
		if n := strings.Count(out, fmt.Sprintf("shmid: %d\n    prot: 0x3 (READ|WRITE)\n    flags: 0x1 (SHARED)\n", shmid)); n != 1 {
			t.Errorf("mm-%d.img has %d writable shared VMAs of segment %d, want 1:\n%s", pid, n, shmid, out)
		}
		pm, err := image.ReadPagemap(dir, image.Pagemap, uint64(pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range before[pid] {
			var lo, hi uint64
			if _, err := fmt.Sscanf(l, "%x-%x", &lo, &hi); err != nil {
				t.Fatal(err)
			}
			for _, r := range pm.Runs {
				if r.Vaddr < hi && r.End() > lo {
					t.Errorf("pagemap of %d holds pages %#x+%d of the segment's VMA %s", pid, r.Vaddr, r.NrPages, l)
				}
			}
		}
	}
	restoreDetached(t, w, dir)
	for pid, want := range before {
		if got := sysvMaps(t, pid); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("SysV mappings of %d after restore:\n%s\nwant\n%s", pid, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	if _, err := unix.SysvShmCtl(shmid, unix.IPC_STAT, &ds); err != nil || ds.Nattch != 6 {
		t.Errorf("segment %d after the restore: nattch %d, %v; want 6 (one a VMA)", shmid, ds.Nattch, err)
	}
	verifyRestored(t, w) // the workload removes the segment as it exits
	waitWorkloadExit(t, rp, w)

	code, out := crtools(t, "restore", "-D", dir, "-d", "-v", "0")
	line := oneLine(t, "restore without the segment", code, out,
		fmt.Sprintf("SysV shared memory segment %d, attached at ", shmid), "does not exist in crtools' IPC namespace")
	if !strings.Contains(line, "step load") {
		t.Errorf("restore failed after it began creating tasks: %s", line)
	}
	pidFree(t, w.Pid, "restore without the segment")
	pidFree(t, child, "restore without the segment")
}

// TestDumpSysVShmRemovedRefused: a segment removed (IPC_RMID) while the
// tree keeps it attached lives only as long as the tree; a killing dump
// would destroy it, and nothing could attach it again. The dump is
// refused with one line naming it, and the tree runs on untouched.
func TestDumpSysVShmRemovedRefused(t *testing.T) {
	harness.RequireRoot(t)
	harness.Subreaper()
	idFile := filepath.Join(t.TempDir(), "shmid")
	w := harness.StartWorkload(t, harness.BuildC(t, "sysvshm.c"), idFile, "rmid")
	w.MustReady(10 * time.Second)
	shmid := readShmid(t, idFile) // written before the ready: removed at the end whatever fails
	w.MustVerify(10 * time.Second)
	dir := filepath.Join(t.TempDir(), "images")
	code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", dir, "-v", "0")
	oneLine(t, "dump of a removed segment", code, out,
		fmt.Sprintf("SysV shared memory segment %d", shmid), "removed (IPC_RMID)", "not supported yet")
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("refused dump left %s behind (%v)", dir, err)
	}
	w.MustVerify(10 * time.Second)
	if err := w.VerifyAndExit(10 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestDumpRestoreSysVNamespace: a tree in an IPC namespace of its own
// (sysvns.c: unshare(CLONE_NEWIPC) before its fork) holding two SysV
// shared memory segments (one attached by parent and child, who count in
// it; one unattached, with contents, created by another uid and owned by
// a third), a message queue larger than the namespace's msgmnb with
// messages of different types (one empty), and a semaphore set with
// values, is dumped with -n ipc and killed, which takes the namespace and
// its objects with it. The restore recreates them in a new namespace with
// the same ids, keys, modes, owners, creators, sizes, contents, messages
// and values; the tasks attach segment A where they had it and carry on.
// In "rmid", segment A was removed (IPC_RMID) while attached: it comes
// back removed, attached by both tasks, and goes with its last detach.
// In "forced", the namespace has shm_rmid_forced set and a shmmax below
// segment A's size: both come back, and so does A.
func TestDumpRestoreSysVNamespace(t *testing.T) {
	harness.RequireRoot(t)
	for _, arg := range []string{"plain", "rmid", "forced"} {
		t.Run(arg, func(t *testing.T) { testSysVNamespace(t, arg) })
	}
}

func testSysVNamespace(t *testing.T, arg string) {
	rp := harness.Subreaper()
	w := harness.StartWorkload(t, harness.BuildC(t, "sysvns.c"), arg)
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	child := onlyChild(t, w.Pid)
	before := map[int][]string{w.Pid: sysvMaps(t, w.Pid), child: sysvMaps(t, child)}
	dir := filepath.Join(t.TempDir(), "images")
	harness.BuildCrtools(t)
	code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", dir, "-n", "ipc", "-v", "2", "-o", filepath.Join(w.Dir, "dump.log"))
	if code != 0 {
		t.Fatalf("crtools dump -n ipc: exit %d\n%s\n%s", code, out, readLog(w, "dump.log"))
	}
	select {
	case <-w.Exited():
	case <-time.After(10 * time.Second):
		t.Fatalf("dumped workload %d did not die", w.Pid)
	}
	rp.Forget(w.Pid)
	pidFree(t, child, "dumped child")
	for _, g := range []string{"ipcns-var-*.img", "ipcns-shm-*.img", "ipcns-msg-*.img", "ipcns-sem-*.img"} {
		if m, _ := filepath.Glob(filepath.Join(dir, g)); len(m) != 1 {
			t.Errorf("images: %d files %s, want 1", len(m), g)
		}
	}
	// The contents of both segments, as CRIU 4 keeps them: in shmem
	// pagemaps named by the segment ids (A is 5 + 2 * 32768).
	if _, err := os.Stat(filepath.Join(dir, "pagemap-shmem-65541.img")); err != nil {
		t.Errorf("segment A's pagemap: %v", err)
	}
	// crtools show lists the objects with what they hold.
	code, out = crtools(t, "show", "-D", dir)
	if code != 0 {
		t.Fatalf("crtools show -D: exit %d\n%s", code, out)
	}
	segA := "shm 65541 key 0x5eed0001 mode 640 owner 0:0 creator 0:0: 8202 bytes, contents in pagemap-shmem-65541.img"
	if arg == "rmid" {
		segA = "shm 65541 key 0x0 mode 1640 owner 0:0 creator 0:0: 8202 bytes, removed (IPC_RMID) while attached, contents in pagemap-shmem-65541.img"
	}
	for _, want := range []string{
		segA,
		"key 0x5eed0002 mode 604 owner 4321:8765 creator 1234:5678: 4096 bytes",
		"msg 98311 key 0x5eed0003 mode 600 owner 0:0 creator 0:0: 4 messages, 88 of 20000 bytes",
		`    [0] type 3: 16 bytes "first, of type 3"`, `    [2] type 2: 0 bytes ""`,
		"sem 3 key 0x5eed0004 mode 660 owner 0:0 creator 0:0: 4 semaphores, values [0 7 32767 1]",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("show -D lacks %q:\n%s", want, out)
		}
	}
	restoreDetached(t, w, dir)
	// (The new namespace may get the freed number of the old one.)
	if after := nsOf(t, fmt.Sprint(w.Pid), "ipc"); after == nsOf(t, "self", "ipc") {
		t.Errorf("restored task is in crtools' ipc namespace %s", after)
	}
	for pid, want := range before {
		got := sysvMaps(t, pid)
		if arg == "rmid" {
			// The images keep no key of a removed segment: its
			// mappings are named after the private one now.
			for i := range want {
				want[i] = strings.Replace(want[i], "/SYSV5eed0001", "/SYSV00000000", 1)
			}
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("SysV mappings of %d after restore:\n%s\nwant\n%s", pid, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	verifyRestored(t, w)
	waitWorkloadExit(t, rp, w)
}

// TestDumpSysVNamespaceRefusals: with -n ipc, a task holding a segment of
// another IPC namespace (attached before its unshare) is refused at dump
// with one line naming the segment; the tree runs on untouched.
func TestDumpSysVNamespaceRefusals(t *testing.T) {
	harness.RequireRoot(t)
	harness.Subreaper()
	for _, c := range []struct {
		arg  string
		want []string
	}{
		{"outside", []string{"attaches SysV shared memory segment", "(key 0x0, 4096 bytes)", "which its ipc namespace does not hold", "not supported yet"}},
	} {
		t.Run(c.arg, func(t *testing.T) {
			w := harness.StartWorkload(t, harness.BuildC(t, "sysvns.c"), c.arg)
			w.MustReady(10 * time.Second)
			w.MustVerify(10 * time.Second)
			dir := filepath.Join(t.TempDir(), "images")
			code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", dir, "-n", "ipc", "-v", "0")
			oneLine(t, "dump -n ipc ("+c.arg+")", code, out, c.want...)
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("refused dump left %s behind (%v)", dir, err)
			}
			w.MustVerify(10 * time.Second)
			if err := w.VerifyAndExit(10 * time.Second); err != nil {
				t.Fatal(err)
			}
		})
	}
}
