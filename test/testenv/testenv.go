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
	"testing"
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
