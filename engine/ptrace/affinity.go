package ptrace

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// An injected syscall is a few ptrace round trips, each a wakeup of the
// other side. With tracer and tracee on different CPUs every wakeup is an
// IPI and a cold cache; on one CPU it is a plain context switch, about half
// the cost (BenchmarkInjectGetpid: pinned vs unpinned). Pin both for long
// series of injections, and give the task its own affinity back before
// letting it go.

// PinTracer pins the tracer thread to cpu. The returned function restores
// its previous affinity. Call it outside Do.
func (t *Tracer) PinTracer(cpu int) (restore func() error, err error) {
	var old unix.CPUSet
	err = t.Do(func() error {
		if err := unix.SchedGetaffinity(0, &old); err != nil {
			return fmt.Errorf("read affinity of the tracer thread: %w", err)
		}
		var one unix.CPUSet
		one.Set(cpu)
		if err := unix.SchedSetaffinity(0, &one); err != nil {
			return fmt.Errorf("pin the tracer thread to CPU %d: %w", cpu, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return func() error {
		return t.Do(func() error {
			if err := unix.SchedSetaffinity(0, &old); err != nil {
				return fmt.Errorf("restore affinity of the tracer thread: %w", err)
			}
			return nil
		})
	}, nil
}

// PinTask pins task tid to cpu. The returned function gives it its previous
// affinity back. Any goroutine may call both.
func PinTask(tid, cpu int) (restore func() error, err error) {
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(tid, &old); err != nil {
		return nil, fmt.Errorf("read affinity of task %d: %w", tid, err)
	}
	var one unix.CPUSet
	one.Set(cpu)
	if err := unix.SchedSetaffinity(tid, &one); err != nil {
		return nil, fmt.Errorf("pin task %d to CPU %d: %w", tid, cpu, err)
	}
	return func() error {
		if err := unix.SchedSetaffinity(tid, &old); err != nil {
			return fmt.Errorf("restore affinity of task %d: %w", tid, err)
		}
		return nil
	}, nil
}
