package restore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/ptrace"
	"github.com/crtools/crtools/test/testenv"
)

func requireRoot(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t, "restore (clone3 with set_tid, ptrace)")
}

// freePid returns a PID that no task uses now, above the current ones.
func freePid(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/ns_last_pid")
	if err != nil {
		t.Fatal(err)
	}
	var last int
	fmt.Sscan(strings.TrimSpace(string(b)), &last)
	for pid := last + 500; ; pid++ {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			return pid
		}
	}
}

func u64(v uint64) *uint64 { return &v }
func u32(v uint32) *uint32 { return &v }

// TestPuppetMemory drives the puppet machinery on its own: a puppet with a
// chosen PID, everything unmapped but the trampoline, one VMA mapped and
// filled from a pages file by injected preadv, read back from outside,
// then killed without a trace.
// startAnonTask creates the puppet of a one-task image at a free pid whose
// memory is one private anonymous VMA of size bytes at base with prot,
// filled from pm (not yet mapped: the test maps it). The caller closes r.
func startAnonTask(t *testing.T, dir string, base, size uint64, prot int, pm *image.PageIndex) (*restorer, *taskImage, *puppet) {
	t.Helper()
	pid := freePid(t)
	vma := &pb.VmaEntry{Start: u64(base), End: u64(base + size), Prot: u32(uint32(prot)),
		Flags: u32(unix.MAP_PRIVATE | unix.MAP_ANONYMOUS), Status: u32(vmaAreaRegular | vmaAnonPrivate)}
	task := &taskImage{pid: pid, tids: []int{pid}, mm: &pb.MmEntry{Vmas: []*pb.VmaEntry{vma}}, pagemap: pm}
	r := &restorer{opts: engine.RestoreOptions{ImagesDir: dir}, log: zerolog.New(os.Stderr),
		img: &imageSet{dir: dir, tasks: []*taskImage{task}, files: map[uint32]*pb.FileEntry{}}}
	if err := r.CreateTasks(t.Context()); err != nil {
		r.Close()
		t.Fatalf("CreateTasks: %v", err)
	}
	return r, task, r.procs[0].threads[0]
}

func TestPuppetMemory(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	const base, npages = 0x10000000, 64
	data := make([]byte, npages*pageSize)
	for i := range data {
		data[i] = byte(i*7 + i/pageSize)
	}
	// Two runs with a hole between them; the hole must read as zeros.
	pw, err := image.CreatePages(dir, image.Pagemap, 1234, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := pw.AddRun(base, data[:16*pageSize], 16); err != nil {
		t.Fatal(err)
	}
	if err := pw.AddRun(base+32*pageSize, data[32*pageSize:], 32); err != nil {
		t.Fatal(err)
	}
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	pm, err := image.ReadPagemap(dir, image.Pagemap, 1234)
	if err != nil {
		t.Fatal(err)
	}

	r, task, p := startAnonTask(t, dir, base, npages*pageSize, unix.PROT_READ, pm)
	defer r.Close()
	pid := task.pid
	if p.pid != pid {
		t.Fatalf("puppet has pid %d, want %d", p.pid, pid)
	}
	if ppid := ppidOf(t, pid); ppid != os.Getpid() {
		t.Errorf("puppet's parent is %d, want crtools (%d)", ppid, os.Getpid())
	}
	err = r.tr.Do(func() error {
		if _, err := p.call(unix.SYS_CLOSE_RANGE, 0, uint64(^uint32(0)), 0); err != nil {
			return err
		}
		if err := p.unmapPuppet(); err != nil {
			return err
		}
		plans, err := p.mapVMAs(r.img, newShmState(), task.mm.Vmas, pm)
		if err != nil {
			return err
		}
		n, err := p.fillPages(dir, pm)
		if err != nil {
			return err
		}
		if n != 48*pageSize {
			return fmt.Errorf("filled %d bytes, want %d", n, 48*pageSize)
		}
		if err := p.protectVMAs(plans); err != nil {
			return err
		}
		return p.runPending() // protectVMAs queues
	})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := ptrace.ReadMem(pid, base, got); err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), data...)
	clear(want[16*pageSize : 32*pageSize])
	if !bytes.Equal(got, want) {
		t.Errorf("memory of the puppet differs from the pages written")
	}
	maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(maps)), "\n") {
		if !strings.Contains(l, "[vsyscall]") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "10000000-10040000 r--p") {
		t.Errorf("puppet maps: want the VMA (read-only now) and the trampoline only, got\n%s", maps)
	}
	if fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); len(fds) != 0 {
		t.Errorf("puppet still has %d fds", len(fds))
	}
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid %d still exists after Kill", pid)
	}
	for _, c := range r.created {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", c)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("created task %d still exists after Kill", c)
		}
	}
}

func ppidOf(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	var state string
	var ppid int
	fmt.Sscan(s[strings.LastIndexByte(s, ')')+2:], &state, &ppid)
	return ppid
}

// TestPidInUse: a PID held by a live process is an error naming it and
// pointing at PID namespaces.
func TestPidInUse(t *testing.T) {
	r := &restorer{log: zerolog.Nop()}
	err := r.waitPidsFree([]int{os.Getpid()})
	var inUse *PidInUseError
	if !errors.As(err, &inUse) || inUse.Pid != os.Getpid() {
		t.Fatalf("waitPidsFree(own pid) = %v, want PidInUseError", err)
	}
	// The way out it names is the one TestNSPidDumpRestore (test/e2e)
	// takes: dump -n pid, restore into a new pid namespace.
	if !strings.Contains(err.Error(), "PID namespace") || !strings.Contains(err.Error(), "-n pid") || !strings.Contains(err.Error(), fmt.Sprint(os.Getpid())) {
		t.Errorf("message %q does not name the pid and the way out", err)
	}
}

var _ = filepath.Join
