//go:build linux && amd64

package prefault

// Only where the system calls are made without package syscall
// (sys_amd64_unsafe.go); elsewhere sys_other.go imports syscall.

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoDeps: the package imports no package with an init, so that its
// own init runs among the first (sys_amd64_unsafe.go); an import of
// syscall (its init and those of its dependencies) would put it after
// some ten others, which then fault on the binary's pages one by one.
func TestNoDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) != 2 || deps[0] != "unsafe" || !strings.HasSuffix(deps[1], "/prefault") {
		t.Errorf("package prefault depends on %q, want only unsafe", deps)
	}
}
