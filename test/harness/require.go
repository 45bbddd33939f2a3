package harness

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/kernel"
	"github.com/crtools/crtools/test/testenv"
)

// InCI reports whether the tests run in CI (see testenv.InCI).
func InCI() bool { return testenv.InCI() }

// skipOrFail skips the test with reason, or fails it in CI.
func skipOrFail(t testing.TB, reason string) {
	t.Helper()
	testenv.SkipOrFail(t, reason)
}

// RequireRoot skips (fails in CI) unless the test runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t, "this test")
}

// RequireKernel skips (fails in CI) unless the running kernel is at least
// version min ("6.7"); feature names what needs it, for the message.
func RequireKernel(t testing.TB, min, feature string) {
	t.Helper()
	rel, err := KernelRelease()
	if err != nil {
		t.Fatalf("read kernel release: %v", err)
	}
	ok, err := KernelAtLeast(rel, min)
	if err != nil {
		t.Fatalf("compare kernel release %q with %q: %v", rel, min, err)
	}
	if !ok {
		skipOrFail(t, fmt.Sprintf("%s needs kernel %s or newer, this is %s", feature, min, rel))
	}
}

// KernelRelease returns uname -r.
func KernelRelease() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}

// KernelAtLeast compares the leading "major.minor[.patch]" of a kernel
// release string such as "6.18.44-fc-v782" with min.
func KernelAtLeast(release, min string) (bool, error) {
	have, err := parseVersion(release)
	if err != nil {
		return false, err
	}
	want, err := parseVersion(min)
	if err != nil {
		return false, err
	}
	for i := range 3 {
		if have[i] != want[i] {
			return have[i] > want[i], nil
		}
	}
	return true, nil
}

func parseVersion(s string) ([3]int, error) {
	var v [3]int
	// Cut at the first character that is neither a digit nor a dot.
	end := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if end >= 0 {
		s = s[:end]
	}
	parts := strings.Split(strings.Trim(s, "."), ".")
	if len(parts) < 2 || len(parts) > 3 {
		return v, fmt.Errorf("parse version %q: want major.minor[.patch]", s)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return v, fmt.Errorf("parse version %q: %w", s, err)
		}
		v[i] = n
	}
	return v, nil
}

// RequireFeature skips (fails in CI) unless the kernel feature name (as
// `crtools check` lists it, e.g. "pagemap-scan") works here.
func RequireFeature(t testing.TB, name string) {
	t.Helper()
	if err := kernel.Probe(name); err != nil {
		skipOrFail(t, err.Error())
	}
}
