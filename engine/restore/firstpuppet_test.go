package restore

import (
	"errors"
	"os/exec"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// TestDropFirstFreesTaskPid: the first puppet's zombie keeps its PID until
// it is reaped, which Resume does; when a task of the tree has that PID
// (a heir, forked after CreateTasks with its PID), dropFirst reaps it at
// once, else the fork would be refused the PID (EEXIST).
func TestDropFirstFreesTaskPid(t *testing.T) {
	start := func() int {
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Through the Process (a pidfd): the PID may be another
		// process's by then, once dropFirst or reapFirst reaped it.
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd.Process.Pid
	}
	reaped := func(pid int) bool {
		_, err := unix.Wait4(pid, nil, unix.WALL|unix.WNOHANG, nil)
		return errors.Is(err, unix.ECHILD)
	}
	r := &restorer{log: zerolog.Nop()}

	pid := start()
	r.dropFirst(pid, []int{1, pid})
	if r.firstPid != 0 || !reaped(pid) {
		t.Errorf("first puppet %d with a task's PID: firstPid %d, reaped %v; want reaped at once", pid, r.firstPid, reaped(pid))
	}

	pid = start()
	r.dropFirst(pid, []int{1})
	if r.firstPid != pid {
		t.Fatalf("first puppet %d with no task's PID: firstPid %d, want it left to Resume", pid, r.firstPid)
	}
	r.reapFirst()
	if r.firstPid != 0 || !reaped(pid) {
		t.Errorf("reapFirst: firstPid %d, reaped %v", r.firstPid, reaped(pid))
	}
}
