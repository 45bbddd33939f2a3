package ptrace

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestInjectGetpid(t *testing.T) {
	requireRoot(t)
	cmd := startSleep(t)
	pid := cmd.Process.Pid
	tr := stoppedTracer(t, pid)
	err := tr.Do(func() error {
		before, err := GetRegs(pid)
		if err != nil {
			return err
		}
		maskBefore, err := GetSigmask(pid)
		if err != nil {
			return err
		}
		in, err := NewInjector(pid)
		if err != nil {
			return err
		}
		if err := injectedGetpid(t, in, pid); err != nil {
			return err
		}
		// An error comes back as errno, with the raw value.
		ret, err := in.Syscall(unix.SYS_CLOSE, 98765)
		if !errors.Is(err, unix.EBADF) || int64(ret) != -int64(unix.EBADF) {
			t.Errorf("injected close(98765) = %d, %v; want -EBADF", int64(ret), err)
		}
		after, err := GetRegs(pid)
		if err != nil {
			return err
		}
		if after != before {
			t.Errorf("registers changed by injection:\nbefore %+v\nafter  %+v", before, after)
		}
		if m, err := GetSigmask(pid); err != nil || m != maskBefore {
			t.Errorf("sigmask after injection %#x, %v; want %#x", m, err, maskBefore)
		}
		return Detach(pid, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, pid, 'S')
}

// TestInjectOpenCloseLiveWorkload opens a file in a running workload and
// closes it again; the workload keeps counting and its own fds keep working.
func TestInjectOpenCloseLiveWorkload(t *testing.T) {
	requireRoot(t)
	w := startWorkload(t, "counter")
	w.expect(t, "tick", 5*time.Second)
	mapsBefore := countMaps(t, w.pid)
	path := filepath.Join(t.TempDir(), "injected file")
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tr := NewTracer()
	defer tr.Close()

	inject := func(f func(in *Injector) error) {
		t.Helper()
		stopped(t, tr, w.pid)
		err := tr.Do(func() error {
			in, err := NewInjector(w.pid)
			if err != nil {
				return err
			}
			if err := in.Begin(); err != nil {
				return err
			}
			ferr := f(in)
			if err := in.End(); err != nil {
				return err
			}
			if ferr != nil {
				return ferr
			}
			return Detach(w.pid, 0)
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	var fd int
	inject(func(in *Injector) error {
		cleanup, err := in.WithScratch(100)
		if err != nil {
			return err
		}
		addr, err := in.PutBytes(append([]byte(path), 0))
		if err != nil {
			return err
		}
		r, err := in.Syscall(unix.SYS_OPEN, addr, unix.O_RDWR)
		if err != nil {
			return err
		}
		fd = int(r)
		return cleanup()
	})
	if link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", w.pid, fd)); err != nil || link != path {
		t.Fatalf("fd %d of the workload: %q, %v; want %q", fd, link, err, path)
	}
	if got := countMaps(t, w.pid); got != mapsBefore {
		t.Errorf("workload has %d mappings after the injection, %d before: scratch left behind", got, mapsBefore)
	}
	checkTicking(t, w)

	inject(func(in *Injector) error {
		_, err := in.Syscall(unix.SYS_CLOSE, uintptr(fd))
		return err
	})
	if _, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", w.pid, fd)); !os.IsNotExist(err) {
		t.Errorf("fd %d still open after injected close: %v", fd, err)
	}
	checkTicking(t, w)
	// Signals still reach it.
	if err := unix.Kill(w.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	w.expect(t, "sig", 5*time.Second)
}

// checkTicking asserts the counter workload carries on: its counter grows
// over the next ticks (each tick also checked its pipe and file).
func checkTicking(t *testing.T, w *workload) {
	t.Helper()
	first := tickCounter(t, w.expect(t, "tick", 5*time.Second))
	var last uint64
	for range 5 {
		last = tickCounter(t, w.expect(t, "tick", 5*time.Second))
	}
	if last <= first {
		t.Errorf("counter did not grow: %d then %d", first, last)
	}
}

func tickCounter(t *testing.T, line string) uint64 {
	t.Helper()
	f := strings.Fields(line)
	if len(f) != 4 || f[3] != "crtools-data" {
		t.Fatalf("bad tick line %q", line)
	}
	n, err := strconv.ParseUint(f[2], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func countMaps(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// injectedGetpid injects getpid with in and checks that it returns pid.
func injectedGetpid(t *testing.T, in *Injector, pid int) error {
	t.Helper()
	got, err := in.Syscall(unix.SYS_GETPID)
	if err != nil {
		return err
	}
	if int(got) != pid {
		t.Errorf("injected getpid = %d, want %d", got, pid)
	}
	return nil
}

// injectGetpid stops pid, injects getpid and lets it go.
func injectGetpid(t *testing.T, tr *Tracer, pid int) {
	t.Helper()
	stopped(t, tr, pid)
	err := tr.Do(func() error {
		regs, err := GetRegs(pid)
		if err != nil {
			return err
		}
		if int64(regs.Orig_rax) < 0 {
			t.Errorf("pid %d was not stopped inside a syscall (orig_rax %d)", pid, int64(regs.Orig_rax))
		}
		in, err := NewInjector(pid)
		if err != nil {
			return err
		}
		if err := injectedGetpid(t, in, pid); err != nil {
			return err
		}
		return Detach(pid, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestInjectIntoBlockedSyscall: a task blocked in nanosleep, read or pause
// continues its syscall correctly after an injection (the sleep ends when it
// should, read still waits for data, pause still waits for a signal).
func TestInjectIntoBlockedSyscall(t *testing.T) {
	requireRoot(t)
	tr := NewTracer()
	defer tr.Close()

	t.Run("nanosleep", func(t *testing.T) {
		const sleepMS = 1200
		w := startWorkload(t, "blocker", "nanosleep", strconv.Itoa(sleepMS))
		start := time.Now()
		waitState(t, w.pid, 'S')
		time.Sleep(200 * time.Millisecond)
		injectGetpid(t, tr, w.pid)
		time.Sleep(200 * time.Millisecond)
		injectGetpid(t, tr, w.pid)
		line := w.expect(t, "slept", 5*time.Second)
		wall := time.Since(start)
		var elapsed, rc int
		if _, err := fmt.Sscanf(line, "slept %d rc=%d", &elapsed, &rc); err != nil {
			t.Fatalf("bad line %q: %v", line, err)
		}
		if rc != 0 || elapsed < sleepMS || elapsed > sleepMS+500 {
			t.Errorf("%q: want rc=0 and a sleep of %d ms (not early, not much later)", line, sleepMS)
		}
		if wall > sleepMS*time.Millisecond+time.Second {
			t.Errorf("sleep ended after %v", wall)
		}
	})
	t.Run("read", func(t *testing.T) {
		w := startWorkload(t, "blocker", "read")
		waitState(t, w.pid, 'S')
		injectGetpid(t, tr, w.pid)
		w.quiet(t, 200*time.Millisecond)
		if procState(w.pid) != 'S' {
			t.Errorf("state %c after injection, want S (still reading)", procState(w.pid))
		}
		if _, err := w.stdin.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if l := w.expect(t, "read", 5*time.Second); l != "read 5: hello" {
			t.Errorf("got %q, want %q", l, "read 5: hello")
		}
	})
	t.Run("pause", func(t *testing.T) {
		w := startWorkload(t, "blocker", "pause")
		waitState(t, w.pid, 'S')
		injectGetpid(t, tr, w.pid)
		// Let go, it restarts its pause from user space: stopped again
		// before it is back in the syscall, it would not be in one.
		waitState(t, w.pid, 'S')
		injectGetpid(t, tr, w.pid)
		w.quiet(t, 200*time.Millisecond)
		if procState(w.pid) != 'S' {
			t.Errorf("state %c after injection, want S (still paused)", procState(w.pid))
		}
		if err := unix.Kill(w.pid, unix.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		if l := w.expect(t, "paused", 5*time.Second); l != fmt.Sprintf("paused rc=-1 errno=%d", unix.EINTR) {
			t.Errorf("got %q, want pause to end with EINTR", l)
		}
	})
}

// TestInjectSigtrapIgnored: a task that ignores SIGTRAP is driven through
// syscall-stops, and still ignores SIGTRAP afterwards.
func TestInjectSigtrapIgnored(t *testing.T) {
	requireRoot(t)
	// Ignored dispositions survive exec.
	pid := startShell(t, `trap "" TRAP; exec sleep 1000`)
	tr := stoppedTracer(t, pid)
	err := tr.Do(func() error {
		in, err := NewInjector(pid)
		if err != nil {
			return err
		}
		if !in.syscallStops {
			t.Errorf("injector does not know SIGTRAP is ignored")
		}
		if err := injectedGetpid(t, in, pid); err != nil {
			return err
		}
		return Detach(pid, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	if ign, err := ignoresSIGTRAP(pid); err != nil || !ign {
		t.Errorf("SIGTRAP no longer ignored after injection (%v)", err)
	}
	waitState(t, pid, 'S')
}

// startShell runs script with sh, waits until it sleeps, returns its pid.
func startShell(t *testing.T, script string) int {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid)); string(b) == "sleep\n" && procState(cmd.Process.Pid) == 'S' {
			return cmd.Process.Pid
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("%q did not reach its sleep", script)
	return 0
}

// TestInjectPendingSignal: a signal queued while the task is stopped is not
// delivered during the injection (no handler runs on injected registers)
// but right after the task is let go; its mask is as before.
func TestInjectPendingSignal(t *testing.T) {
	requireRoot(t)
	w := startWorkload(t, "counter")
	w.expect(t, "tick", 5*time.Second)
	tr := stoppedTracer(t, w.pid)
	err := tr.Do(func() error {
		mask, err := GetSigmask(w.pid)
		if err != nil {
			return err
		}
		if err := unix.Kill(w.pid, unix.SIGUSR1); err != nil {
			return err
		}
		in, err := NewInjector(w.pid)
		if err != nil {
			return err
		}
		for range 3 {
			if r, err := in.Syscall(unix.SYS_GETPID); err != nil || int(r) != w.pid {
				t.Errorf("getpid = %d, %v", r, err)
			}
		}
		if len(in.Deferred) != 0 {
			t.Errorf("signals stopped the injection: %v", in.Deferred)
		}
		if m, err := GetSigmask(w.pid); err != nil || m != mask {
			t.Errorf("mask %#x, %v; want %#x", m, err, mask)
		}
		return Detach(w.pid, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	w.expect(t, "sig", 5*time.Second)
	checkTicking(t, w)
}

// TestInjectDefersUnblockableSignal: SIGSTOP cannot be blocked, so it stops
// the injection as a signal-delivery-stop; the injector holds it back and
// lists it in Deferred, and ExecSyscall passes it on at detach.
func TestInjectDefersUnblockableSignal(t *testing.T) {
	requireRoot(t)
	pid := startSleep(t).Process.Pid
	tr := stoppedTracer(t, pid)
	err := tr.Do(func() error {
		if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
			return err
		}
		in, err := NewInjector(pid)
		if err != nil {
			return err
		}
		if r, err := in.Syscall(unix.SYS_GETPID); err != nil || int(r) != pid {
			t.Errorf("getpid = %d, %v", r, err)
		}
		if len(in.Deferred) != 1 || in.Deferred[0] != int(unix.SIGSTOP) {
			t.Errorf("deferred %v, want [SIGSTOP]", in.Deferred)
		}
		return Detach(pid, in.Deferred[0])
	})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, pid, 'T')
	if err := unix.Kill(pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitState(t, pid, 'S')
}
