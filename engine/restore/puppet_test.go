package restore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
	procfs "github.com/crtools/crtools/engine/proc"
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
	// Past pid_max the kernel goes on from 300 (RESERVED_PIDS), and
	// clone3 refuses a set_tid above pid_max (EINVAL).
	pidMax := 32768
	if b, err := os.ReadFile("/proc/sys/kernel/pid_max"); err == nil {
		fmt.Sscan(strings.TrimSpace(string(b)), &pidMax)
	}
	for pid := last + 500; ; pid++ {
		if pid >= pidMax {
			pid = 300 + pid - pidMax
		}
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

// TestClassifyHolder: a task killed but not yet a zombie holds its PID only
// for a moment, as a zombie does, and restore waits for it (the pipeline
// test once saw a child of a killed pipeline still running its do_exit,
// state R, when restore wanted its PID).
func TestClassifyHolder(t *testing.T) {
	noStatus := func() (*procfs.Status, error) { return &procfs.Status{}, nil }
	killed := func() (*procfs.Status, error) { return &procfs.Status{SigPnd: 1 << 8}, nil }
	groupKilled := func() (*procfs.Status, error) { return &procfs.Status{ShdPnd: 1<<8 | 1<<14}, nil }
	otherSig := func() (*procfs.Status, error) { return &procfs.Status{SigPnd: 1<<14 | 1<<9}, nil }
	gone := func() (*procfs.Status, error) { return nil, os.ErrNotExist }
	for _, c := range []struct {
		name   string
		st     procfs.Stat
		status func() (*procfs.Status, error)
		want   pidHolder
	}{
		{"zombie", procfs.Stat{State: 'Z'}, noStatus, pidZombie},
		{"dead", procfs.Stat{State: 'X'}, noStatus, pidZombie},
		{"in do_exit running", procfs.Stat{State: 'R', Flags: procfs.PF_EXITING | 0x400000}, noStatus, pidDying},
		{"in do_exit sleeping", procfs.Stat{State: 'D', Flags: procfs.PF_EXITING}, noStatus, pidDying},
		{"SIGKILL pending", procfs.Stat{State: 'S'}, killed, pidDying},
		{"SIGKILL pending for the group", procfs.Stat{State: 'R'}, groupKilled, pidDying},
		{"other signals pending", procfs.Stat{State: 'S'}, otherSig, pidLive},
		{"running", procfs.Stat{State: 'R', Flags: 0x400000}, noStatus, pidLive},
		{"status unreadable", procfs.Stat{State: 'S'}, gone, pidLive},
	} {
		if got := classifyHolder(&c.st, c.status); got != c.want {
			t.Errorf("%s: classifyHolder = %d, want %d", c.name, got, c.want)
		}
	}
}

// TestHolderOf reads real tasks: this process is live, an unreaped child
// is a zombie, a reaped one frees its PID.
func TestHolderOf(t *testing.T) {
	if h, _, err := holderOf(os.Getpid()); err != nil || h != pidLive {
		t.Errorf("holderOf(self) = %d, %v, want live", h, err)
	}
	cmd := exec.Command("/bin/true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	// Wait for the zombie without reaping it.
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if h, _, err := holderOf(pid); err != nil || h != pidZombie {
		t.Errorf("holderOf(zombie %d) = %d, %v, want zombie", pid, h, err)
	}
	r := &restorer{log: zerolog.Nop()}
	done := make(chan error, 1)
	go func() { done <- r.waitPidsFree([]int{pid}) }()
	time.Sleep(20 * time.Millisecond)
	_ = cmd.Wait()
	if err := <-done; err != nil {
		t.Errorf("waitPidsFree(zombie reaped after 20 ms) = %v", err)
	}
	if h, _, err := holderOf(pid); err != nil || h != pidFree {
		t.Errorf("holderOf(reaped %d) = %d, %v, want free", pid, h, err)
	}
}

// TestWaitPidsFreeDying: a task killed a moment ago holds its PID while it
// releases its memory in do_exit (state R, PF_EXITING), before it is a
// zombie: restore waits for it as for a zombie, as it does after a dump
// that kills its tree without waiting (engine/dump killAll).
func TestWaitPidsFreeDying(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 (installed by .ci/run): %v", err)
	}
	// 64 MiB written: its exit_mm takes long enough to be seen (tens of
	// ms here); it says when it is done.
	cmd := exec.Command(py, "-c", `import os, time
b = b"\x01" * (64 << 20)
os.write(1, b"x")
time.sleep(100)`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if _, err := out.Read(make([]byte, 1)); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("memory toucher %d did not start: %v", pid, err)
	}
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if h, st, err := holderOf(pid); err != nil || h == pidLive {
		t.Errorf("holderOf(pid %d just killed) = %d (%+v), %v, want dying or zombie", pid, h, st, err)
	}
	r := &restorer{log: zerolog.Nop()}
	done := make(chan error, 1)
	go func() { done <- r.waitPidsFree([]int{pid}) }()
	// Reap it only once it is a zombie (as its parent would).
	var info unix.Siginfo
	_ = unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
	_ = cmd.Wait()
	if err := <-done; err != nil {
		t.Errorf("waitPidsFree(pid %d killed) = %v, want it to wait until the PID is free", pid, err)
	}
}
