package restore

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/ptrace"
)

// An ignored SIGTRAP is installed last, with no trap after it.
//
// Every injection into a puppet ends in a trap: the int3 after the
// trampoline's syscall, the single-step trap after the munmap of the
// trampoline (unmapTrampoline). A trap forces a SIGTRAP, and the kernel
// sets the action of a forced signal that is ignored or blocked to SIG_DFL
// (force_sig_info_to_task): a SIG_IGN installed with the other actions was
// SIG_DFL again when the task ran. So restoreSigactions leaves an ignored
// SIGTRAP out, and dropTrampolineQuietly installs it with the leader's last
// two calls, driven through their syscall-stops, which force no signal.
//
// The rest needs nothing of the kind. A handler survives the traps:
// SIGTRAP is never blocked while puppets are driven (beginProc), and the
// kernel leaves the handler of an unblocked forced signal alone. The
// blocked masks, SIGTRAP's included, are set with PTRACE_SETSIGMASK after
// the last trap (setFinalState).

// sigIgn is SIG_IGN as a handler value.
const sigIgn = 1

// dropTrampolineQuietly is unmapTrampoline for a task that ignores
// SIGTRAP: rt_sigaction(SIGTRAP, sa), then munmap of the trampoline, each
// run from the trampoline's syscall instruction through its syscall-entry
// and -exit stops (PTRACE_SYSCALL). It leaves the leader where
// unmapTrampoline does, in a SIGTRAP signal-delivery-stop, with the
// kernel's signal code still ahead (restartSyscall relies on it): the
// SIGTRAP is one sent with tgkill, which the kernel queues for a traced
// task although it is ignored, and which Resume discards (PTRACE_DETACH
// with no signal).
// Preconditions: on the tracer thread; p is the leader, stopped, with no
// queued calls; every other thread is done with the trampoline.
func (p *puppet) dropTrampolineQuietly(sa kernelSigaction) error {
	a, err := p.put(sa.bytes())
	if err != nil {
		return err
	}
	if _, err := p.callSyscallStops(unix.SYS_RT_SIGACTION, uint64(unix.SIGTRAP), a, 0, 8); err != nil {
		return fmt.Errorf("set the action of SIGTRAP in task %d: %w", p.pid, err)
	}
	if _, err := p.callSyscallStops(unix.SYS_MUNMAP, p.tr.addr, p.tr.size); err != nil {
		return fmt.Errorf("unmap the trampoline of task %d: %w", p.pid, err)
	}
	// Into a SIGTRAP signal-delivery-stop before any instruction of the
	// task runs (RIP is in the unmapped trampoline): every other signal
	// is blocked (beginProc).
	if err := unix.Tgkill(p.tgid, p.pid, unix.SIGTRAP); err != nil {
		return fmt.Errorf("stop task %d after its last call: %w", p.pid, err)
	}
	if err := ptrace.Cont(p.pid, 0); err != nil {
		return err
	}
	for {
		st, err := ptrace.WaitStopped(p.pid)
		if err != nil {
			return fmt.Errorf("stop task %d after its last call: %w", p.pid, err)
		}
		if st.Event == 0 && st.Sig == int(unix.SIGTRAP) {
			p.atTrap = true
			return nil
		}
		if st.Event == 0 && (st.Sig == int(unix.SIGSEGV) || st.Sig == int(unix.SIGBUS)) {
			// It ran code of the unmapped trampoline: a bug.
			return fmt.Errorf("stop task %d after its last call: it ran on (%s)", p.pid, st)
		}
		p.log.Debug().Stringer("stop", st).Msg("stop after the last call suppressed")
		if err := ptrace.Cont(p.pid, 0); err != nil {
			return err
		}
	}
}

// callSyscallStops is call driven through the syscall-entry and -exit
// stops of the trampoline's syscall instruction instead of to the int3
// after it: no trap, so no forced SIGTRAP. The puppet is left in the
// syscall-exit-stop. Signals that stop the puppet meanwhile are
// suppressed, as waitTrap does.
func (p *puppet) callSyscallStops(nr int, args ...uint64) (uint64, error) {
	if err := p.prepare(nr, args); err != nil {
		return 0, err
	}
	p.atTrap = false
	// Puppets have PTRACE_O_TRACESYSGOOD: a syscall-stop reports
	// SIGTRAP|0x80, a signal never does.
	for stops := 0; stops < 2; {
		if err := ptrace.Syscall(p.pid, 0); err != nil {
			return 0, err
		}
		st, err := ptrace.WaitStopped(p.pid)
		if err != nil {
			return 0, fmt.Errorf("syscall %d in puppet %d: %w", nr, p.pid, err)
		}
		if st.Event == 0 && st.Sig == int(unix.SIGTRAP)|0x80 {
			stops++
			continue
		}
		p.log.Debug().Stringer("stop", st).Msg("stop during a syscall-stop call suppressed")
	}
	return p.result(nr)
}
