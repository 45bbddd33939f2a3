package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/crtools/crtools/engine/kernel"
	"github.com/crtools/crtools/test/harness"
)

func runCheck(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCheckLooksGood(t *testing.T) {
	harness.RequireRoot(t)
	harness.RequireKernel(t, "6.7", "PAGEMAP_SCAN and userfaultfd WP_ASYNC")
	code, out, errs := runCheck(t, "check")
	if code != 0 {
		t.Fatalf("crtools check exit %d\n%s%s", code, out, errs)
	}
	if !strings.HasSuffix(out, "Looks good.\n") {
		t.Errorf("output does not end with Looks good.:\n%s", out)
	}
	if !strings.Contains(out, "FEATURE") || !strings.Contains(out, "NEEDED BY") {
		t.Errorf("no table header:\n%s", out)
	}
	for _, f := range kernel.Features() {
		if !strings.Contains(out, f.Name) {
			t.Errorf("table lacks %s", f.Name)
		}
	}
	// Options before the command, as the man page allows.
	if code, out, errs := runCheck(t, "--ms", "check"); code != 0 || !strings.Contains(out, "Looks good.") {
		t.Errorf("crtools --ms check: exit %d\n%s%s", code, out, errs)
	}
}

func TestCheckJSON(t *testing.T) {
	harness.RequireRoot(t)
	code, out, errs := runCheck(t, "check", "--json", "--feature", "memfd", "--feature", "ptrace-seize")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	var rep kernel.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	if !rep.OK || len(rep.Features) != 2 || rep.Kernel == "" {
		t.Fatalf("report %+v", rep)
	}
}

func TestCheckUsage(t *testing.T) {
	code, _, errs := runCheck(t, "check", "--feature", "warp-drive")
	if code != 2 || !strings.Contains(errs, "warp-drive") {
		t.Errorf("unknown feature: exit %d, stderr %q; want 2 naming it", code, errs)
	}
	code, _, errs = runCheck(t, "check", "extra")
	if code != 2 {
		t.Errorf("extra argument: exit %d, stderr %q; want 2", code, errs)
	}
	code, out, _ := runCheck(t, "check", "--help")
	if code != 0 || !strings.Contains(out, "--ms") || !strings.Contains(out, "--json") || !strings.Contains(out, "clone3-set_tid") {
		t.Errorf("check --help: exit %d\n%s", code, out)
	}
}
