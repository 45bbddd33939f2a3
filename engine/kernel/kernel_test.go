package kernel

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/crtools/crtools/test/testenv"
	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t, "kernel probes (ptrace of a child, namespaces, raw sockets)")
}

// onProbeThread runs f on a locked thread, as Check does.
func onProbeThread(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		f()
	}()
	<-done
}

func TestChildELFRunsAndPauses(t *testing.T) {
	requireRoot(t)
	img, err := newChildImage()
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	c, err := img.start(0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.kill()
	// cmd.Start returns once exec has begun, not once the segments are
	// mapped: wait for the child to run first.
	if err := waitInPause(c.pid); err != nil {
		t.Fatal(err)
	}
	maps, err := readMaps(c.pid)
	if err != nil {
		t.Fatal(err)
	}
	var code, scratch bool
	for _, m := range maps {
		code = code || (m.start == childBase && m.perms == "r-xp")
		scratch = scratch || (m.start == childScratch && m.perms == "rw-p")
	}
	if !code || !scratch {
		t.Fatalf("child maps lack code r-xp at %#x or scratch rw-p at %#x: %+v", childBase, childScratch, maps)
	}
}

// waitInPause waits (up to 2 s) until pid sits in pause(), syscall 34.
func waitInPause(pid int) error {
	var last []byte
	for i := 0; i < 400; i++ {
		last, _ = os.ReadFile(filepathJoin("/proc", pid, "syscall"))
		if strings.HasPrefix(string(last), "34 ") {
			return nil
		}
		unix.Nanosleep(&unix.Timespec{Nsec: 5e6}, nil)
	}
	return errors.New("child is not in pause(): /proc/PID/syscall " + strings.TrimSpace(string(last)))
}

func filepathJoin(a string, pid int, b string) string {
	return filepath.Join(a, itoa(pid), b)
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for n >= 10 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	i--
	b[i] = byte('0' + n)
	return string(b[i:])
}

// TestInjectKeepsChildIntact injects a failing and a succeeding syscall
// and checks return values, that registers are put back, and that the
// child goes on pausing after it is let go.
func TestInjectKeepsChildIntact(t *testing.T) {
	requireRoot(t)
	e := &env{}
	defer e.close()
	onProbeThread(func() {
		c, err := e.traced()
		if err != nil {
			t.Error(err)
			return
		}
		ret, err := c.inject(entrySyscall, unix.SYS_CLOSE, 12345)
		if err != nil {
			t.Error(err)
			return
		}
		if !errors.Is(errnoOf(ret), unix.EBADF) {
			t.Errorf("close(12345) in the child gave %d, want -EBADF", ret)
		}
		ret, err = c.inject(entrySyscall, unix.SYS_GETPID)
		if err != nil || int(ret) != c.pid {
			t.Errorf("getpid in the child gave %d, %v; want %d", ret, err, c.pid)
		}
		var now unix.PtraceRegs
		if err := unix.PtraceGetRegs(c.pid, &now); err != nil {
			t.Error(err)
			return
		}
		if now != c.saved {
			t.Errorf("registers not put back: rip %#x rax %#x, saved rip %#x rax %#x", now.Rip, now.Rax, c.saved.Rip, c.saved.Rax)
		}
		if err := unix.PtraceDetach(c.pid); err != nil {
			t.Error(err)
			return
		}
	})
	c := e.c
	if c == nil {
		return
	}
	// After detach the interrupted pause() restarts.
	if err := waitInPause(c.pid); err != nil {
		t.Fatalf("after detach: %v", err)
	}
}

func TestParseDiagReply(t *testing.T) {
	msg := func(typ uint16, seq uint32, body []byte) []byte {
		b := make([]byte, unix.NLMSG_HDRLEN+len(body))
		binary.LittleEndian.PutUint32(b, uint32(len(b)))
		binary.LittleEndian.PutUint16(b[4:], typ)
		binary.LittleEndian.PutUint32(b[8:], seq)
		copy(b[unix.NLMSG_HDRLEN:], body)
		return b
	}
	errBody := make([]byte, 4)
	enoent := -int32(unix.ENOENT)
	binary.LittleEndian.PutUint32(errBody, uint32(enoent))
	two := append(msg(unix.SOCK_DIAG_BY_FAMILY, 7, make([]byte, 12)), msg(unix.SOCK_DIAG_BY_FAMILY, 7, make([]byte, 4))...)
	cases := []struct {
		name    string
		in      []byte
		done    bool
		n       int
		wantErr error
		anyErr  bool
	}{
		{"two sockets then more", two, false, 2, nil, false},
		{"done", msg(unix.NLMSG_DONE, 7, make([]byte, 4)), true, 0, nil, false},
		{"error ENOENT", msg(unix.NLMSG_ERROR, 7, errBody), false, 0, unix.ENOENT, true},
		{"ack", msg(unix.NLMSG_ERROR, 7, make([]byte, 4)), true, 0, nil, false},
		{"short error", msg(unix.NLMSG_ERROR, 7, nil), false, 0, nil, true},
		{"wrong seq", msg(unix.NLMSG_DONE, 8, nil), false, 0, nil, true},
		{"length too big", func() []byte { b := msg(unix.NLMSG_DONE, 7, nil); b[0] = 200; return b }(), false, 0, nil, true},
		{"length too small", func() []byte { b := msg(unix.NLMSG_DONE, 7, nil); b[0] = 3; return b }(), false, 0, nil, true},
		{"truncated header", []byte{1, 2, 3}, false, 0, nil, false},
		{"empty", nil, false, 0, nil, false},
	}
	for _, c := range cases {
		done, n, err := parseDiagReply(c.in, 7)
		if done != c.done || n != c.n || (err != nil) != c.anyErr || (c.wantErr != nil && !errors.Is(err, c.wantErr)) {
			t.Errorf("%s: got done=%v n=%d err=%v; want done=%v n=%d err=%v(any %v)", c.name, done, n, err, c.done, c.n, c.wantErr, c.anyErr)
		}
	}
}

func TestFeatureTable(t *testing.T) {
	seen := map[string]bool{}
	for _, f := range Features() {
		if f.Name == "" || f.NeededBy == "" || f.MinKernel == "" || f.probe == nil {
			t.Errorf("feature %+v is incomplete", f)
		}
		if seen[f.Name] {
			t.Errorf("feature %s listed twice", f.Name)
		}
		seen[f.Name] = true
	}
	// The features issue 2 names must all be probed.
	for _, n := range []string{"ptrace-seize", "ptrace-xstate", "ptrace-rseq", "process_vm_readv", "process_vm_writev",
		"pidfd_open", "pidfd_getfd", "clone3-set_tid", "map_files", "pagemap", "pagemap-scan", "uffd-wp-async", "kcmp",
		"memfd", "vdso-map", "prctl-mm-map", "tcp-repair", "sock_diag-unix", "sock_diag-inet", "sock_diag-packet",
		"sock_diag-netlink", "ns-uts", "ns-ipc", "ns-mnt", "ns-pid", "ns-net", "netfilter"} {
		if !seen[n] {
			t.Errorf("no probe for %s", n)
		}
	}
}

// TestChildELFParses checks the hand-made executable with debug/elf: the
// entry point, the two loadable segments and their protections.
func TestChildELFParses(t *testing.T) {
	f, err := elf.NewFile(bytes.NewReader(childELF()))
	if err != nil {
		t.Fatal(err)
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		t.Fatalf("class %v machine %v type %v", f.Class, f.Machine, f.Type)
	}
	if f.Entry != childBase+codeOff {
		t.Errorf("entry %#x, want %#x", f.Entry, childBase+codeOff)
	}
	var loads []*elf.Prog
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			loads = append(loads, p)
		}
	}
	if len(loads) != 2 {
		t.Fatalf("%d PT_LOAD segments, want 2", len(loads))
	}
	if loads[0].Vaddr != childBase || loads[0].Flags != elf.PF_R|elf.PF_X {
		t.Errorf("code segment at %#x flags %v", loads[0].Vaddr, loads[0].Flags)
	}
	if loads[1].Vaddr != childScratch || loads[1].Flags != elf.PF_R|elf.PF_W || loads[1].Memsz != 0x1000 {
		t.Errorf("scratch segment at %#x flags %v size %d", loads[1].Vaddr, loads[1].Flags, loads[1].Memsz)
	}
	code := make([]byte, len(childCode))
	if _, err := loads[0].ReadAt(code, codeOff); err != nil || !bytes.Equal(code, childCode) {
		t.Errorf("code at offset %d is not childCode (%v)", codeOff, err)
	}
	// The injection entry points hold a syscall instruction.
	for _, off := range []int{entrySyscall, entryFork} {
		if b := childELF()[off : off+2]; b[0] != 0x0f || b[1] != 0x05 {
			t.Errorf("entry at %d is % x, not syscall", off, b)
		}
	}
}

func TestIfMissing(t *testing.T) {
	err := IfMissing("clone3-set_tid", fmt.Errorf("clone3 task 5: %w", unix.ENOSYS))
	want := "kernel feature clone3-set_tid is missing (Linux 5.5 or later; needed for restoring tasks and threads with their PIDs): clone3 task 5: function not implemented"
	if err == nil || err.Error() != want {
		t.Errorf("IfMissing(ENOSYS) = %v, want %q", err, want)
	}
	if !errors.Is(err, unix.ENOSYS) {
		t.Errorf("%v does not wrap ENOSYS", err)
	}
	if again := IfMissing("pidfd_open", err); again != err {
		t.Errorf("IfMissing wrapped a MissingError again: %v", again)
	}
	other := fmt.Errorf("x: %w", unix.EPERM)
	if got := IfMissing("clone3-set_tid", other); got != other {
		t.Errorf("IfMissing(EPERM) = %v, want it unchanged", got)
	}
	if IfMissing("clone3-set_tid", nil) != nil {
		t.Error("IfMissing(nil) is not nil")
	}
}
