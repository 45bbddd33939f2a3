// Package ptrace is crtools' tracer: the ptrace primitives, access to the
// memory of other processes, and syscall injection into stopped tasks.
//
// # Thread rules
//
// Linux binds a ptrace relationship to the tracer *thread*, not to the
// process: only the thread that seized (or forked with PTRACE_TRACEME) a task
// may issue ptrace requests for it and wait4 for its stops. Go moves
// goroutines between threads freely, so every ptrace call and every wait4 on
// a traced task of a tree runs on one goroutine that locked itself to its OS
// thread and never unlocks (the pattern of delve's execPtraceFunc). That
// goroutine is owned by a Tracer; other goroutines hand it work with
// Tracer.Do:
//
//	err := tr.Do(func() error {
//		if err := ptrace.Seize(pid, 0); err != nil {
//			return err
//		}
//		return ptrace.Interrupt(pid)
//	})
//
// The plain functions of this package (Seize, Cont, GetRegs, the Injector,
// ...) must be called from inside Do on the Tracer that owns the task; called
// elsewhere they fail with ESRCH. Do called from inside Do runs its function
// directly. When a Tracer is closed its thread exits, which detaches
// (or, with PTRACE_O_EXITKILL, kills) every task it traced.
//
// No other goroutine of the process may wait for a traced task while it is
// traced: the kernel reports ptrace-stops to every thread of the tracer's
// thread group, and os/exec's Cmd.Wait (waitid on a pidfd, WEXITED only)
// consumes them too, so the tracer's wait4 would block forever. Start
// tasks to be traced without a goroutine in Cmd.Wait (or trace them from
// another process), and reap them with Wait on the tracer thread.
//
// ReadMem and WriteMem need no tracer thread: they use process_vm_readv and
// /proc/PID/mem, and may run on any goroutine, in parallel.
//
// # Syscall injection
//
// An Injector runs one system call in a ptrace-stopped task without a
// parasite: it saves the registers and the signal mask, blocks every signal
// but SIGTRAP, points RIP at a `syscall` instruction that already exists in
// the task (found in the vDSO), sets orig_rax to -1 so that the kernel's
// syscall-restart logic leaves the injected call alone, puts the number and
// arguments in rax, rdi, rsi, rdx, r10, r8, r9, and single-steps: the kernel
// executes the syscall and reports the single-step trap right after it, one
// round trip. It then reads rax and puts the saved registers and mask back.
// A task that was interrupted inside a blocking syscall (rax = -ERESTART*,
// orig_rax = its number) gets exactly those registers back, so the kernel
// restarts its syscall when it resumes.
//
// The mask saved is what PTRACE_GETSIGMASK reports: for a task stopped in
// sigsuspend, pselect6, ppoll or epoll_pwait it is the mask the kernel would
// put back when the call ends, and PTRACE_SETSIGMASK at End makes that the
// task's mask while the call restarts and installs its temporary mask again.
//
// The rseq_cs word of the thread's struct rseq is saved at Begin and
// written back at End: the kernel clears it when the thread resumes outside
// the critical section it names (at our syscall instruction), and the
// thread, if stopped inside that section, would then not be aborted.
//
// For many calls, Injector.NewBatch maps a page of code that runs a table
// of syscalls and stops on an int3: one PTRACE_CONT and one stop for all.
//
// Every step that lets the task run has a Start and a Finish half
// (Injector.Start/Finish, Batch.Start/Finish, StartNewBatchSized/
// FinishNewBatch, Batch.StartClose/FinishClose, Injector.StartEnd/
// FinishEnd): a tracer with many tasks starts the step in all of them
// before it waits for the first, so they run at the same time and a tree
// costs a few round trips in all. Batch.Slot gives each thread of a
// process its own table in one batch mapping, so threads run their
// batches at the same time too.
//
// SIGTRAP stays unblocked during an injection because the kernel forces the
// single-step SIGTRAP: were it blocked or ignored, force_sig would reset the
// task's SIGTRAP handler to SIG_DFL. A task that ignores SIGTRAP is therefore
// driven through two syscall-stops (PTRACE_SYSCALL) instead, which raise no
// signal.
//
// The package is x86-64 only (registers, syscall numbers, xstate).
package ptrace
