package ns

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// nsTypes maps a namespace name to its CLONE_NEW* flag.
var nsTypes = map[string]int{
	"uts": unix.CLONE_NEWUTS,
	"ipc": unix.CLONE_NEWIPC,
	"net": unix.CLONE_NEWNET,
}

// inNamespace runs fn on a fresh OS thread that joined the name namespace
// of pid, then puts the thread back into crtools' namespace.
func inNamespace(pid int, name string, fn func() error) error {
	typ, ok := nsTypes[name]
	if !ok {
		return fmt.Errorf("join %s namespace: unknown namespace", name)
	}
	target, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, name))
	if err != nil {
		return fmt.Errorf("open %s namespace of pid %d: %w", name, pid, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		// setns changes only the calling thread: lock this goroutine to
		// its thread so that fn runs there and nothing else does.
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/" + name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open crtools' %s namespace: %w", name, err)
			return
		}
		defer own.Close()
		if err := unix.Setns(int(target.Fd()), typ); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("join %s namespace of pid %d: %w", name, pid, err)
			return
		}
		ferr := fn()
		if errors.As(ferr, new(errPoisoned)) {
			// Deliberately no UnlockOSThread: fn could not put the
			// thread's credentials back (sysv.go); it exits with this
			// goroutine.
			errc <- ferr
			return
		}
		if err := unix.Setns(int(own.Fd()), typ); err != nil {
			// Deliberately no UnlockOSThread: the thread is in a foreign
			// namespace, so it must not run other goroutines; it exits
			// with this goroutine.
			errc <- fmt.Errorf("return to crtools' %s namespace: %w", name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
