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

	// ask waits for the init's report and returns its fields: PASS, the
	// counter and the token. log is crtools' log to show on a failure.
	ask := func(init int, when, log string) []string {
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
	before := ask(orig, "before the dump", "") // the first report: ready
	_ = os.Remove(report)
	if err := unix.Kill(orig, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	before = ask(orig, "before the dump", "")

	dir := filepath.Join(t.TempDir(), "images")
	log := filepath.Join(t.TempDir(), "dump.log")
	if code, out := crtools(t, "dump", "-t", fmt.Sprint(orig), "-D", dir, "-n", "pid", "-v", "2", "-o", log); code != 0 {
		b, _ := os.ReadFile(log)
		t.Fatalf("crtools dump -n pid: exit %d\n%s\n%s", code, out, b)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("dumped init %d did not die", orig)
	}

	inits := nsInits(t)
	rlog := filepath.Join(t.TempDir(), "restore.log")
	if code, out := crtools(t, "restore", "-D", dir, "-d", "-v", "2", "-o", rlog); code != 0 {
		b, _ := os.ReadFile(rlog)
		t.Fatalf("crtools restore: exit %d\n%s\n%s", code, out, b)
	}
	restored := 0
	for pid := range nsInits(t) {
		if !inits[pid] {
			restored = pid
		}
	}
	if restored == 0 {
		b, _ := os.ReadFile(rlog)
		t.Fatalf("no restored init found among the test's children\n%s", b)
	}
	t.Cleanup(func() { harness.KillTree(restored) })
	if b, _ := os.ReadFile(rlog); strings.Contains(string(b), "foreground process group") && strings.Contains(string(b), "not restored") {
		t.Errorf("restore warns that it did not restore the foreground group:\n%s", b)
	}
	_ = os.Remove(report)
	if err := unix.Kill(restored, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	after := ask(restored, "restored", rlog)
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
