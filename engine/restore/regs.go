package restore

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/cpu"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/ptrace"
)

// Kernel-internal errnos a task stopped inside a syscall has in RAX.
const (
	errRestartSys          = 512
	errRestartNoIntr       = 513
	errRestartNoHand       = 514
	errRestartRestartBlock = 516
)

// dropTrampoline unmaps the trampoline of a process with its last injected
// syscall. endProc calls it as its last step, right after the task's
// last batch: switching to a task whose memory the CPU has not worked on
// for a while costs some 100 µs more under this machine's hypervisor
// (shadow page tables) than going back to the one just run, so the
// munmap is done while the task is still warm rather than in Resume,
// after every other task ran. From then on only registers are set
// (finishProc). The threads stay stopped, each in a signal-delivery-stop
// for SIGTRAP (the int3 of the trampoline, or the single-step trap after
// the leader's munmap): the kernel's signal code is still ahead of them
// when Resume detaches them, which restartSyscall relies on.
// Preconditions: on the tracer thread; the task's state is restored.
func (r *restorer) dropTrampoline(pr *proc) error {
	if pr.t.leaderExited() {
		// Its leader exits first (exitLeader), which waits for
		// finishProc: until every task's state is restored, its
		// children may still take files from it through its leader.
		return nil
	}
	return r.unmapTrampolineOf(pr)
}

// unmapTrampolineOf is dropTrampoline's work (and finishProc's, for a
// process whose main thread had exited).
func (r *restorer) unmapTrampolineOf(pr *proc) error {
	lead := pr.threads[0]
	// Other threads first: each must be done with the trampoline before
	// the leader unmaps it.
	for _, th := range pr.threads[1:] {
		core := pr.t.cores[th.vpid]
		if inRestartableSyscall(core.GetThreadInfo().GetGpregs()) && !th.atTrap {
			// Make sure the thread sits at the int3 (its last stop
			// could have been another kind: the SIGSTOP of its
			// creation, when nothing was injected since).
			if _, err := th.callf("stop at the trampoline", unix.SYS_GETPID); err != nil {
				return err
			}
		}
	}
	if pr.t.leaderExited() {
		// Every thread exists: the leader leaves again, and another
		// thread unmaps the trampoline.
		if err := lead.exitLeader(r.puppetOptions()); err != nil {
			return err
		}
		lead = pr.threads[1]
	}
	if pr.sigtrapIgn != nil {
		// An ignored SIGTRAP goes in last, with no trap after it
		// (sigtrap.go).
		if err := lead.dropTrampolineQuietly(*pr.sigtrapIgn); err != nil {
			return err
		}
	} else if err := lead.unmapTrampoline(); err != nil {
		return err
	}
	pr.noTrampoline = true
	return nil
}

// finishProc sets every thread's dumped registers, FPU/xstate and blocked
// mask (dropTrampoline ran).
// Preconditions: on the tracer thread; endProc succeeded.
func (r *restorer) finishProc(pr *proc) error {
	if pr.t.leaderExited() && !pr.noTrampoline {
		if err := r.unmapTrampolineOf(pr); err != nil {
			return err
		}
	}
	if !pr.noTrampoline {
		return fmt.Errorf("finish task %d: its trampoline is still mapped", pr.t.pid)
	}
	initial := initialSched(r.initial)
	for _, th := range liveThreads(pr) {
		core := pr.t.cores[th.vpid]
		if err := th.setFinalState(core); err != nil {
			return err
		}
		if err := restoreSched(th.pid, core.GetThreadCore(), initial); err != nil {
			return err
		}
	}
	return nil
}

// liveThreads are the threads of pr that run on after the restore: all,
// but for the leader of a process whose main thread had exited
// (exitLeader let it go).
func liveThreads(pr *proc) []*puppet {
	if pr.t.leaderExited() && len(pr.threads) > 1 {
		return pr.threads[1:]
	}
	return pr.threads
}

// exitLeader makes the leader of a process whose main thread had exited
// (taskImage.leaderExited) exit again, as pthread_exit in main did: an
// injected exit(0) (SYS_exit, the thread only, as glibc's pthread_exit).
// The leader then stays a zombie until the last thread exits, and its
// parent is told then, with the last thread's exit_group or exit code, as
// before the dump. finishProc runs it, once every task's state is restored
// (a child takes inherited files from its parent through the leader). It
// runs after every other thread exists (the group would end with it
// otherwise) and while the trampoline, whose syscall instruction it runs,
// is mapped. PTRACE_O_TRACEEXIT stops it inside do_exit (its user code
// done: the trampoline may go), and the detach from that stop lets it
// finish untraced, so that neither crtools nor the puppets' EXITKILL have
// any hold on it.
// options are the puppets' ptrace options.
// Preconditions: on the tracer thread; p is the leader, its state restored.
func (p *puppet) exitLeader(options int) error {
	if err := ptrace.SetOptions(p.pid, options|unix.PTRACE_O_TRACEEXIT); err != nil {
		return fmt.Errorf("exit the main thread of task %d again: %w", p.pid, err)
	}
	if err := p.prepare(unix.SYS_EXIT, []uint64{0}); err != nil {
		return fmt.Errorf("exit the main thread of task %d again: %w", p.pid, err)
	}
	if err := ptrace.Cont(p.pid, 0); err != nil {
		return fmt.Errorf("exit the main thread of task %d again: %w", p.pid, err)
	}
	for {
		st, err := ptrace.WaitStopped(p.pid)
		if err != nil {
			return fmt.Errorf("exit the main thread of task %d again: %w", p.pid, err)
		}
		if st.Event == unix.PTRACE_EVENT_EXIT {
			break
		}
		// Any other stop (a signal: all are blocked but the fatal
		// ones) is passed over; a fatal one ends the group anyway.
		p.log.Debug().Stringer("stop", st).Msg("stop while exiting the main thread suppressed")
		if err := ptrace.Cont(p.pid, 0); err != nil {
			return fmt.Errorf("exit the main thread of task %d again: %w", p.pid, err)
		}
	}
	if err := ptrace.Detach(p.pid, 0); err != nil {
		return fmt.Errorf("let the main thread of task %d exit: %w", p.pid, err)
	}
	return nil
}

func initialSched(st *initialState) *unix.SchedAttr {
	if st == nil {
		return nil
	}
	return st.sched
}

// restoreSched sets a thread's dumped scheduling policy, reset-on-fork
// flag, real-time priority and nice value, from outside (no stop of the
// thread). It runs in finishProc, after the last injected call and before
// the detach: nothing the restore does later changes them (unpin only sets
// the CPU mask), and the thread runs its own code with them from its first
// instruction. Skipped when the thread already has them (initial: the
// puppet's, nil when unknown).
func restoreSched(tid int, tc *pb.ThreadCoreEntry, initial *unix.SchedAttr) error {
	if tc.SchedPolicy == nil {
		return nil
	}
	// The image's policy is what sched_getscheduler returns: reset-on-fork
	// is a bit of it there, a flag of its own for sched_setattr (which
	// refuses the policy with the bit).
	policy, nice, prio := tc.GetSchedPolicy(), tc.GetSchedNice(), tc.GetSchedPrio()
	var flags uint64
	if policy&unix.SCHED_RESET_ON_FORK != 0 {
		policy &^= unix.SCHED_RESET_ON_FORK
		flags = unix.SCHED_FLAG_RESET_ON_FORK
	}
	if initial != nil && initial.Flags&unix.SCHED_FLAG_RESET_ON_FORK == flags &&
		policy == initial.Policy && nice == initial.Nice && prio == initial.Priority {
		return nil
	}
	// SCHED_DEADLINE never gets here: load refuses it (readCore).
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: policy, Flags: flags, Nice: nice, Priority: prio}
	if err := unix.SchedSetAttr(tid, &attr, 0); err != nil {
		return fmt.Errorf("restore scheduling policy %d (priority %d, nice %d, reset-on-fork %v) of thread %d: %w", policy, prio, nice, flags != 0, tid, err)
	}
	if policy != unix.SCHED_NORMAL && policy != unix.SCHED_BATCH {
		// sched_setattr sets the nice value of SCHED_NORMAL and
		// SCHED_BATCH only; an idle or real-time thread keeps its own
		// (for when it leaves the policy), set by setpriority.
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, int(nice)); err != nil {
			return fmt.Errorf("restore nice %d of thread %d: %w", nice, tid, err)
		}
	}
	return nil
}

// unmapTrampoline runs munmap(trampoline) from the trampoline itself with
// PTRACE_SINGLESTEP: the int3 after the syscall is gone with the page, and
// the single-step trap raised as the syscall returns stops the task in a
// signal-delivery-stop (SIGTRAP) before it runs any instruction.
func (p *puppet) unmapTrampoline() error {
	if err := p.prepare(unix.SYS_MUNMAP, []uint64{p.tr.addr, p.tr.size}); err != nil {
		return err
	}
	if err := ptrace.SingleStep(p.pid, 0); err != nil {
		return err
	}
	for {
		st, err := ptrace.WaitStopped(p.pid)
		if err != nil {
			return fmt.Errorf("unmap the trampoline of task %d: %w", p.pid, err)
		}
		if st.Event == 0 && st.Sig == int(unix.SIGTRAP) {
			break
		}
		// A signal while all are blocked can only be a fatal one
		// sent from outside; anything else is dropped.
		p.log.Debug().Stringer("stop", st).Msg("stop while unmapping the trampoline suppressed")
		if err := ptrace.SingleStep(p.pid, 0); err != nil {
			return err
		}
	}
	if _, err := p.result(unix.SYS_MUNMAP); err != nil {
		return fmt.Errorf("unmap the trampoline of task %d: %w", p.pid, err)
	}
	return nil
}

// setFinalState sets the dumped registers, xstate and blocked mask.
func (p *puppet) setFinalState(core *pb.CoreEntry) error {
	ti := core.GetThreadInfo()
	regs := regsFromImage(ti.GetGpregs(), p.regs)
	restartSyscall(&regs)
	// Every puppet has the same xstate, the clean one of the exec the
	// first puppet started with (puppets run no FPU instruction, and
	// clone copies it): read once, it is the base of every thread's.
	if p.tr.xstate == nil {
		xs, err := ptrace.GetXState(p.pid)
		if err != nil {
			return err
		}
		p.tr.xstate = xs
	}
	// One buffer for every thread of the lane: SETREGSET copies it, and
	// a fresh 2.4 KiB (AVX-512) buffer per thread was fresh heap pages,
	// whose first-touch faults cost more here than the copy itself.
	xs := append(p.tr.xsBuf[:0], p.tr.xstate...)
	p.tr.xsBuf = xs
	if err := patchXState(xs, ti.GetFpregs()); err != nil {
		return fmt.Errorf("build FPU state of task %d: %w", p.pid, err)
	}
	if err := ptrace.SetXState(p.pid, xs); err != nil {
		return fmt.Errorf("set FPU state of task %d: %w", p.pid, err)
	}
	if err := ptrace.SetRegs(p.pid, &regs); err != nil {
		return fmt.Errorf("set registers of task %d: %w", p.pid, err)
	}
	mask := core.GetThreadCore().GetBlkSigset()
	if core.GetThreadCore().BlkSigset == nil {
		mask = core.GetTc().GetBlkSigset()
	}
	if err := ptrace.SetSigmask(p.pid, mask); err != nil {
		return fmt.Errorf("set blocked signals of task %d: %w", p.pid, err)
	}
	return nil
}

// regsFromImage converts the dumped general registers. Segment selectors
// the image lacks keep the puppet's values.
func regsFromImage(g *pb.UserX86RegsEntry, tmpl ptrace.Regs) ptrace.Regs {
	r := tmpl
	r.R15, r.R14, r.R13, r.R12 = g.GetR15(), g.GetR14(), g.GetR13(), g.GetR12()
	r.Rbp, r.Rbx, r.R11, r.R10 = g.GetBp(), g.GetBx(), g.GetR11(), g.GetR10()
	r.R9, r.R8, r.Rax, r.Rcx = g.GetR9(), g.GetR8(), g.GetAx(), g.GetCx()
	r.Rdx, r.Rsi, r.Rdi = g.GetDx(), g.GetSi(), g.GetDi()
	r.Orig_rax, r.Rip, r.Eflags, r.Rsp = g.GetOrigAx(), g.GetIp(), g.GetFlags(), g.GetSp()
	r.Fs_base, r.Gs_base = g.GetFsBase(), g.GetGsBase()
	if g.GetCs() != 0 {
		r.Cs = g.GetCs()
	}
	if g.GetSs() != 0 {
		r.Ss = g.GetSs()
	}
	r.Ds, r.Es, r.Fs, r.Gs = g.GetDs(), g.GetEs(), g.GetFs(), g.GetGs()
	return r
}

// inRestartableSyscall tells whether the thread was dumped inside a
// syscall that the kernel was going to finish on its way back to user
// space: orig_rax holds the syscall number and RAX a kernel-internal
// -ERESTART*.
func inRestartableSyscall(g *pb.UserX86RegsEntry) bool {
	if int64(g.GetOrigAx()) < 0 {
		return false
	}
	switch -int64(g.GetAx()) {
	case errRestartSys, errRestartNoIntr, errRestartNoHand, errRestartRestartBlock:
		return true
	}
	return false
}

// restartSyscall prepares the registers of a thread dumped inside a
// syscall (RAX holds a kernel-internal -ERESTART*, orig_rax the syscall
// number). The thread is let go from a signal-delivery-stop (finishProc),
// so the kernel's signal code runs before it returns to user space and
// finishes the syscall as it would have for the dumped task: a signal with
// a handler (pending in the images, or sent right after the restore) makes
// it return -EINTR (-ERESTARTSYS with SA_RESTART: re-issued after the
// handler), otherwise the kernel re-issues it. Re-issuing it here instead
// (RIP back on the syscall instruction) loses such a signal: its handler
// runs first and the syscall is entered again afterwards, so a pause()
// woken by that very signal sleeps on.
//
// -ERESTART_RESTARTBLOCK needs the kernel's restart block, which the new
// task does not have, so the kernel cannot restart it with restart_syscall.
// It is handed to the kernel as -ERESTARTNOHAND (same rule: -EINTR when a
// handler runs), with arguments for re-issuing it:
//   - nanosleep and relative clock_nanosleep: the kernel wrote the
//     remaining time to *rem when the sleep was interrupted, so the sleep
//     is re-issued for that remaining time (the time the task spent
//     checkpointed does not count, as with a stopped task); without a rem
//     pointer the full request is slept again (late, never early);
//   - absolute clock_nanosleep: re-issued as is, it ends at its deadline;
//   - other syscalls (poll, futex with timeout, ...): re-issued with their
//     arguments, so a timeout starts again in full: late, never early;
//   - restart_syscall itself (the task was already in a restarted syscall
//     whose original is unknown): -EINTR, which callers of sleeping
//     syscalls handle.
//
// Anything else gets orig_rax -1 so that the kernel applies no restart
// logic at all.
func restartSyscall(r *ptrace.Regs) {
	nr := int64(r.Orig_rax)
	if nr < 0 {
		r.Orig_rax = ^uint64(0)
		return
	}
	switch -int64(r.Rax) {
	case errRestartSys, errRestartNoIntr, errRestartNoHand:
		// The kernel finishes it.
	case errRestartRestartBlock:
		switch nr {
		case unix.SYS_RESTART_SYSCALL:
			r.Orig_rax = ^uint64(0)
			r.Rax = ^uint64(unix.EINTR) + 1 // -EINTR
			return
		case unix.SYS_NANOSLEEP:
			if r.Rsi != 0 {
				r.Rdi = r.Rsi // req = the remaining time in *rem
			}
		case unix.SYS_CLOCK_NANOSLEEP:
			if r.Rsi&unix.TIMER_ABSTIME == 0 && r.R10 != 0 {
				r.Rdx = r.R10
			}
		}
		r.Rax = ^uint64(errRestartNoHand) + 1 // -ERESTARTNOHAND
	default:
		r.Orig_rax = ^uint64(0)
	}
}

// The legacy area and header of an xstate buffer are at fixed places; the
// other components' offsets come from CPUID (engine/cpu), since they differ
// between CPUs (Intel leaves room for MPX, AMD does not).
const (
	xsaveFPUSize      = 512
	xsaveHeaderOff    = 512
	xfeatureMaskFPSSE = 0x3
	// xstateFxSwOff is where PTRACE_GETREGSET puts the user xfeatures
	// (XCR0) in the legacy area's software-reserved bytes
	// (xstate_fx_sw_bytes[USER_XSTATE_XCR0_WORD]).
	xstateFxSwOff = 464
)

// patchXState writes the dumped FPU/SSE/AVX state into xs, an xstate
// buffer read from the puppet itself: that gives the layout and size the
// running CPU and kernel expect, and components the image lacks keep the
// puppet's clean initial state.
func patchXState(xs []byte, fp *pb.UserX86FpregsEntry) error {
	if fp == nil {
		return nil
	}
	if len(xs) < xsaveFPUSize {
		return fmt.Errorf("xstate buffer of %d bytes", len(xs))
	}
	put16 := func(off int, v uint32) { le.PutUint16(xs[off:], uint16(v)) }
	put16(0, fp.GetCwd())
	put16(2, fp.GetSwd())
	put16(4, fp.GetTwd())
	put16(6, fp.GetFop())
	le.PutUint64(xs[8:], fp.GetRip())
	le.PutUint64(xs[16:], fp.GetRdp())
	le.PutUint32(xs[24:], fp.GetMxcsr())
	le.PutUint32(xs[28:], fp.GetMxcsrMask())
	putU32s(xs[32:160], fp.GetStSpace())
	putU32s(xs[160:416], fp.GetXmmSpace())
	if len(xs) < xsaveHeaderOff+64 {
		return nil // the kernel gave only the legacy area
	}
	supported := le.Uint64(xs[xstateFxSwOff:]) | xfeatureMaskFPSSE
	xsave := fp.GetXsave()
	bv := uint64(xfeatureMaskFPSSE)
	if xsave != nil {
		bv |= xsave.GetXstateBv()
		// Each component's words straight into xs (no temporary
		// buffers: this runs for every thread), at most its size.
		area := func(bit int) []byte {
			if c, ok := cpu.XStateComponent(bit); ok && c.Offset < len(xs) {
				return xs[c.Offset:min(c.Offset+c.Size, len(xs))]
			}
			return nil
		}
		put32 := func(bit int, v []uint32) { putU32s(area(bit), v) }
		put64 := func(bit int, v []uint64) { putU64s(area(bit), v) }
		put32(2, xsave.GetYmmhSpace())
		put64(3, xsave.GetBndregState())
		put64(4, xsave.GetBndcsrState())
		put64(5, xsave.GetOpmaskReg())
		put64(6, xsave.GetZmmUpper())
		put64(7, xsave.GetHi16Zmm())
		put32(9, xsave.GetPkru())
	}
	if bv&^supported != 0 {
		return fmt.Errorf("the image uses xstate features %#x this CPU lacks (it has %#x)", bv&^supported, supported)
	}
	le.PutUint64(xs[xsaveHeaderOff:], bv)
	le.PutUint64(xs[xsaveHeaderOff+8:], 0) // xcomp_bv: standard format
	return nil
}

func putU32s(dst []byte, v []uint32) {
	for i, w := range v {
		if 4*i+4 > len(dst) {
			return
		}
		le.PutUint32(dst[4*i:], w)
	}
}

// putU64s is putU32s for 64-bit words.
func putU64s(dst []byte, v []uint64) {
	for i, w := range v {
		if 8*i+8 > len(dst) {
			return
		}
		le.PutUint64(dst[8*i:], w)
	}
}

func u64Bytes(v []uint64) []byte {
	b := make([]byte, 8*len(v))
	for i, w := range v {
		le.PutUint64(b[8*i:], w)
	}
	return b
}
