package ptrace

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// ExecArg is one argument of ExecSyscall: a number passed as is, or (Str
// set) a string copied into the task, NUL-terminated, whose address is
// passed.
type ExecArg struct {
	Num uintptr
	Str *string
}

// ExecResult is the outcome of ExecSyscall.
type ExecResult struct {
	// Ret is the raw return value (rax).
	Ret uintptr
	// Errno is set when Ret is in [-4095, -1].
	Errno unix.Errno
	// Signals lists signals that arrived during the injection and were
	// passed on at detach (only the first can be; the others are named here
	// so the caller can say so).
	Signals []int
}

// TaskError says why a task cannot be the target of crtools exec (or of a
// dump): it does not exist, is crtools, is a kernel thread, is already
// traced. Callers print it as it is.
type TaskError struct {
	Pid    int
	Reason string
	Err    error
}

func (e *TaskError) Error() string { return fmt.Sprintf("pid %d %s", e.Pid, e.Reason) }
func (e *TaskError) Unwrap() error { return e.Err }

// pfKthread is PF_KTHREAD in the flags field of /proc/PID/stat.
const pfKthread = 0x00200000

// CheckTarget verifies that pid names a task that crtools may trace: it
// exists and is not a zombie, is not crtools itself (nor one of its
// threads), and is not a kernel thread. Whether it is already traced is
// known only when seizing it (see SeizeError).
func CheckTarget(pid int) error {
	self := os.Getpid()
	if pid == self {
		return &TaskError{Pid: pid, Reason: "is crtools itself"}
	}
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return &TaskError{Pid: pid, Reason: "does not exist", Err: err}
		}
		return &TaskError{Pid: pid, Reason: "cannot be inspected: " + err.Error(), Err: err}
	}
	if tgid := statusField(status, "Tgid"); tgid == strconv.Itoa(self) {
		return &TaskError{Pid: pid, Reason: "is a thread of crtools itself"}
	}
	if strings.HasPrefix(statusField(status, "State"), "Z") {
		return &TaskError{Pid: pid, Reason: "is a zombie (it has exited)"}
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return &TaskError{Pid: pid, Reason: "does not exist", Err: err}
	}
	// Fields after the comm, which ends at the last ')': state ppid pgrp
	// session tty_nr tpgid flags ...
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return &TaskError{Pid: pid, Reason: "has an unreadable /proc/PID/stat"}
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 7 {
		return &TaskError{Pid: pid, Reason: "has an unreadable /proc/PID/stat"}
	}
	flags, err := strconv.ParseUint(f[6], 10, 64)
	if err != nil {
		return &TaskError{Pid: pid, Reason: "has an unreadable /proc/PID/stat"}
	}
	if flags&pfKthread != 0 {
		return &TaskError{Pid: pid, Reason: "is a kernel thread"}
	}
	return nil
}

func statusField(status []byte, key string) string {
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// SeizeError turns a failed Seize of pid into a TaskError that says why:
// gone, already traced (naming the tracer), or not permitted.
func SeizeError(pid int, err error) error {
	switch {
	case errors.Is(err, unix.ESRCH):
		return &TaskError{Pid: pid, Reason: "does not exist", Err: err}
	case errors.Is(err, unix.EPERM):
		status, rerr := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if rerr == nil {
			if tp := statusField(status, "TracerPid"); tp != "" && tp != "0" {
				return &TaskError{Pid: pid, Err: err,
					Reason: fmt.Sprintf("is already traced by pid %s (TracerPid in /proc/%d/status); detach that tracer first", tp, pid)}
			}
		}
		return &TaskError{Pid: pid, Err: err, Reason: "cannot be traced: " + err.Error() + " (check ptrace_scope, seccomp and capabilities)"}
	}
	return &TaskError{Pid: pid, Err: err, Reason: "cannot be traced: " + err.Error()}
}

// ExecSyscall runs syscall nr with args in the task pid, as `crtools exec`
// does: seize it, stop it, inject the call (copying string arguments into a
// scratch mapping that is removed again), put its registers and signal mask
// back and let it go. A task stopped by job control stays stopped; a task
// in a blocking syscall restarts it. On an error before the syscall ran,
// the task is left as it was.
func ExecSyscall(log zerolog.Logger, tr *Tracer, pid int, nr int, args []ExecArg) (ExecResult, error) {
	var res ExecResult
	if len(args) > 6 {
		return res, fmt.Errorf("run %s in pid %d: %d arguments, at most 6", syscallLabel(uintptr(nr)), pid, len(args))
	}
	if err := CheckTarget(pid); err != nil {
		return res, err
	}
	log = log.With().Int("pid", pid).Str("syscall", syscallLabel(uintptr(nr))).Logger()
	err := tr.Do(func() error {
		// No PTRACE_O_EXITKILL: were crtools killed right after seizing,
		// the task should run on rather than die for a syscall it was
		// only asked to run.
		if err := Seize(pid, 0); err != nil {
			return SeizeError(pid, err)
		}
		st, err := InterruptAndWait(pid)
		if err != nil {
			var ee *ExitedError
			if errors.As(err, &ee) {
				return &TaskError{Pid: pid, Reason: "exited while being stopped", Err: err}
			}
			_ = Detach(pid, 0)
			return fmt.Errorf("stop pid %d: %w", pid, err)
		}
		log.Debug().Stringer("stop", st).Msg("task stopped")
		res, err = execStopped(log, pid, nr, args)
		if err != nil {
			var ee *ExitedError
			if errors.As(err, &ee) {
				return err
			}
		}
		// Let it go; a signal that arrived meanwhile is passed on, and a
		// task stopped by job control stops again.
		sig := 0
		if len(res.Signals) > 0 {
			sig = res.Signals[0]
		} else if st.GroupStop() {
			sig = st.Sig
		}
		if derr := Detach(pid, sig); derr != nil && err == nil {
			err = fmt.Errorf("detach from pid %d: %w", pid, derr)
		}
		return err
	})
	if len(res.Signals) > 1 {
		log.Warn().Ints("signals", res.Signals[1:]).Msg("more than one signal arrived during the injection; only the first was passed on")
	}
	return res, err
}

// execStopped injects into the stopped pid and puts everything back.
func execStopped(log zerolog.Logger, pid int, nr int, args []ExecArg) (res ExecResult, err error) {
	in, err := NewInjector(pid)
	if err != nil {
		return res, err
	}
	if err := in.Begin(); err != nil {
		return res, err
	}
	defer func() {
		res.Signals = in.Deferred
	}()
	scratch := 0
	for _, a := range args {
		if a.Str != nil {
			scratch += len(*a.Str) + 1 + 16
		}
	}
	var cleanup func() error
	if scratch > 0 {
		cleanup, err = in.WithScratch(scratch)
		if err != nil {
			return res, errors.Join(err, in.End())
		}
		log.Debug().Str("addr", fmt.Sprintf("%#x", in.Scratch)).Int("size", in.ScratchSize).Msg("scratch mapped")
	}
	var raw [6]uintptr
	for i, a := range args {
		raw[i] = a.Num
		if a.Str != nil {
			addr, err := in.PutBytes(append([]byte(*a.Str), 0))
			if err != nil {
				return res, errors.Join(err, cleanupOrNil(cleanup), in.End())
			}
			raw[i] = addr
		}
	}
	ret, serr := in.Syscall(uintptr(nr), raw[:len(args)]...)
	var ee *ExitedError
	if errors.As(serr, &ee) {
		return res, fmt.Errorf("run %s in pid %d: the task ended: %w", syscallLabel(uintptr(nr)), pid, ee)
	}
	var errno unix.Errno
	if serr != nil && !errors.As(serr, &errno) {
		return res, errors.Join(serr, cleanupOrNil(cleanup), in.End())
	}
	res.Ret, res.Errno = ret, errno
	log.Debug().Uint64("ret", uint64(ret)).Msg("syscall done")
	if err := cleanupOrNil(cleanup); err != nil {
		return res, errors.Join(err, in.End())
	}
	return res, in.End()
}

func cleanupOrNil(f func() error) error {
	if f == nil {
		return nil
	}
	return f()
}
