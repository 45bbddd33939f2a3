package dump

import (
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

// TestExitedOrExiting: a seize refused with EPERM is a task that is gone
// when the task is a zombie or released, never when it lives (the fork
// storm's dump once failed on the EPERM of a child that had just exited).
func TestExitedOrExiting(t *testing.T) {
	if exitedOrExiting(os.Getpid(), os.Getpid()) {
		t.Errorf("exitedOrExiting(self) = true")
	}
	cmd := exec.Command("/bin/true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if !exitedOrExiting(pid, pid) {
		t.Errorf("exitedOrExiting(zombie %d) = false", pid)
	}
	// The kernel's refusal this is about: a zombie cannot be seized.
	if err := unix.PtraceSeize(pid); err != unix.EPERM {
		t.Errorf("PTRACE_SEIZE of zombie %d = %v, want EPERM", pid, err)
	}
	_ = cmd.Wait()
	if !exitedOrExiting(pid, pid) {
		t.Errorf("exitedOrExiting(reaped %d) = false", pid)
	}
}
