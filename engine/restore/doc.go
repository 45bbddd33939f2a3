// Package restore turns images back into running tasks by driving
// "puppets" (DESIGN.md, "Restore by puppets"). It implements
// engine.Restorer and registers itself as engine.NewRestorer.
//
// # Algorithm
//
// Load decodes every image once (model.go). CreateTasks starts the first
// puppet — a one-page static executable written to a memfd (puppetelf.go;
// crtools' own binary, /proc/self/exe, if that fails) with PTRACE_TRACEME,
// which stops at its exec before any of its code runs — writes
// `syscall; int3` at its entry point and maps the trampoline (one code page and a scratch area)
// at an address free in the puppet and in every task of the images. From
// then on every syscall is injected at the trampoline: set the registers,
// PTRACE_CONT, collect RAX at the int3 (puppet.go). Calls whose result
// nobody needs at once are queued and run as one batch (ptrace.Batch: a
// table of calls, one stop for all); calls that open a file are queued
// too while crtools knows the puppet's fd table (fdtable.go: the kernel
// gives the lowest free number, checked after the batch and against
// /proc/PID/fd), so a task's memory, files and state take a few stops
// instead of one per call. clone3 with set_tid
// creates each task in its parent's puppet (the root in the first puppet,
// with CLONE_PARENT, so crtools is its parent) and each thread with
// CLONE_THREAD in its process's puppet; CLONE_PTRACE makes them puppets
// too, stopped in their first SIGSTOP, so a parent's clones run in one
// batch (in a new pid namespace the clone event stops, which give the
// pid in crtools' namespace, make them puppets, one at a time). The first
// puppet drops its exec'ed image before it clones the root: every task
// starts with nothing but the trampoline. A process that shared its fd table or fs info with its
// parent or a sibling is cloned from that task with CLONE_FILES/CLONE_FS
// (with CLONE_PARENT from a sibling), and the table or fs info is restored
// once (create.go). Sessions are created before children, process groups
// leaders first, zombies exit with their status.
//
// RestoreState, per task (state.go): block all signals, close crtools'
// inherited files, unmap everything but the trampoline, map the vDSO where
// it was (ARCH_MAP_VDSO_64), mmap(MAP_FIXED) every VMA, copy the pages from
// the pages file with process_vm_writev from crtools (memory.go explains
// why not an injected preadv), set protections, PR_SET_MM_MAP with the exe
// file, files (open/dup3, special files from engine/files by pidfd_getfd,
// files shared with another task by pidfd_getfd from it, memfds created
// once by crtools and taken by every task that has them open or mapped,
// memfd.go), cwd/root/umask,
// sigactions, itimers, POSIX timers, rlimits (prlimit from outside),
// per-thread sigaltstack, rseq, robust list, clear_child_tid, comm,
// pdeath signal (the threads of a process each in a slot of the
// trampoline, all at the same time), pending signals, seccomp filters and
// strict mode (seccomp.go: with seccomp suspended for crtools' own calls
// until the detach), and credentials; last, the trampoline
// goes with its own last syscall, single-stepped so that the task stops in
// a SIGTRAP signal-delivery-stop like the other threads at their int3
// (regs.go: done right after the task's last batch, while its memory is
// the one the CPU last worked on). A task that ignores SIGTRAP gets that
// action only then, with the munmap, both through syscall-stops: a trap
// forced while SIGTRAP is ignored resets it to SIG_DFL (sigtrap.go). The page copy of a task runs on
// another goroutine while the tracer maps the next task and finishes this
// one's state (beginProc, endProc).
//
// Resume (regs.go) sets every thread's registers and
// xstate (a task dumped inside a syscall keeps its -ERESTART*, and the
// kernel's signal code, still ahead of the detached thread, restarts the
// syscall or makes it return -EINTR exactly as it would have), puts back crtools' CPU mask (tracer and puppets are pinned to one
// CPU while injecting), and detaches every thread of every task.
//
// # Threads
//
// Every ptrace call and wait4 runs on the ptrace.Tracer's locked thread;
// the phases hand it whole closures. Only the page copy (process_vm_writev,
// no ptrace) runs elsewhere, one task at a time per lane. With two CPUs,
// RestoreState and Resume run a second lane (lanes.go): processes that
// share nothing with the others are handed over to a second tracer thread
// on the other CPU and restored there at the same time. Kill kills every task
// created so far; the puppets are traced with PTRACE_O_EXITKILL, so a
// killed crtools leaves none behind.
package restore
