package ptrace

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSettledTracerDeath: a task whose injections ended settled
// (SettleAtEnd) survives the death of its tracer (no PTRACE_DETACH: the
// tracer thread exits, as in a crtools SIGKILLed mid-dump), running or
// stopped by job control: the running one carries on, the stopped one
// stays stopped until SIGCONT and then carries on. Without the settle the
// last single-step leaves the step flag set (a dying tracer's detach does
// not clear it, PTRACE_DETACH and PTRACE_CONT do), and the task dies of
// SIGTRAP at the first instruction it runs (see Injector.SettleAtEnd).
func TestSettledTracerDeath(t *testing.T) {
	requireRoot(t)
	for _, stop := range []bool{false, true} {
		name := "running"
		if stop {
			name = "group-stopped"
		}
		t.Run(name, func(t *testing.T) {
			w := startMaybeStopped(t, "counter", stop)
			tr := NewTracer()
			t.Cleanup(tr.Close)
			err := tr.Do(func() error {
				// No PTRACE_O_EXITKILL, as at dump.
				if err := Seize(w.pid, 0); err != nil {
					return err
				}
				if _, err := InterruptAndWait(w.pid); err != nil {
					return err
				}
				in, err := NewInjector(w.pid)
				if err != nil {
					return err
				}
				in.SettleAtEnd = true
				if err := in.Begin(); err != nil {
					return err
				}
				// Single-stepped, like the dump's last call (munmap).
				if err := injectedGetpid(t, in, w.pid); err != nil {
					return err
				}
				return in.End()
			})
			if err != nil {
				t.Fatal(err)
			}
			// The ticks printed before the tracer dies say nothing.
			drain(w)
			tr.Close()
			if stop {
				waitState(t, w.pid, 'T')
				time.Sleep(100 * time.Millisecond)
				if st := procState(w.pid); st != 'T' {
					t.Fatalf("pid %d in state %c 100 ms after its tracer died, want T", w.pid, st)
				}
				w.quiet(t, 50*time.Millisecond)
				if err := unix.Kill(w.pid, unix.SIGCONT); err != nil {
					t.Fatal(err)
				}
			}
			// Dead of SIGTRAP, its output would end here.
			checkTicking(t, w)
			if st := procState(w.pid); st != 'S' && st != 'R' {
				t.Errorf("pid %d in state %c after ticking, want S or R", w.pid, st)
			}
		})
	}
}

// drain takes every line the workload has printed so far.
func drain(w *workload) {
	for {
		select {
		case _, ok := <-w.lines:
			if !ok {
				return
			}
		default:
			return
		}
	}
}
