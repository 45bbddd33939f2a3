package main

import (
	"os/exec"
	"strconv"
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

// TestStartupBinary runs the built binary, whose start-up (package
// prefault's init, prefault.Heap before a job) tests calling run in
// process skip: the informational commands, a usage error and a job that
// fails keep their output and exit codes.
func TestStartupBinary(t *testing.T) {
	bin := crtoolsBin(t)
	dir := t.TempDir()
	// A PID that existed a moment ago: a fresh one is not reused so soon.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	dead := strconv.Itoa(gone.Process.Pid)
	for _, c := range []struct {
		args       []string
		code       int
		stdout     string // prefix
		stderrHave string
	}{
		{[]string{"--version"}, exitOK, "Version: ", ""},
		{[]string{"-V"}, exitOK, "Version: ", ""},
		{[]string{"--help"}, exitOK, "crtools", ""},
		{[]string{"dump", "--help"}, exitOK, "Checkpoint the process tree", ""},
		{[]string{"dump", "--bogus"}, exitUsage, "", "crtools: unknown flag: --bogus\nRun 'crtools dump --help'.\n"},
		{[]string{"dump", "-t", dead, "-D", dir + "/img"}, exitFailed, "", "crtools: checkpoint \"dump-" + dead + "\" failed: step resolve-target: pid " + dead + " does not exist; rolled back\n"},
		{[]string{"restore", "-D", dir + "/none"}, exitFailed, "", "failed: step pick-images: images directory: stat "},
	} {
		var stdout, stderr strings.Builder
		cmd := exec.Command(bin, c.args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if code != c.code || !strings.HasPrefix(stdout.String(), c.stdout) || !strings.Contains(stderr.String(), c.stderrHave) {
			t.Errorf("%v: exit %d, stdout %.80q, stderr %.300q; want exit %d, stdout starting %q, stderr with %q",
				c.args, code, stdout.String(), stderr.String(), c.code, c.stdout, c.stderrHave)
		}
	}
}
