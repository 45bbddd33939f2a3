package ptrace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrTracerClosed is returned by Tracer.Do after Close.
var ErrTracerClosed = errors.New("tracer closed")

// ExitedError says that a task ended while we waited for it to stop.
type ExitedError struct {
	Tid    int
	Status unix.WaitStatus
}

func (e *ExitedError) Error() string {
	if e.Status.Signaled() {
		return fmt.Sprintf("task %d was killed by signal %v", e.Tid, e.Status.Signal())
	}
	return fmt.Sprintf("task %d exited with status %d", e.Tid, e.Status.ExitStatus())
}

// retry runs f until it does not fail with EINTR.
func retry(f func() error) error {
	for {
		err := f()
		if err != unix.EINTR {
			return err
		}
	}
}

// ptraceRequestName gives error messages the request's name, "" for an
// unknown one. A switch, not a map: a map would be built at start-up in
// every crtools run.
func ptraceRequestName(req int) string {
	switch req {
	case unix.PTRACE_PEEKTEXT:
		return "PTRACE_PEEKTEXT"
	case unix.PTRACE_PEEKDATA:
		return "PTRACE_PEEKDATA"
	case unix.PTRACE_PEEKUSR:
		return "PTRACE_PEEKUSER"
	case unix.PTRACE_POKEDATA:
		return "PTRACE_POKEDATA"
	case unix.PTRACE_CONT:
		return "PTRACE_CONT"
	case unix.PTRACE_SINGLESTEP:
		return "PTRACE_SINGLESTEP"
	case unix.PTRACE_GETREGS:
		return "PTRACE_GETREGS"
	case unix.PTRACE_SETREGS:
		return "PTRACE_SETREGS"
	case unix.PTRACE_GETFPREGS:
		return "PTRACE_GETFPREGS"
	case unix.PTRACE_SETFPREGS:
		return "PTRACE_SETFPREGS"
	case unix.PTRACE_DETACH:
		return "PTRACE_DETACH"
	case unix.PTRACE_SYSCALL:
		return "PTRACE_SYSCALL"
	case unix.PTRACE_SETOPTIONS:
		return "PTRACE_SETOPTIONS"
	case unix.PTRACE_GETEVENTMSG:
		return "PTRACE_GETEVENTMSG"
	case unix.PTRACE_GETSIGINFO:
		return "PTRACE_GETSIGINFO"
	case unix.PTRACE_SETSIGINFO:
		return "PTRACE_SETSIGINFO"
	case unix.PTRACE_GETREGSET:
		return "PTRACE_GETREGSET"
	case unix.PTRACE_SETREGSET:
		return "PTRACE_SETREGSET"
	case unix.PTRACE_SEIZE:
		return "PTRACE_SEIZE"
	case unix.PTRACE_INTERRUPT:
		return "PTRACE_INTERRUPT"
	case unix.PTRACE_LISTEN:
		return "PTRACE_LISTEN"
	case unix.PTRACE_PEEKSIGINFO:
		return "PTRACE_PEEKSIGINFO"
	case unix.PTRACE_GETSIGMASK:
		return "PTRACE_GETSIGMASK"
	case unix.PTRACE_SETSIGMASK:
		return "PTRACE_SETSIGMASK"
	case unix.PTRACE_SECCOMP_GET_FILTER:
		return "PTRACE_SECCOMP_GET_FILTER"
	case unix.PTRACE_SECCOMP_GET_METADATA:
		return "PTRACE_SECCOMP_GET_METADATA"
	case unix.PTRACE_GET_SYSCALL_INFO:
		return "PTRACE_GET_SYSCALL_INFO"
	case unix.PTRACE_GET_RSEQ_CONFIGURATION:
		return "PTRACE_GET_RSEQ_CONFIGURATION"
	}
	return ""
}

// ptraceError wraps err like os.NewSyscallError, naming request and task:
// "ptrace(PTRACE_SEIZE, 123): operation not permitted". errors.Is(err,
// unix.EPERM) still holds.
func ptraceError(req, tid int, err error) error {
	if err == nil {
		return nil
	}
	name := ptraceRequestName(req)
	if name == "" {
		name = fmt.Sprintf("%#x", req)
	}
	return os.NewSyscallError(fmt.Sprintf("ptrace(%s, %d)", name, tid), err)
}

// FaultError says that a tracee stopped with a signal the kernel raised
// for a fault of its own (SIGSEGV, SIGBUS, SIGILL, SIGFPE with a positive
// si_code): resumed, it would fault again on the same instruction, for
// ever.
type FaultError struct {
	Tid  int
	Sig  int
	Code int32
	Addr uint64 // si_addr: the address that faulted
}

func (e *FaultError) Error() string {
	return fmt.Sprintf("task %d faulted: signal %v (code %d) at address %#x", e.Tid, unix.Signal(e.Sig), e.Code, e.Addr)
}

// Fault returns a *FaultError when tid, in a signal-delivery-stop for
// sig, stopped for a fault of its own (see FaultError), else nil: a
// signal sent from outside, or one whose siginfo cannot be read.
func Fault(tid, sig int) error {
	switch unix.Signal(sig) {
	case unix.SIGSEGV, unix.SIGBUS, unix.SIGILL, unix.SIGFPE:
	default:
		return nil
	}
	si, err := GetSiginfo(tid)
	if err != nil || len(si) < 24 {
		return nil
	}
	code := int32(binary.LittleEndian.Uint32(si[8:]))
	if code <= 0 { // SI_USER, SI_TKILL, SI_QUEUE...: sent
		return nil
	}
	return &FaultError{Tid: tid, Sig: sig, Code: code, Addr: binary.LittleEndian.Uint64(si[16:])}
}
