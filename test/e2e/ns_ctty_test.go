package e2e

import (
	"os"
	"strings"
	"testing"

	"github.com/crtools/crtools/test/harness"
)

// TestNSPidControllingTerminal: a tree that is a pid namespace of its own,
// where a pseudo-terminal pair of the tree is the controlling terminal of a
// session with a foreground job (testdata/ns_ctty.c), is dumped with
// -n pid, killed and restored into a new pid namespace. From inside the
// restored tree, the master must report the same session and foreground
// group (by the pids inside the namespace, which differ from crtools'
// view of the same tasks).
func TestNSPidControllingTerminal(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	orig, report, done := startInPidNS(t, "ns_ctty.c")
	t.Cleanup(func() { harness.KillTree(orig) })

	cycleReportTree(t, rp, orig, done, report, true, []string{"-n", "pid"}, nil, func(rlog string) {
		if b, _ := os.ReadFile(rlog); strings.Contains(string(b), "foreground process group") && strings.Contains(string(b), "not restored") {
			t.Errorf("restore warns that it did not restore the foreground group:\n%s", b)
		}
	})
}
