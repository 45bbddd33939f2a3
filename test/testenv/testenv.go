// Package testenv decides, for tests of every package, whether a test that
// cannot run here may skip: outside CI it skips with its reason; in CI
// (root, kernel 6.x, every package .ci/run installs) it fails, so that a
// skipped test never hides a failure there. It imports nothing of crtools,
// so engine packages' own tests can use it without an import cycle
// (test/harness builds on it).
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// InCI reports whether the tests run in CI (the CI environment variable is
// set and not "false" or "0").
func InCI() bool {
	v := os.Getenv("CI")
	return v != "" && v != "false" && v != "0"
}

// SkipOrFail skips the test with reason, or fails it in CI.
func SkipOrFail(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("cannot run in CI: %s", reason)
	}
	t.Skip(reason)
}

// RequireRoot skips (fails in CI) unless the test runs as root; why says
// what needs root.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, fmt.Sprintf("%s needs root (euid is %d)", why, os.Geteuid()))
	}
}

// RequireCommand skips (fails in CI, where .ci/run installs it) unless the
// program name is on PATH; it returns its path.
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		SkipOrFail(t, fmt.Sprintf("%s is not installed (.ci/run installs it)", name))
	}
	return p
}

// InFreshIPCNS runs fn on a thread of its own in a new IPC namespace and
// puts the thread back into the test's namespace after: the thread may be
// the main one, whose namespace /proc/self/ns/ipc shows, which later
// tests compare tasks with (a thread left in the new namespace made the
// engine/dump tests after such a test fail 5 runs in 15).
func InFreshIPCNS(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/ipc")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer own.Close()
		if err := unix.Unshare(unix.CLONE_NEWIPC); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := unix.Setns(int(own.Fd()), unix.CLONE_NEWIPC); err != nil {
			// No UnlockOSThread: the thread exits with this goroutine
			// (or, the main thread, stays out of the runtime's use).
			errc <- fmt.Errorf("back to the test's IPC namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
