// Package handoff takes the teardown of crtools' address space off the
// time its caller waits for it.
//
// When a process exits, its last thread unmaps its whole address space
// before the parent's wait returns. On the virtual machines crtools is
// measured on (page tables shadowed by the host) that costs crtools
// 2-3 ms, a tenth of a threads50 dump or restore: its ~17 MiB of binary
// and heap are mapped, page by page. The address space is only torn down
// when its last user lets go of it, so Exit first starts a holder, a
// process that shares the address space and waits for crtools' files to
// be closed, which the kernel does after it let go of its address space:
// the holder, not crtools, then unmaps it, while crtools' caller goes on.
// A C program with the same 18 MiB mapped: exit to the parent's wait
// 2.7-3.0 ms, 0.47-0.49 ms with a holder (medians of 41).
//
// The holder is a process of its own: a child of crtools, re-parented
// like any other to the nearest child subreaper or init when crtools
// exits, and reaped there. It runs no Go code: a few system calls with
// every signal blocked (a signal would otherwise run crtools' Go handlers
// on a stack that is not Go's). It keeps crtools' scheduling policy: at
// SCHED_IDLE, so as not to take a CPU from crtools' caller, it outlived
// crtools by up to seconds on a busy host. It first closes every
// descriptor but the read end of its pipe, so that none of crtools' files
// (its output pipes, the images) stays open after crtools exits; then it
// waits for the end of the pipe and exits.
//
// Until it first runs, the holder has copies of crtools' descriptors. A
// reader of crtools' output sees its end only once the holder has closed
// them, a moment after crtools' exit (the holder runs at crtools' policy;
// at SCHED_IDLE that moment was seconds on a busy host). No lock is among
// them: the executor closes the recipe lock's file, which drops its flock,
// before run returns. Waiting for the holder to close them before exiting
// (a futex it sets after close_range) was measured: it costs every run
// what it saves the rare reader, 1-2 ms on --version and 0.3-0.7 ms on a
// threads50 dump or restore (a wake-up of the other CPU), so crtools does
// not wait.
//
// Everything here is advice: where the holder cannot be made (another
// platform, a kernel before close_range, Linux 5.9, a seccomp filter),
// crtools exits as before.
package handoff

import "os"

// Exit hands the address space over and exits with code (os.Exit).
func Exit(code int) {
	start()
	os.Exit(code)
}
