package ptrace

import (
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkInjectGetpid measures one injected getpid into a stopped `sleep`:
// "session" inside Begin/End (one single-step round trip plus SetRegs and
// GetRegs), "standalone" with Syscall saving and restoring registers and mask
// itself; each with tracer and target on different CPUs or both pinned to CPU
// 0 (DESIGN.md: the round trip is far cheaper when no cross-CPU wakeup is
// needed).
func BenchmarkInjectGetpid(b *testing.B) {
	requireRoot(b)
	for _, pinned := range []bool{false, true} {
		for _, session := range []bool{true, false} {
			name := "unpinned"
			if pinned {
				name = "pinned"
			}
			if session {
				name += "/session"
			} else {
				name += "/standalone"
			}
			b.Run(name, func(b *testing.B) { benchInject(b, pinned, session) })
		}
	}
}

func benchInject(b *testing.B, pinned, session bool) {
	cmd := startSleep(b)
	pid := cmd.Process.Pid
	tr := NewTracer()
	defer tr.Close()
	stopped(b, tr, pid)
	if pinned {
		var one unix.CPUSet
		one.Set(0)
		if err := unix.SchedSetaffinity(pid, &one); err != nil {
			b.Fatal(err)
		}
		// Only the tracer thread: it is locked to its goroutine.
		if err := tr.Do(func() error { return unix.SchedSetaffinity(0, &one) }); err != nil {
			b.Fatal(err)
		}
	} else {
		// Tracer on CPU 0, target on CPU 1: what an unlucky scheduler does.
		var c0, c1 unix.CPUSet
		c0.Set(0)
		c1.Set(1)
		if err := unix.SchedSetaffinity(pid, &c1); err != nil {
			b.Fatal(err)
		}
		if err := tr.Do(func() error { return unix.SchedSetaffinity(0, &c0) }); err != nil {
			b.Fatal(err)
		}
	}
	err := tr.Do(func() error {
		in, err := NewInjector(pid)
		if err != nil {
			return err
		}
		if session {
			if err := in.Begin(); err != nil {
				return err
			}
		}
		b.ResetTimer()
		for range b.N {
			r, err := in.Syscall(unix.SYS_GETPID)
			if err != nil {
				return err
			}
			if int(r) != pid {
				b.Fatalf("getpid = %d", r)
			}
		}
		b.StopTimer()
		if session {
			if err := in.End(); err != nil {
				return err
			}
		}
		return Detach(pid, 0)
	})
	if err != nil {
		b.Fatal(err)
	}
}
