package ptrace

import (
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

// TestQuietStops: after QuietStops a tracee's ptrace-stop no longer sends
// SIGCHLD to the tracer's process (before, it does), wait4 still sees the
// stop, and the child's exit still sends SIGCHLD.
func TestQuietStops(t *testing.T) {
	requireRoot(t)
	// As the process started (and again after the test).
	if err := setNoCldStop(false); err != nil {
		t.Fatal(err)
	}
	defer setNoCldStop(false)
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGCHLD)
	defer signal.Stop(sigs)
	drain := func() int {
		n := 0
		for {
			select {
			case <-sigs:
				n++
			case <-time.After(200 * time.Millisecond):
				return n
			}
		}
	}
	stopOnce := func() int {
		cmd := startSleep(t)
		pid := cmd.Process.Pid
		tr := NewTracer()
		defer tr.Close()
		drain()
		if err := tr.Do(func() error {
			if err := Seize(pid, 0); err != nil {
				return err
			}
			if _, err := InterruptAndWait(pid); err != nil {
				return err
			}
			return Detach(pid, 0)
		}); err != nil {
			t.Fatal(err)
		}
		return drain()
	}
	if n := stopOnce(); n == 0 {
		t.Fatal("no SIGCHLD for a tracee's stop before QuietStops: the test proves nothing")
	}
	if err := QuietStops(); err != nil {
		t.Fatal(err)
	}
	if n := stopOnce(); n != 0 {
		t.Errorf("%d SIGCHLD for a tracee's stop after QuietStops, want 0", n)
	}
	// The handler is still the runtime's (Notify still works) and exits
	// are still signalled.
	cmd := startSleep(t)
	drain()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if n := drain(); n == 0 {
		t.Error("no SIGCHLD for a child's exit after QuietStops")
	}
}
