package main

import (
	"os/exec"
	"strings"
	"testing"
)

// notLinked are standard packages crtools must not link: every linked
// package runs its init and adds to the pages touched at start-up, which
// every command (a dump, a restore) pays for. Each had a lighter
// replacement that is equally correct where crtools used it.
var notLinked = map[string]string{
	"crypto/rand":   "the dump run id comes from math/rand, seeded from the kernel at start-up (engine/dump runID)",
	"crypto/sha256": "the restore lock name hashes the path with FNV-1a (restoreLockName)",
}

// TestStartupDeps checks that the crtools binary links none of notLinked,
// nor anything else of the crypto tree they pulled in.
func TestStartupDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list -deps gave %d packages, expected the whole dependency list:\n%s", len(deps), out)
	}
	var crypto []string
	for _, p := range deps {
		if why, ok := notLinked[p]; ok {
			t.Errorf("crtools links %s; it should not: %s", p, why)
		}
		if p == "crypto" || strings.HasPrefix(p, "crypto/") {
			crypto = append(crypto, p)
		}
	}
	if len(crypto) > 0 {
		t.Errorf("crtools links %d crypto packages (%s ...): their inits cost every command at start-up; find who imports them with go list -deps -f '{{.ImportPath}} {{.Imports}}'", len(crypto), strings.Join(crypto[:min(3, len(crypto))], " "))
	}
}
