package ptrace

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// kernelSigaction is the kernel's struct sigaction on x86-64 (rt_sigaction
// with a sigset of 8 bytes).
type kernelSigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

// saNoCldStop is SA_NOCLDSTOP.
const saNoCldStop = 0x1

// QuietStops adds SA_NOCLDSTOP to the SIGCHLD action the Go runtime
// installed for this process, keeping its handler, mask and other flags.
// Every ptrace-stop of a tracee otherwise sends SIGCHLD to the tracer's
// process (do_notify_parent_cldstop), which interrupts one of its threads
// (or wakes an idle one) to run the runtime's handler, only for it to
// discard the signal: with 50 threads seized and injected into, about a
// hundred such signals per dump. wait4 is woken all the same, and a child
// that exits still sends its SIGCHLD; only stops and continues of children
// (which nothing in crtools is told of by signal) go unsignalled.
func QuietStops() error { return setNoCldStop(true) }

// setNoCldStop sets or clears SA_NOCLDSTOP in the SIGCHLD action.
func setNoCldStop(on bool) error {
	var sa kernelSigaction
	if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(unix.SIGCHLD), 0, uintptr(unsafe.Pointer(&sa)), 8, 0, 0); e != 0 {
		return fmt.Errorf("read SIGCHLD action: %w", e)
	}
	if (sa.flags&saNoCldStop != 0) == on {
		return nil
	}
	sa.flags ^= saNoCldStop
	if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(unix.SIGCHLD), uintptr(unsafe.Pointer(&sa)), 0, 8, 0, 0); e != 0 {
		return fmt.Errorf("set SIGCHLD action: %w", e)
	}
	return nil
}
