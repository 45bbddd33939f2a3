package ptrace

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Regs are the general registers of an x86-64 task (user_regs_struct).
type Regs = unix.PtraceRegs

// Preconditions for every function of this file: the caller is on the
// tracer thread that traces tid (inside Tracer.Do), and, except for Seize,
// Interrupt and the wait functions, tid is in a ptrace-stop.

func ptraceScalar(req, tid int, addr, data uintptr) error {
	err := retry(func() error {
		_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), addr, data, 0, 0)
		if e != 0 {
			return e
		}
		return nil
	})
	return ptraceError(req, tid, err)
}

// Seize attaches to tid with PTRACE_SEIZE and the given PTRACE_O_* options,
// without stopping it.
func Seize(tid int, options int) error {
	return ptraceScalar(unix.PTRACE_SEIZE, tid, 0, uintptr(options))
}

// Interrupt asks a seized task to stop (PTRACE_INTERRUPT). The stop is
// reported by wait as PTRACE_EVENT_STOP.
func Interrupt(tid int) error {
	return ptraceScalar(unix.PTRACE_INTERRUPT, tid, 0, 0)
}

// Cont resumes tid, delivering sig (0: none).
func Cont(tid int, sig int) error {
	return ptraceScalar(unix.PTRACE_CONT, tid, 0, uintptr(sig))
}

// Syscall resumes tid until its next syscall-entry or -exit stop, delivering
// sig (0: none).
func Syscall(tid int, sig int) error {
	return ptraceScalar(unix.PTRACE_SYSCALL, tid, 0, uintptr(sig))
}

// SingleStep resumes tid for one instruction (PTRACE_SINGLESTEP), delivering
// sig (0: none).
func SingleStep(tid int, sig int) error {
	return ptraceScalar(unix.PTRACE_SINGLESTEP, tid, 0, uintptr(sig))
}

// Listen lets a task in group-stop stay stopped while the tracer can still
// be told of events (PTRACE_LISTEN).
func Listen(tid int) error {
	return ptraceScalar(unix.PTRACE_LISTEN, tid, 0, 0)
}

// Detach lets tid go, delivering sig (0: none).
func Detach(tid int, sig int) error {
	return ptraceScalar(unix.PTRACE_DETACH, tid, 0, uintptr(sig))
}

// SetOptions sets the PTRACE_O_* options of tid.
func SetOptions(tid int, options int) error {
	return ptraceScalar(unix.PTRACE_SETOPTIONS, tid, 0, uintptr(options))
}

// GetEventMsg returns the message of the last ptrace event (the new tid of
// a PTRACE_EVENT_CLONE, the exit status of PTRACE_EVENT_EXIT, ...).
func GetEventMsg(tid int) (uint, error) {
	var msg uint
	err := retry(func() (err error) {
		msg, err = unix.PtraceGetEventMsg(tid)
		return err
	})
	return msg, ptraceError(unix.PTRACE_GETEVENTMSG, tid, err)
}

// GetRegs reads the general registers of tid.
func GetRegs(tid int) (Regs, error) {
	var r Regs
	err := retry(func() error { return unix.PtraceGetRegs(tid, &r) })
	return r, ptraceError(unix.PTRACE_GETREGS, tid, err)
}

// SetRegs writes the general registers of tid.
func SetRegs(tid int, r *Regs) error {
	err := retry(func() error { return unix.PtraceSetRegs(tid, r) })
	return ptraceError(unix.PTRACE_SETREGS, tid, err)
}

// PeekData reads len(out) bytes of tid's memory at addr with PTRACE_PEEKDATA
// (a word at a time; ReadMem is faster for more than a few words).
func PeekData(tid int, addr uintptr, out []byte) (int, error) {
	var n int
	err := retry(func() (err error) {
		n, err = unix.PtracePeekData(tid, addr, out)
		return err
	})
	return n, ptraceError(unix.PTRACE_PEEKDATA, tid, err)
}

// PokeData writes data into tid's memory at addr with PTRACE_POKEDATA; like
// /proc/PID/mem it ignores page protections.
func PokeData(tid int, addr uintptr, data []byte) (int, error) {
	var n int
	err := retry(func() (err error) {
		n, err = unix.PtracePokeData(tid, addr, data)
		return err
	})
	return n, ptraceError(unix.PTRACE_POKEDATA, tid, err)
}

// PeekUser reads the word at offset off of tid's struct user (e.g. the debug
// registers).
func PeekUser(tid int, off uintptr) (uint64, error) {
	var b [8]byte
	err := retry(func() error {
		_, err := unix.PtracePeekUser(tid, off, b[:])
		return err
	})
	if err != nil {
		return 0, ptraceError(unix.PTRACE_PEEKUSR, tid, err)
	}
	return le64(b[:]), nil
}

// Wait waits for a state change of tid (wait4 with __WALL, so threads and
// clone children are seen), retrying EINTR.
func Wait(tid int) (unix.WaitStatus, error) {
	var ws unix.WaitStatus
	err := retry(func() error {
		_, err := unix.Wait4(tid, &ws, unix.WALL, nil)
		return err
	})
	if err != nil {
		return 0, os.NewSyscallError(fmt.Sprintf("wait4(%d)", tid), err)
	}
	return ws, nil
}

// StopInfo describes a ptrace-stop.
type StopInfo struct {
	// Sig is the stop signal: the signal of a signal-delivery-stop, SIGTRAP
	// (or SIGTRAP|0x80 with PTRACE_O_TRACESYSGOOD) for event and syscall
	// stops, the stopping signal of a group-stop.
	Sig int
	// Event is the PTRACE_EVENT_* of an event stop (status>>16), 0 otherwise.
	Event int
	// Status is the raw wait status.
	Status unix.WaitStatus
}

// GroupStop tells whether the stop is a group-stop of a seized task (the
// task was stopped by SIGSTOP/SIGTSTP/... and stays stopped unless resumed).
func (s StopInfo) GroupStop() bool {
	if s.Event != unix.PTRACE_EVENT_STOP {
		return false
	}
	switch unix.Signal(s.Sig) {
	case unix.SIGSTOP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU:
		return true
	}
	return false
}

// SignalDelivery tells whether the stop is a signal-delivery-stop: the task
// is about to receive Sig; the signal is delivered only if the tracer passes
// it on when resuming.
func (s StopInfo) SignalDelivery() bool {
	return s.Event == 0 && s.Sig&0x80 == 0
}

func (s StopInfo) String() string {
	if s.Event != 0 {
		return fmt.Sprintf("event %d stop (signal %d)", s.Event, s.Sig)
	}
	return fmt.Sprintf("stop by signal %d", s.Sig)
}

// WaitStopped waits until tid is in a ptrace-stop and describes it. A task
// that exits or is killed instead yields an *ExitedError.
func WaitStopped(tid int) (StopInfo, error) {
	ws, err := Wait(tid)
	if err != nil {
		return StopInfo{}, err
	}
	return describeStop(tid, ws)
}

// describeStop is WaitStopped's reading of a wait status of tid.
func describeStop(tid int, ws unix.WaitStatus) (StopInfo, error) {
	if ws.Exited() || ws.Signaled() {
		return StopInfo{Status: ws}, &ExitedError{Tid: tid, Status: ws}
	}
	if !ws.Stopped() {
		return StopInfo{Status: ws}, fmt.Errorf("wait for stop of task %d: unexpected wait status %#x", tid, uint32(ws))
	}
	// Not ws.TrapCause(): it reports -1 unless the stop signal is SIGTRAP,
	// while a group-stop of a seized task is PTRACE_EVENT_STOP with SIGSTOP
	// (or SIGTSTP, ...).
	return StopInfo{Sig: int(ws>>8) & 0xff, Event: int(ws>>16) & 0xff, Status: ws}, nil
}

// InterruptAndWait brings a seized, running task into a PTRACE_EVENT_STOP
// (or the group-stop it is in). Signals that arrive meanwhile are delivered
// as they would have been without us (the task may run a handler before it
// stops, or die of a fatal signal: then an *ExitedError is returned).
func InterruptAndWait(tid int) (StopInfo, error) {
	if err := Interrupt(tid); err != nil {
		return StopInfo{}, err
	}
	return WaitInterrupted(tid)
}

// WaitInterrupted is the second half of InterruptAndWait, for a tracer
// that interrupts many tasks before it waits for the first (they then
// stop at the same time).
func WaitInterrupted(tid int) (StopInfo, error) {
	for {
		st, err := WaitStopped(tid)
		if done, err := interruptedOr(tid, st, err); done {
			return st, err
		}
	}
}

// interruptedOr tells whether a wait for tid's interrupt stop that gave st
// and err is over (with err), or resumes tid past a stop that came first:
// a signal-delivery-stop (or another event); the interrupt stays pending,
// so tid is resumed with the signal and waited for again.
func interruptedOr(tid int, st StopInfo, err error) (bool, error) {
	if err != nil {
		return true, err
	}
	if st.Event == unix.PTRACE_EVENT_STOP {
		return true, nil
	}
	sig := 0
	if st.SignalDelivery() {
		sig = st.Sig
	}
	if err := Cont(tid, sig); err != nil {
		return true, err
	}
	return false, nil
}

// WaitInterruptedOr is WaitInterrupted for a stop that may never come: the
// leader of a multi-threaded process that entered do_exit (pthread_exit)
// after it was seized never stops, and the kernel reports its exit only
// once every other thread has gone, which the tracer keeps stopped. After
// every look that finds no state change it calls giveUp, and returns its
// error if it gives one; the looks are 20 us apart at first, then further
// and further (at most 2 ms). In the usual case the stop is there at the first
// look: one wait4 with WNOHANG, as WaitInterrupted would make without it.
func WaitInterruptedOr(tid int, giveUp func() error) (StopInfo, error) {
	pause := 20 * time.Microsecond
	for {
		var ws unix.WaitStatus
		var got int
		err := retry(func() error {
			var err error
			got, err = unix.Wait4(tid, &ws, unix.WALL|unix.WNOHANG, nil)
			return err
		})
		if err != nil {
			return StopInfo{}, os.NewSyscallError(fmt.Sprintf("wait4(%d)", tid), err)
		}
		if got == 0 {
			if err := giveUp(); err != nil {
				return StopInfo{}, err
			}
			time.Sleep(pause)
			pause = min(2*pause, 2*time.Millisecond)
			continue
		}
		st, err := describeStop(tid, ws)
		if done, err := interruptedOr(tid, st, err); done {
			return st, err
		}
	}
}

func le64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}
