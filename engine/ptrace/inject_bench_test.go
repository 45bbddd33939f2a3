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
	tr := stoppedTracer(b, pid)
	// Pinned: both on CPU 0. Unpinned: tracer on CPU 0, target on CPU 1,
	// what an unlucky scheduler does.
	targetCPU := 1
	if pinned {
		targetCPU = 0
	}
	unpinTracer, err := tr.PinTracer(0)
	if err != nil {
		b.Fatal(err)
	}
	defer unpinTracer()
	unpinTask, err := PinTask(pid, targetCPU)
	if err != nil {
		b.Fatal(err)
	}
	defer unpinTask()
	err = tr.Do(func() error {
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
