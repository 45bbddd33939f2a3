package e2e

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/test/harness"
)

// TestDumpRestoreSleeperWokenBeforeItRuns: a signal that reaches a restored
// task before it has run a single instruction must end the interrupted
// pause() or sigsuspend() as it would have ended the original's (EINTR
// after the handler), not run the handler and then enter the syscall
// again. The task is dumped while stopped (SIGSTOP) inside the call, so it
// is restored stopped; the verify signal is queued while it is stopped and
// SIGCONT lets it go: deterministically the window in which a freshly
// detached task has not run yet (a rare CI flake of the pause test).
func TestDumpRestoreSleeperWokenBeforeItRuns(t *testing.T) {
	harness.RequireRoot(t)
	bin := harness.BuildC(t, "sleepers.c")
	for _, mode := range []string{"pause", "sigsuspend"} {
		t.Run(mode, func(t *testing.T) {
			rp := harness.Subreaper()
			w := harness.StartWorkload(t, bin, mode)
			inCall := func() {
				if mode == "pause" {
					waitInSyscall(t, w.Pid, unix.SYS_PAUSE)
				}
			}
			w.MustReady(10 * time.Second)
			inCall()
			w.MustVerify(10 * time.Second)
			inCall()
			if err := unix.Kill(w.Pid, unix.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			waitState(t, w.Pid, "T")
			dir := dumpKill(t, w)
			rp.Forget(w.Pid)
			restoreDetached(t, w, dir)
			waitState(t, w.Pid, "T")
			cont := time.AfterFunc(200*time.Millisecond, func() { _ = unix.Kill(w.Pid, unix.SIGCONT) })
			defer cont.Stop()
			// Verify queues SIGUSR1 while the task is stopped.
			if err := w.Verify(10 * time.Second); err != nil {
				t.Fatalf("verify signal sent before the restored task ran: %v\n%s", err, readLog(w, "restore.log"))
			}
			verifyRestoredPrep(t, w, inCall)
			waitExit(t, rp, w.Pid, 0)
		})
	}
}
