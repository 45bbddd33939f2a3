package ptrace

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSeizeInterruptRegsRoundTrip(t *testing.T) {
	requireRoot(t)
	cmd := startSleep(t)
	pid := cmd.Process.Pid
	tr := NewTracer()
	defer tr.Close()

	err := tr.Do(func() error {
		if err := Seize(pid, unix.PTRACE_O_EXITKILL); err != nil {
			return err
		}
		st, err := InterruptAndWait(pid)
		if err != nil {
			return err
		}
		if st.Event != unix.PTRACE_EVENT_STOP {
			t.Errorf("stop after interrupt: %v, want PTRACE_EVENT_STOP", st)
		}
		regs, err := GetRegs(pid)
		if err != nil {
			return err
		}
		// sleep sits in clock_nanosleep: interrupted, the kernel left
		// -ERESTART_RESTARTBLOCK or -ERESTARTNOHAND in rax and the
		// syscall number in orig_rax.
		if regs.Orig_rax != unix.SYS_CLOCK_NANOSLEEP && regs.Orig_rax != unix.SYS_NANOSLEEP {
			t.Errorf("orig_rax = %d, want a nanosleep syscall", regs.Orig_rax)
		}
		if rax := int64(regs.Rax); rax != -516 && rax != -514 {
			t.Errorf("rax = %d, want -ERESTART_RESTARTBLOCK (-516) or -ERESTARTNOHAND (-514)", rax)
		}
		// Round trip: change a scratch register, read it back, restore.
		mod := regs
		mod.R12 ^= 0x5a5a5a5a
		if err := SetRegs(pid, &mod); err != nil {
			return err
		}
		got, err := GetRegs(pid)
		if err != nil {
			return err
		}
		if got.R12 != mod.R12 {
			t.Errorf("r12 after SetRegs = %#x, want %#x", got.R12, mod.R12)
		}
		if err := SetRegs(pid, &regs); err != nil {
			return err
		}

		mask, err := GetSigmask(pid)
		if err != nil {
			return err
		}
		if err := SetSigmask(pid, mask|1<<(unix.SIGUSR2-1)); err != nil {
			return err
		}
		if m2, err := GetSigmask(pid); err != nil || m2 != mask|1<<(unix.SIGUSR2-1) {
			t.Errorf("sigmask after set = %#x, %v", m2, err)
		}
		if err := SetSigmask(pid, mask); err != nil {
			return err
		}

		xs, err := GetXState(pid)
		if err != nil {
			return err
		}
		// The legacy area (512) plus the XSAVE header (64) at least.
		if len(xs) < 576 || len(xs)%8 != 0 {
			t.Errorf("xstate size %d", len(xs))
		}
		// A second read takes the size the first one learnt: the same
		// state, at the same size.
		xs2, err := GetXState(pid)
		if err != nil {
			return err
		}
		if !bytes.Equal(xs, xs2) || int64(len(xs)) != xstateSize.Load() {
			t.Errorf("second xstate read: %d bytes, differs %v, learnt size %d; first %d bytes",
				len(xs2), !bytes.Equal(xs, xs2), xstateSize.Load(), len(xs))
		}
		if err := SetXState(pid, xs); err != nil {
			return err
		}
		fp, err := GetFPRegs(pid)
		if err != nil {
			return err
		}
		// Bytes 464..511 are software-reserved (the kernel's xsave
		// description lives there in the xstate copy only).
		if !bytes.Equal(fp[:464], xs[:464]) {
			for i := range 464 {
				if fp[i] != xs[i] {
					t.Errorf("fxsave area differs between NT_PRFPREG and NT_X86_XSTATE at byte %d", i)
					break
				}
			}
		}
		if _, err := GetRseqConfig(pid); err != nil {
			return err
		}
		if f, err := SeccompFilters(pid); err != nil || len(f) != 0 {
			t.Errorf("seccomp filters of sleep: %d, %v", len(f), err)
		}
		if _, err := PeekSiginfo(pid, true); err != nil {
			return err
		}
		return Detach(pid, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	// Detached, sleep goes back to sleeping (the syscall restarts).
	waitState(t, pid, 'S')
}

func TestSeizeErrors(t *testing.T) {
	requireRoot(t)
	tr := NewTracer()
	defer tr.Close()
	err := tr.Do(func() error { return Seize(1<<22+12345, 0) })
	if !errors.Is(err, unix.ESRCH) {
		t.Errorf("seize of a missing pid: %v, want ESRCH", err)
	}
	if err == nil || err.Error() != "ptrace(PTRACE_SEIZE, 4206649): no such process" {
		t.Errorf("error text %q", err)
	}
	// ptrace calls off the tracer thread fail: the task is not ours there.
	cmd := startSleep(t)
	pid := cmd.Process.Pid
	if err := tr.Do(func() error { return Seize(pid, 0) }); err != nil {
		t.Fatal(err)
	}
	if err := Interrupt(pid); !errors.Is(err, unix.ESRCH) {
		t.Errorf("interrupt from another thread: %v, want ESRCH", err)
	}
	// A second tracer cannot seize it.
	tr2 := NewTracer()
	defer tr2.Close()
	if err := tr2.Do(func() error { return Seize(pid, 0) }); !errors.Is(err, unix.EPERM) {
		t.Errorf("second seize: %v, want EPERM", err)
	}
}

func TestReadWriteMem(t *testing.T) {
	requireRoot(t)
	cmd := startSleep(t)
	pid := cmd.Process.Pid
	tr := NewTracer()
	defer tr.Close()
	var regs Regs
	err := tr.Do(func() error {
		if err := Seize(pid, unix.PTRACE_O_EXITKILL); err != nil {
			return err
		}
		if _, err := InterruptAndWait(pid); err != nil {
			return err
		}
		var err error
		regs, err = GetRegs(pid)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Below the red zone of the stopped task: free stack we may scribble on
	// (the task is killed at the end anyway).
	addr := uintptr(regs.Rsp) - 4096
	want := []byte("crtools was here\x00\x01\x02")
	if n, err := WriteMem(pid, addr, want); err != nil || n != len(want) {
		t.Fatalf("WriteMem: %d, %v", n, err)
	}
	got := make([]byte, len(want))
	if n, err := ReadMem(pid, addr, got); err != nil || n != len(got) || !bytes.Equal(got, want) {
		t.Fatalf("ReadMem: %d, %v, %q", n, err, got)
	}
	var peek [8]byte
	if err := tr.Do(func() error { _, err := PeekData(pid, addr, peek[:]); return err }); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(peek[:], want[:8]) {
		t.Errorf("PeekData = %q", peek)
	}
	// Unmapped memory: an error, not a panic or a silent zero fill.
	if _, err := ReadMem(pid, 0x1000, got); err == nil {
		t.Errorf("ReadMem of address 0x1000 succeeded")
	}
}

// TestGroupStoppedStaysStopped: seizing a task stopped by SIGSTOP reports a
// group-stop (PTRACE_EVENT_STOP with SIGSTOP), InterruptAndWait does not
// resume it, and detaching with SIGSTOP leaves it stopped.
func TestGroupStoppedStaysStopped(t *testing.T) {
	requireRoot(t)
	cmd := startSleep(t)
	pid := cmd.Process.Pid
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitState(t, pid, 'T')
	tr := NewTracer()
	defer tr.Close()
	err := tr.Do(func() error {
		if err := Seize(pid, 0); err != nil {
			return err
		}
		st, err := InterruptAndWait(pid)
		if err != nil {
			return err
		}
		if !st.GroupStop() || st.Sig != int(unix.SIGSTOP) || st.Event != unix.PTRACE_EVENT_STOP {
			t.Errorf("stop %v: want a group-stop by SIGSTOP", st)
		}
		in, err := NewInjector(pid)
		if err != nil {
			return err
		}
		if r, err := in.Syscall(unix.SYS_GETPID); err != nil || int(r) != pid {
			t.Errorf("getpid = %d, %v", r, err)
		}
		return Detach(pid, int(unix.SIGSTOP))
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if s := procState(pid); s != 'T' {
		t.Errorf("state %c after detach, want T (still stopped)", s)
	}
	if err := unix.Kill(pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitState(t, pid, 'S')
}

func TestPinTaskAndTracer(t *testing.T) {
	requireRoot(t)
	pid := startSleep(t).Process.Pid
	var before unix.CPUSet
	if err := unix.SchedGetaffinity(pid, &before); err != nil {
		t.Fatal(err)
	}
	restore, err := PinTask(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	var now unix.CPUSet
	if err := unix.SchedGetaffinity(pid, &now); err != nil || now.Count() != 1 || !now.IsSet(0) {
		t.Errorf("pinned affinity: %v, %v", now, err)
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if err := unix.SchedGetaffinity(pid, &now); err != nil || now != before {
		t.Errorf("affinity after restore: %v, want %v", now, before)
	}
	tr := NewTracer()
	defer tr.Close()
	unpin, err := tr.PinTracer(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Do(func() error {
		var s unix.CPUSet
		if err := unix.SchedGetaffinity(0, &s); err != nil || s.Count() != 1 {
			t.Errorf("tracer affinity %v, %v", s, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := unpin(); err != nil {
		t.Fatal(err)
	}
}

func TestTracerDo(t *testing.T) {
	tr := NewTracer()
	tid := 0
	if err := tr.Do(func() error {
		tid = unix.Gettid()
		// Nested: runs inline instead of deadlocking.
		return tr.Do(func() error {
			if unix.Gettid() != tid {
				t.Errorf("nested Do ran on thread %d, want %d", unix.Gettid(), tid)
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	if tid != tr.Tid() || tid == unix.Gettid() {
		t.Errorf("Do ran on thread %d; tracer thread %d, test thread %d", tid, tr.Tid(), unix.Gettid())
	}
	if err := tr.Do(func() error { panic("boom") }); err == nil {
		t.Errorf("panic in Do not returned as an error")
	}
	if err := tr.Do(func() error { return nil }); err != nil {
		t.Errorf("tracer dead after a panic: %v", err)
	}
	tr.Close()
	tr.Close()
	if err := tr.Do(func() error { return nil }); err != ErrTracerClosed {
		t.Errorf("Do after Close: %v, want ErrTracerClosed", err)
	}
}

// TestTracerEarlyAndRelease: NewTracer does not wait for its thread, so a
// request, a Close or a Release may come before the thread is ready; a
// Release ends the thread without waiting, and no request runs after it.
func TestTracerEarlyAndRelease(t *testing.T) {
	for range 20 {
		tr := NewTracer()
		tid := 0
		if err := tr.Do(func() error { tid = unix.Gettid(); return nil }); err != nil {
			t.Fatal(err)
		}
		if tid != tr.Tid() || tid == unix.Gettid() {
			t.Fatalf("first Do ran on thread %d; tracer thread %d, caller %d", tid, tr.Tid(), unix.Gettid())
		}
		// A request queued while the tracer is busy and released
		// never runs: the loop then has both a request and the
		// release ready, and select would pick at random.
		started, block, first := make(chan struct{}), make(chan struct{}), make(chan error, 1)
		go func() { first <- tr.Do(func() error { close(started); <-block; return nil }) }()
		<-started
		tr.Release()
		ran, second := false, make(chan error, 1)
		go func() { second <- tr.Do(func() error { ran = true; return nil }) }()
		// Do may also see the release first and not queue at all.
		for len(tr.reqs) == 0 && len(second) == 0 {
			time.Sleep(100 * time.Microsecond)
		}
		close(block)
		if err := <-first; err != nil {
			t.Fatalf("request running at Release: %v", err)
		}
		if err := <-second; err != ErrTracerClosed || ran {
			t.Fatalf("Do after Release: %v (ran %v), want ErrTracerClosed", err, ran)
		}
		tr.Close() // waits for the goroutine; idempotent after Release
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid)); err == nil {
			// The thread may take a moment to go once its goroutine
			// returned: only its goroutine is waited for.
			deadline := time.Now().Add(5 * time.Second)
			for err == nil && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
				_, err = os.Stat(fmt.Sprintf("/proc/self/task/%d", tid))
			}
			if err == nil {
				t.Fatalf("tracer thread %d still alive 5 s after Close", tid)
			}
		}

		tr = NewTracer()
		tr.Close() // before the thread was ever ready
		if err := tr.Do(func() error { return nil }); err != ErrTracerClosed {
			t.Fatalf("Do after an early Close: %v, want ErrTracerClosed", err)
		}
	}
}

// TestStartTraced: a process started traced stops at its exec; syscalls can
// be injected there, and it then runs to its normal end.
func TestStartTraced(t *testing.T) {
	requireRoot(t)
	tr := NewTracer()
	defer tr.Close()
	cmd := exec.Command("sh", "-c", "exit 7")
	pid, err := tr.StartTraced(cmd)
	if err != nil {
		t.Fatal(err)
	}
	err = tr.Do(func() error {
		if s := procState(pid); s != 't' {
			t.Errorf("state %c at the exec stop, want t", s)
		}
		in, err := NewInjector(pid)
		if err != nil {
			return err
		}
		if r, err := in.Syscall(unix.SYS_GETPID); err != nil || int(r) != pid {
			t.Errorf("getpid = %d, %v", r, err)
		}
		if err := Cont(pid, 0); err != nil {
			return err
		}
		ws, err := Wait(pid)
		if err != nil {
			return err
		}
		if !ws.Exited() || ws.ExitStatus() != 7 {
			t.Errorf("wait status %#x, want exit 7", uint32(ws))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPendingSignalsAndSeccomp reads queued signals (private and shared
// queue) and seccomp filters of a stopped task.
func TestPendingSignalsAndSeccomp(t *testing.T) {
	requireRoot(t)
	w := startWorkload(t, "blocker", "masked")
	// SIGUSR1 to the process (shared queue), SIGUSR2 to the thread.
	if err := unix.Kill(w.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Tgkill(w.pid, w.pid, unix.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	tr := stoppedTracer(t, w.pid)
	err := tr.Do(func() error {
		signo := func(si []byte) int { return int(int32(binary.LittleEndian.Uint32(si))) }
		shared, err := PeekSiginfo(w.pid, true)
		if err != nil {
			return err
		}
		if len(shared) != 1 || signo(shared[0]) != int(unix.SIGUSR1) {
			t.Errorf("shared queue: %d entries, first %v", len(shared), shared)
		}
		private, err := PeekSiginfo(w.pid, false)
		if err != nil {
			return err
		}
		if len(private) != 1 || signo(private[0]) != int(unix.SIGUSR2) {
			t.Errorf("private queue: %d entries", len(private))
		}
		filters, err := SeccompFilters(w.pid)
		if err != nil {
			return err
		}
		// In installation order: 1 instruction, then 2.
		if len(filters) != 2 || len(filters[0]) != 1*8 || len(filters[1]) != 2*8 {
			t.Errorf("seccomp filters: %d, sizes %v", len(filters), func() (s []int) {
				for _, f := range filters {
					s = append(s, len(f))
				}
				return
			}())
		}
		// Their flags (PTRACE_SECCOMP_GET_METADATA): none was
		// installed with SECCOMP_FILTER_FLAG_LOG; past the last, ENOENT.
		for i := range filters {
			if f, err := SeccompFilterFlags(w.pid, i); err != nil || f != 0 {
				t.Errorf("flags of filter %d: %#x, %v", i, f, err)
			}
		}
		if _, err := SeccompFilterFlags(w.pid, len(filters)); !errors.Is(err, unix.ENOENT) {
			t.Errorf("flags of filter %d (none): %v, want ENOENT", len(filters), err)
		}
		return Detach(w.pid, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
}
