package ptrace

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWaitInterruptedOrLeaderExit: the leader of a two-thread process,
// seized while running, calls pthread_exit. It never reaches the interrupt
// stop, and its exit is not reported while its other thread (which the
// tracer stops) lives: WaitInterrupted would wait for ever there.
// WaitInterruptedOr gives up with giveUp's error once the leader is seen
// gone; for a task that does stop, it returns the stop.
func TestWaitInterruptedOrLeaderExit(t *testing.T) {
	requireRoot(t)
	w := startWorkload(t, "leaderexit")
	other, err := strconv.Atoi(w.ready[2])
	if err != nil {
		t.Fatalf("ready line %q: %v", w.ready, err)
	}
	tr := NewTracer()
	t.Cleanup(tr.Close)
	errGone := errors.New("the leader has exited")
	calls := 0
	err = tr.Do(func() error {
		for _, tid := range []int{w.pid, other} {
			if err := Seize(tid, unix.PTRACE_O_EXITKILL); err != nil {
				return err
			}
		}
		// The other thread stops normally, and WaitInterruptedOr says so.
		if err := Interrupt(other); err != nil {
			return err
		}
		st, err := WaitInterruptedOr(other, func() error { return nil })
		if err != nil || st.Event != unix.PTRACE_EVENT_STOP {
			return fmt.Errorf("stop of thread %d: %+v, %v; want a PTRACE_EVENT_STOP", other, st, err)
		}
		// The leader leaves while seized, before its interrupt.
		if _, err := io.WriteString(w.stdin, "exit\n"); err != nil {
			return err
		}
		for deadline := time.Now().Add(5 * time.Second); procState(w.pid) != 'Z'; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				return fmt.Errorf("leader %d in state %c, want Z", w.pid, procState(w.pid))
			}
		}
		_ = Interrupt(w.pid) // may be refused: it has exited
		_, err = WaitInterruptedOr(w.pid, func() error {
			calls++
			if procState(w.pid) == 'Z' {
				return errGone
			}
			return nil
		})
		if !errors.Is(err, errGone) {
			return fmt.Errorf("wait for leader %d: %v, want the give-up error", w.pid, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls == 0 {
		t.Errorf("giveUp never called")
	}
}
