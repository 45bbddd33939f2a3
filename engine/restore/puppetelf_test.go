package restore

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image/pb"
)

// vsyscallAddr is where the kernel's [vsyscall] page is in every task.
const vsyscallAddr = 0xffffffffff600000

func TestPuppetELFLayout(t *testing.T) {
	b := puppetELF()
	if len(b) > pageSize {
		t.Fatalf("puppetELF is %d bytes, more than its one page", len(b))
	}
	if want := elfHeaderSize + 2*elfPhdrSize + len(trampolineCode); len(b) != want {
		t.Errorf("puppetELF is %d bytes, want %d", len(b), want)
	}
	entry := le.Uint64(b[24:])
	if off := entry - puppetELFBase; off >= uint64(len(b)) || string(b[off:off+uint64(len(trampolineCode))]) != string(trampolineCode) {
		t.Errorf("entry %#x does not hold the trampoline code", entry)
	}
}

// TestFirstPuppetIsPuppetELF: the tasks are cloned from a first puppet
// exec'ed from the memfd (not crtools' binary, the fallback), with
// personality 0 (no READ_IMPLIES_EXEC from the exec, which every task
// would inherit) and nothing of the executable left mapped.
func TestFirstPuppetIsPuppetELF(t *testing.T) {
	requireRoot(t)
	r, pid, exe := createOneTask(t)
	if !strings.Contains(exe, "memfd:crtools-puppet") {
		t.Errorf("task %d's executable is %q, want the puppet memfd", pid, exe)
	}
	pers, err := os.ReadFile(fmt.Sprintf("/proc/%d/personality", pid))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(pers)) != "00000000" {
		t.Errorf("task %d has personality %s, want 0", pid, pers)
	}
	// The unmaps are queued with the next call: run one.
	if err := r.tr.Do(func() error { return r.procs[0].threads[0].runPending() }); err != nil {
		t.Fatal(err)
	}
	maps, err := readMaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range maps {
		if m.start == vsyscallAddr {
			continue // cannot be unmapped
		}
		if m.start < r.tramp.addr || m.end > r.tramp.addr+r.tramp.size {
			t.Errorf("task %d has %#x-%#x mapped besides the trampoline", pid, m.start, m.end)
		}
	}
}

// TestFirstPuppetFallback: where memfds may not be executed
// (vm.memfd_noexec=2: memfd_create with MFD_EXEC is refused), the first
// puppet is crtools' own binary, and the tasks are still created. The
// sysctl is per pid namespace: the test sets it in a new one (with a
// mount namespace for its /proc), where it runs itself again.
func TestFirstPuppetFallback(t *testing.T) {
	requireRoot(t)
	if os.Getenv(noexecChildEnv) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFirstPuppetFallback$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), noexecChildEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNS}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestFirstPuppetFallback") {
			t.Fatalf("in a pid namespace with vm.memfd_noexec=2: %v\n%s", err, out)
		}
		return
	}
	// PID 1 of a new pid and mount namespace: its own /proc, and the
	// sysctl of its pid namespace only.
	if err := unix.Mount("none", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatalf("make mounts private: %v", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		t.Fatalf("mount /proc: %v", err)
	}
	if err := os.WriteFile("/proc/sys/vm/memfd_noexec", []byte("2"), 0o644); err != nil {
		t.Fatalf("set vm.memfd_noexec: %v", err)
	}
	if _, err := puppetMemfd(); err == nil {
		t.Fatal("puppetMemfd made an executable memfd with vm.memfd_noexec=2")
	}
	_, pid, exe := createOneTask(t)
	self, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	if exe != self {
		t.Errorf("task %d's executable is %q, want crtools' own (here the test binary %q)", pid, exe, self)
	}
}

// createOneTask runs CreateTasks for a one-task tree at a free PID (the
// restorer is closed at the test's end) and returns the task's PID and
// the executable it was exec'ed from (/proc/PID/exe).
func createOneTask(t *testing.T) (r *restorer, pid int, exe string) {
	t.Helper()
	pid = freePid(t)
	task := &taskImage{pid: pid, tids: []int{pid}, mm: &pb.MmEntry{}}
	r = &restorer{opts: engine.RestoreOptions{ImagesDir: t.TempDir()}, log: zerolog.New(os.Stderr),
		img: &imageSet{tasks: []*taskImage{task}, files: map[uint32]*pb.FileEntry{}}}
	t.Cleanup(func() { r.Close() })
	if err := r.CreateTasks(t.Context()); err != nil {
		t.Fatalf("CreateTasks: %v", err)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatal(err)
	}
	return r, pid, exe
}

// noexecChildEnv tells TestFirstPuppetFallback it runs in its namespace.
const noexecChildEnv = "CRTOOLS_TEST_MEMFD_NOEXEC_CHILD"
