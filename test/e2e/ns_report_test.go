package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/test/harness"
)

// A report tree (testdata/ns_ctty.c, ns_own.c) is a tree whose init
// writes "PASS <counter> <token>" into its report file once ready and
// again on every SIGUSR1, after checking the state it set up from inside
// the tree; any other first word is a failure, with the reason.

// askReport waits for the report of the tree of init and returns its
// fields: PASS, the counter and the token. log is crtools' log to show on
// a failure ("" for none).
func askReport(t *testing.T, report string, init int, when, log string) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(report); err == nil {
			if !strings.HasPrefix(string(b), "PASS ") {
				l, _ := os.ReadFile(log)
				t.Fatalf("%s: the tree reports %s%s", when, b, l)
			}
			f := strings.Fields(string(b))
			if len(f) != 3 {
				t.Fatalf("%s: report %q, want 3 fields", when, b)
			}
			return f
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: init %d wrote no report in 10 s", when, init)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// freshReport asks the tree of init for a new report (SIGUSR1) and
// returns it.
func freshReport(t *testing.T, report string, init int, when, log string) []string {
	t.Helper()
	_ = os.Remove(report)
	if err := unix.Kill(init, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	return askReport(t, report, init, when, log)
}

// cycleReportTree dumps the report tree of init (started by the test;
// done receives its Wait) with the extra dump arguments, waits until it
// died, restores it with the extra restore arguments and checks that the
// restored tree reports PASS with the token it drew before the dump and a
// counter that is not behind, then ends it with SIGTERM, which it must
// survive to exit 0. newNS: the tree is restored into a new pid namespace,
// whose init is found among the test's new children; else it gets init's
// pid back. check, if not nil, looks at the restore's log first.
func cycleReportTree(t *testing.T, rp *harness.Reaper, init int, done <-chan error, report string, newNS bool, dumpArgs, restoreArgs []string, check func(rlog string)) {
	t.Helper()
	askReport(t, report, init, "before the dump", "") // the first report: ready
	before := freshReport(t, report, init, "before the dump", "")

	dir := filepath.Join(t.TempDir(), "images")
	log := filepath.Join(t.TempDir(), "dump.log")
	args := append([]string{"dump", "-t", fmt.Sprint(init), "-D", dir, "-v", "2", "-o", log}, dumpArgs...)
	if code, out := crtools(t, args...); code != 0 {
		b, _ := os.ReadFile(log)
		t.Fatalf("crtools %v: exit %d\n%s\n%s", args, code, out, b)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("dumped init %d did not die", init)
	}

	inits := nsInits(t)
	rlog := filepath.Join(t.TempDir(), "restore.log")
	args = append([]string{"restore", "-D", dir, "-d", "-v", "2", "-o", rlog}, restoreArgs...)
	if code, out := crtools(t, args...); code != 0 {
		b, _ := os.ReadFile(rlog)
		t.Fatalf("crtools %v: exit %d\n%s\n%s", args, code, out, b)
	}
	restored := init // pids restored as dumped
	if newNS {
		restored = 0
		for pid := range nsInits(t) {
			if !inits[pid] {
				restored = pid
			}
		}
	}
	if restored == 0 {
		b, _ := os.ReadFile(rlog)
		t.Fatalf("no restored init found among the test's children\n%s", b)
	}
	t.Cleanup(func() { harness.KillTree(restored) })
	if check != nil {
		check(rlog)
	}
	after := freshReport(t, report, restored, "restored", rlog)
	if after[2] != before[2] {
		t.Errorf("restored token %s, want %s drawn before the dump", after[2], before[2])
	}
	if a, b := atoiT(t, after[1]), atoiT(t, before[1]); a < b {
		t.Errorf("restored counter %d is behind the one before the dump %d", a, b)
	}

	if err := unix.Kill(restored, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ws, err := rp.WaitPid(restored, 10*time.Second)
	if err != nil {
		t.Fatalf("wait for restored init %d: %v", restored, err)
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("restored init exited with %v, want 0", ws)
	}
}
