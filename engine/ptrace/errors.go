package ptrace

import (
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

// ptraceRequestNames gives error messages the request's name.
var ptraceRequestNames = map[int]string{
	unix.PTRACE_PEEKTEXT:               "PTRACE_PEEKTEXT",
	unix.PTRACE_PEEKDATA:               "PTRACE_PEEKDATA",
	unix.PTRACE_PEEKUSR:                "PTRACE_PEEKUSER",
	unix.PTRACE_POKEDATA:               "PTRACE_POKEDATA",
	unix.PTRACE_CONT:                   "PTRACE_CONT",
	unix.PTRACE_SINGLESTEP:             "PTRACE_SINGLESTEP",
	unix.PTRACE_GETREGS:                "PTRACE_GETREGS",
	unix.PTRACE_SETREGS:                "PTRACE_SETREGS",
	unix.PTRACE_GETFPREGS:              "PTRACE_GETFPREGS",
	unix.PTRACE_SETFPREGS:              "PTRACE_SETFPREGS",
	unix.PTRACE_DETACH:                 "PTRACE_DETACH",
	unix.PTRACE_SYSCALL:                "PTRACE_SYSCALL",
	unix.PTRACE_SETOPTIONS:             "PTRACE_SETOPTIONS",
	unix.PTRACE_GETEVENTMSG:            "PTRACE_GETEVENTMSG",
	unix.PTRACE_GETSIGINFO:             "PTRACE_GETSIGINFO",
	unix.PTRACE_SETSIGINFO:             "PTRACE_SETSIGINFO",
	unix.PTRACE_GETREGSET:              "PTRACE_GETREGSET",
	unix.PTRACE_SETREGSET:              "PTRACE_SETREGSET",
	unix.PTRACE_SEIZE:                  "PTRACE_SEIZE",
	unix.PTRACE_INTERRUPT:              "PTRACE_INTERRUPT",
	unix.PTRACE_LISTEN:                 "PTRACE_LISTEN",
	unix.PTRACE_PEEKSIGINFO:            "PTRACE_PEEKSIGINFO",
	unix.PTRACE_GETSIGMASK:             "PTRACE_GETSIGMASK",
	unix.PTRACE_SETSIGMASK:             "PTRACE_SETSIGMASK",
	unix.PTRACE_SECCOMP_GET_FILTER:     "PTRACE_SECCOMP_GET_FILTER",
	unix.PTRACE_GET_SYSCALL_INFO:       "PTRACE_GET_SYSCALL_INFO",
	unix.PTRACE_GET_RSEQ_CONFIGURATION: "PTRACE_GET_RSEQ_CONFIGURATION",
}

// ptraceError wraps err like os.NewSyscallError, naming request and task:
// "ptrace(PTRACE_SEIZE, 123): operation not permitted". errors.Is(err,
// unix.EPERM) still holds.
func ptraceError(req, tid int, err error) error {
	if err == nil {
		return nil
	}
	name, ok := ptraceRequestNames[req]
	if !ok {
		name = fmt.Sprintf("%#x", req)
	}
	return os.NewSyscallError(fmt.Sprintf("ptrace(%s, %d)", name, tid), err)
}
