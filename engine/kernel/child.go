package kernel

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The probe child is a static x86-64 ELF made of two loadable segments:
// code at childBase (read+execute) and one zeroed page at childScratch
// (read+write) for the structures injected syscalls need.
const (
	childBase    = 0x400000
	childScratch = 0x401000
	elfHdrLen    = 64
	phdrLen      = 56
	nPhdr        = 3
	codeOff      = elfHdrLen + nPhdr*phdrLen
)

// Code of the child, and the offsets of its entry points (from codeOff).
//
//	0:  mov eax, 34 ; syscall ; jmp 0      pause() forever
//	9:  syscall ; int3                     run an injected syscall, trap
//	12: syscall ; test rax,rax ; jz 20 ; int3
//	                                       the same for fork-like calls: the
//	20: mov eax, 60 ; xor edi,edi ; syscall
//	                                       new process exits at once
var childCode = []byte{
	0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7,
	0x0f, 0x05, 0xcc,
	0x0f, 0x05, 0x48, 0x85, 0xc0, 0x74, 0x01, 0xcc,
	0xb8, 0x3c, 0x00, 0x00, 0x00, 0x31, 0xff, 0x0f, 0x05,
}

const (
	entrySyscall = codeOff + 9
	entryFork    = codeOff + 12
)

// childELF returns the bytes of the probe child's executable.
func childELF() []byte {
	total := codeOff + len(childCode)
	b := make([]byte, total)
	le := binary.LittleEndian
	copy(b, []byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0})
	le.PutUint16(b[16:], 2)  // ET_EXEC
	le.PutUint16(b[18:], 62) // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], childBase+codeOff) // entry
	le.PutUint64(b[32:], elfHdrLen)         // phoff
	le.PutUint16(b[52:], elfHdrLen)
	le.PutUint16(b[54:], phdrLen)
	le.PutUint16(b[56:], nPhdr)
	le.PutUint16(b[58:], 64)
	phdr := func(i int, typ, flags uint32, off, vaddr, filesz, memsz, align uint64) {
		p := b[elfHdrLen+i*phdrLen:]
		le.PutUint32(p[0:], typ)
		le.PutUint32(p[4:], flags)
		le.PutUint64(p[8:], off)
		le.PutUint64(p[16:], vaddr)
		le.PutUint64(p[24:], vaddr)
		le.PutUint64(p[32:], filesz)
		le.PutUint64(p[40:], memsz)
		le.PutUint64(p[48:], align)
	}
	const pfX, pfW, pfR = 1, 2, 4
	phdr(0, 1, pfR|pfX, 0, childBase, uint64(total), uint64(total), 0x1000)
	phdr(1, 1, pfR|pfW, 0, childScratch, 0, 0x1000, 0x1000)
	phdr(2, 0x6474e551, pfR|pfW, 0, 0, 0, 0, 16) // PT_GNU_STACK: no executable stack
	copy(b[codeOff:], childCode)
	return b
}

// childImage is the probe child's executable in a memfd (or, where memfd
// cannot be executed, a temporary file).
type childImage struct {
	f    *os.File
	path string
}

func newChildImage() (*childImage, error) {
	const mfdExec = 0x10 // MFD_EXEC (6.3): say so, or newer kernels warn
	fd, err := unix.MemfdCreate("crtools-probe", unix.MFD_CLOEXEC|mfdExec)
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate("crtools-probe", unix.MFD_CLOEXEC)
	}
	var f *os.File
	if err == nil {
		f = os.NewFile(uintptr(fd), "crtools-probe")
	} else {
		f, err = os.CreateTemp("", "crtools-probe-")
		if err != nil {
			return nil, fmt.Errorf("create probe executable: %w", err)
		}
		os.Remove(f.Name()) // executed through /proc/self/fd below
	}
	if _, err := f.Write(childELF()); err != nil {
		f.Close()
		return nil, fmt.Errorf("write probe executable: %w", err)
	}
	if err := f.Chmod(0o700); err != nil {
		f.Close()
		return nil, fmt.Errorf("chmod probe executable: %w", err)
	}
	return &childImage{f: f, path: fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd())}, nil
}

func (ci *childImage) Close() error { return ci.f.Close() }

// child is a running probe child.
type child struct {
	cmd    *exec.Cmd
	pid    int
	traced bool
	saved  unix.PtraceRegs // registers at the seize stop
}

// start runs the probe child with the given clone flags (0 for none).
func (ci *childImage) start(cloneflags uintptr) (*child, error) {
	cmd := exec.Command(ci.path)
	cmd.Args = []string{"crtools-probe"}
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: cloneflags}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start probe child: %w", err)
	}
	return &child{cmd: cmd, pid: cmd.Process.Pid}, nil
}

// kill kills and reaps the child.
func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
}

// seize attaches with PTRACE_SEIZE and stops the child with
// PTRACE_INTERRUPT. Preconditions: on the probe thread.
func (c *child) seize() error {
	if err := ptraceSeize(c.pid, unix.PTRACE_O_EXITKILL); err != nil {
		return fmt.Errorf("PTRACE_SEIZE pid %d: %w", c.pid, err)
	}
	c.traced = true
	if err := ptraceInterrupt(c.pid); err != nil {
		return fmt.Errorf("PTRACE_INTERRUPT pid %d: %w", c.pid, err)
	}
	ws, err := c.wait()
	if err != nil {
		return err
	}
	if !ws.Stopped() || ws.StopSignal() != unix.SIGTRAP || ws.TrapCause() != ptraceEventStop {
		return fmt.Errorf("PTRACE_INTERRUPT pid %d: got status %#x, want a PTRACE_EVENT_STOP", c.pid, uint32(ws))
	}
	if err := unix.PtraceGetRegs(c.pid, &c.saved); err != nil {
		return fmt.Errorf("PTRACE_GETREGS pid %d: %w", c.pid, err)
	}
	return nil
}

// wait waits (bounded) for the next state change of the traced child.
func (c *child) wait() (unix.WaitStatus, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(c.pid, &ws, unix.WALL|unix.WNOHANG, nil)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return 0, fmt.Errorf("wait for pid %d: %w", c.pid, err)
		}
		if got == c.pid {
			return ws, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("wait for pid %d: no stop within 5 s", c.pid)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// inject runs one system call in the stopped child from the instruction
// sequence at entry and returns its raw return value (negative errno on
// failure), then puts the registers back. orig_rax is -1 so that the
// kernel does not restart the pause() the child was stopped in.
// Preconditions: on the probe thread; the child is ptrace-stopped.
func (c *child) inject(entry uint64, nr uintptr, args ...uint64) (int64, error) {
	regs := c.saved
	regs.Rip = childBase + entry
	regs.Rax = uint64(nr)
	regs.Orig_rax = ^uint64(0)
	a := make([]uint64, 6)
	copy(a, args)
	regs.Rdi, regs.Rsi, regs.Rdx, regs.R10, regs.R8, regs.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	if err := unix.PtraceSetRegs(c.pid, &regs); err != nil {
		return 0, fmt.Errorf("PTRACE_SETREGS pid %d: %w", c.pid, err)
	}
	if err := unix.PtraceCont(c.pid, 0); err != nil {
		return 0, fmt.Errorf("PTRACE_CONT pid %d: %w", c.pid, err)
	}
	ws, err := c.wait()
	if err != nil {
		return 0, err
	}
	// A signal that arrives meanwhile (SIGCHLD from a child the
	// injected call created) stops the child first: suppress it.
	for tries := 0; ws.Stopped() && ws.StopSignal() != unix.SIGTRAP && tries < 10; tries++ {
		if err := unix.PtraceCont(c.pid, 0); err != nil {
			return 0, fmt.Errorf("PTRACE_CONT pid %d: %w", c.pid, err)
		}
		if ws, err = c.wait(); err != nil {
			return 0, err
		}
	}
	if !ws.Stopped() || ws.StopSignal() != unix.SIGTRAP {
		return 0, fmt.Errorf("injected syscall %d in pid %d: status %#x, want a SIGTRAP stop", nr, c.pid, uint32(ws))
	}
	var out unix.PtraceRegs
	if err := unix.PtraceGetRegs(c.pid, &out); err != nil {
		return 0, fmt.Errorf("PTRACE_GETREGS pid %d: %w", c.pid, err)
	}
	if err := unix.PtraceSetRegs(c.pid, &c.saved); err != nil {
		return 0, fmt.Errorf("put back registers of pid %d: %w", c.pid, err)
	}
	return int64(out.Rax), nil
}

// writeMem writes into the child's memory through /proc/PID/mem.
func (c *child) writeMem(addr uint64, b []byte) error {
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", c.pid), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open memory of pid %d: %w", c.pid, err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, int64(addr)); err != nil {
		return fmt.Errorf("write memory of pid %d at %#x: %w", c.pid, addr, err)
	}
	return nil
}

// readMem reads the child's memory through /proc/PID/mem.
func (c *child) readMem(addr uint64, n int) ([]byte, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", c.pid))
	if err != nil {
		return nil, fmt.Errorf("open memory of pid %d: %w", c.pid, err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, int64(addr)); err != nil {
		return nil, fmt.Errorf("read memory of pid %d at %#x: %w", c.pid, addr, err)
	}
	return b, nil
}

// mapping is one line of /proc/PID/maps.
type mapping struct {
	start, end uint64
	perms      string
	name       string
}

func readMaps(pid int) ([]mapping, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, fmt.Errorf("open maps of pid %d: %w", pid, err)
	}
	defer f.Close()
	var out []mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		m := mapping{start: s, end: e, perms: fields[1]}
		if len(fields) >= 6 {
			m.name = strings.Join(fields[5:], " ")
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read maps of pid %d: %w", pid, err)
	}
	return out, nil
}

// errnoOf turns a raw syscall return into an error (nil when >= 0).
func errnoOf(ret int64) error {
	if ret < 0 && ret > -4096 {
		return unix.Errno(-ret)
	}
	return nil
}
