package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/test/harness"
)

// pidTree is testdata/ns_pid.c: an init of its own pid namespace and its
// child, as crtools sees them (outer pids).
type pidTree struct {
	init, child int
	report      string
}

// ask has one process of the tree write "pid ppid counter token" and
// returns the fields.
func (p *pidTree) ask(t *testing.T, pid int, path string) []string {
	t.Helper()
	_ = os.Remove(path)
	if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
		t.Fatalf("signal %d: %v", pid, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil {
			f := strings.Fields(string(b))
			if len(f) != 4 {
				t.Fatalf("report %q of %d: want 4 fields", b, pid)
			}
			return f
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("process %d wrote no report in 5 s", pid)
	return nil
}

// check asks both processes and checks the pids and ppids they see inside
// their namespace: 1 (parent 0) and 2 (parent 1). It returns both reports.
func (p *pidTree) check(t *testing.T, when string) (initRep, childRep []string) {
	t.Helper()
	initRep = p.ask(t, p.init, p.report)
	childRep = p.ask(t, p.child, p.report+".child")
	if initRep[0] != "1" || initRep[1] != "0" {
		t.Errorf("%s: the init (outer pid %d) sees getpid %s getppid %s, want 1 0", when, p.init, initRep[0], initRep[1])
	}
	if childRep[0] != "2" || childRep[1] != "1" {
		t.Errorf("%s: the child (outer pid %d) sees getpid %s getppid %s, want 2 1", when, p.child, childRep[0], childRep[1])
	}
	return initRep, childRep
}

// childOf returns the only child of pid.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) != 1 {
		t.Fatalf("process %d has children %q, want one", pid, f)
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

// nsInits lists the children of the test process that are PID 1 of a pid
// namespace (NSpid ends in 1).
func nsInits(t *testing.T) map[int]bool {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]bool{}
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		var ppid int
		var nspid []string
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PPid:"); ok {
				ppid, _ = strconv.Atoi(strings.TrimSpace(v))
			}
			if v, ok := strings.CutPrefix(l, "NSpid:"); ok {
				nspid = strings.Fields(v)
			}
		}
		if ppid == self && len(nspid) == 2 && nspid[1] == "1" {
			out[pid] = true
		}
	}
	return out
}

// TestNSPidDumpRestore dumps a tree that is a pid namespace of its own
// (its init and a child) with -n pid and --leave-running, restores it while
// the original still runs (its outer PIDs in use, and the image PIDs 1 and
// 2 are crtools' own init and kthreadd), and checks that the restored init
// and child see getpid/getppid 1/0 and 2/1 as before, with the tokens they
// drew before the dump and counters that went on, in a new pid namespace.
func TestNSPidDumpRestore(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	init, report, done := startInPidNS(t, "ns_pid.c")
	orig := &pidTree{init: init, report: report}
	t.Cleanup(func() { _ = unix.Kill(orig.init, unix.SIGKILL) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(report); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("workload exited before it was ready: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("workload not ready in 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	orig.child = childOf(t, orig.init)
	initBefore, childBefore := orig.check(t, "before the dump")

	// The child is not the init of its namespace: refused.
	code, out := crtools(t, "dump", "-t", fmt.Sprint(orig.child), "-D", filepath.Join(t.TempDir(), "x"), "-n", "pid")
	if code != 1 || !strings.Contains(out, "is PID 2 in its pid namespace") {
		t.Errorf("dump -n pid of the child: exit %d, want 1 naming its inner PID 2:\n%s", code, out)
	}
	// Without -n pid: refused, naming the option.
	code, out = crtools(t, "dump", "-t", fmt.Sprint(orig.init), "-D", filepath.Join(t.TempDir(), "y"))
	if code != 1 || !strings.Contains(out, "-n pid") {
		t.Errorf("dump of a pid namespace without -n pid: exit %d, want 1 suggesting -n pid:\n%s", code, out)
	}

	dir := filepath.Join(t.TempDir(), "images")
	log := filepath.Join(t.TempDir(), "dump.log")
	code, out = crtools(t, "dump", "-t", fmt.Sprint(orig.init), "-D", dir, "-n", "pid", "-R", "-v", "2", "-o", log)
	if code != 0 {
		b, _ := os.ReadFile(log)
		t.Fatalf("crtools dump -n pid: exit %d\n%s\n%s", code, out, b)
	}
	// Images are named by the pids inside the namespace.
	for _, f := range []string{"core-1.img", "core-2.img", "mm-1.img", "mm-2.img", "pagemap-2.img"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("images: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("core-%d.img", orig.init))); err == nil {
		t.Errorf("images: core-%d.img is named by the outer pid", orig.init)
	}
	orig.check(t, "after the dump (-R)")

	before := nsInits(t)
	rlog := filepath.Join(t.TempDir(), "restore.log")
	code, out = crtools(t, "restore", "-D", dir, "-d", "-v", "2", "-o", rlog)
	if code != 0 {
		b, _ := os.ReadFile(rlog)
		t.Fatalf("crtools restore of a pid namespace while the original runs: exit %d\n%s\n%s", code, out, b)
	}
	var restored *pidTree
	for pid := range nsInits(t) {
		if !before[pid] {
			if restored != nil {
				t.Fatalf("two new pid namespace inits: %d and %d", restored.init, pid)
			}
			// The restored tree writes where the original did: ask one
			// tree at a time.
			restored = &pidTree{init: pid, report: report}
		}
	}
	if restored == nil {
		b, _ := os.ReadFile(rlog)
		t.Fatalf("no restored init found among the test's children\n%s", b)
	}
	t.Cleanup(func() { _ = unix.Kill(restored.init, unix.SIGKILL) })
	restored.child = childOf(t, restored.init)
	initAfter, childAfter := restored.check(t, "restored")
	if initAfter[3] != initBefore[3] || childAfter[3] != childBefore[3] {
		t.Errorf("restored tokens %s/%s, want %s/%s drawn before the dump", initAfter[3], childAfter[3], initBefore[3], childBefore[3])
	}
	if a, b := atoiT(t, initAfter[2]), atoiT(t, initBefore[2]); a < b {
		t.Errorf("restored init counter %d is behind the one before the dump %d", a, b)
	}
	if a, b := atoiT(t, childAfter[2]), atoiT(t, childBefore[2]); a < b {
		t.Errorf("restored child counter %d is behind the one before the dump %d", a, b)
	}
	rns, ons, self := nsOf(t, fmt.Sprint(restored.init), "pid"), nsOf(t, fmt.Sprint(orig.init), "pid"), nsOf(t, "self", "pid")
	if rns == ons || rns == self {
		t.Errorf("restored init is in pid namespace %s; the original's is %s, the test's %s", rns, ons, self)
	}
	if c := nsOf(t, fmt.Sprint(restored.child), "pid"); c != rns {
		t.Errorf("restored child is in pid namespace %s, its init in %s", c, rns)
	}
	// The original still runs, untouched.
	orig.check(t, "original after the restore")

	for _, tr := range []*pidTree{restored, orig} {
		if err := unix.Kill(tr.init, unix.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	ws, err := rp.WaitPid(restored.init, 10*time.Second)
	if err != nil {
		t.Fatalf("wait for restored init %d: %v", restored.init, err)
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("restored init exited with %v, want 0 (its child ended by SIGTERM and reaped)", ws)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("original init: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("original init %d did not end on SIGTERM", orig.init)
	}
}

// startInPidNS builds testdata/src and starts it as the init of a new pid
// namespace, in a session of its own, with a report file path as its
// argument. done receives the result of its Wait.
func startInPidNS(t *testing.T, src string) (pid int, report string, done <-chan error) {
	t.Helper()
	bin := buildTestdata(t, src)
	report = filepath.Join(t.TempDir(), "report")
	cmd := exec.Command(bin, report)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: unix.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s in a new pid namespace: %v", bin, err)
	}
	ch := make(chan error, 1)
	go func() { ch <- cmd.Wait() }()
	return cmd.Process.Pid, report, ch
}
