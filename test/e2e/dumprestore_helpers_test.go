// Package e2e holds crtools' end-to-end dump and restore tests: real
// workloads (test/workloads) dumped, killed, restored and verified with the
// harness's ready/verify protocol.
package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/test/harness"
)

// The tests drive crtools through its command line, as a user does: the
// workload is a child of the test process, and a tracer inside the test
// process would race with os/exec's wait for that child (wait4 reports a
// traced child's stops to every thread of the tracer's process).

// buildTestdata builds the C source testdata/name of this package (the
// tests' own workloads, next to the shared ones in test/workloads) with
// harness.BuildC and returns the binary.
func buildTestdata(t testing.TB, name string, extraFlags ...string) string {
	t.Helper()
	src, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return harness.BuildC(t, src, extraFlags...)
}

// crtools runs the crtools binary with args and returns its exit code and
// combined output.
func crtools(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(harness.BuildCrtools(t), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("run crtools %v: %v", args, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(crtoolsTimeout):
		// A hung crtools fails the test now, with where it hangs,
		// instead of holding the whole suite until go test's timeout.
		stacks := kernelStacks(cmd.Process.Pid)
		_ = cmd.Process.Signal(unix.SIGQUIT) // the Go runtime prints every goroutine
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		t.Fatalf("crtools %v still running after %v; its threads in the kernel:\n%s\noutput and goroutines:\n%s",
			args, crtoolsTimeout, stacks, out.String())
	}
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("run crtools %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return code, out.String()
}

// crtoolsTimeout bounds one crtools run of a test: the slowest take a few
// seconds on a loaded machine.
const crtoolsTimeout = 2 * time.Minute

// kernelStacks describes where each thread of pid waits in the kernel.
func kernelStacks(pid int) string {
	var b strings.Builder
	tids, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, d := range tids {
		stat, _ := os.ReadFile(filepath.Join(d, "stat"))
		wchan, _ := os.ReadFile(filepath.Join(d, "wchan"))
		stack, _ := os.ReadFile(filepath.Join(d, "stack"))
		fmt.Fprintf(&b, "%s wchan=%s\n%s", strings.TrimSpace(string(stat)), wchan, stack)
	}
	return b.String()
}

// dumpKill dumps the workload into a new images directory and kills it
// (the man page's default), then waits until the workload is gone.
func dumpKill(t *testing.T, w *harness.Workload) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "images")
	harness.BuildCrtools(t) // the first call of a test binary builds it: not dump time
	start := time.Now()
	code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", dir, "-v", "2", "-o", filepath.Join(w.Dir, "dump.log"))
	if code != 0 {
		t.Fatalf("crtools dump -t %d: exit %d\n%s\n%s", w.Pid, code, out, readLog(w, "dump.log"))
	}
	took := time.Since(start)
	t.Logf("dump of %d took %v", w.Pid, took)
	checkNoReflection(t, w, "dump.log")
	if took > 5*time.Second {
		// Rare slow dumps: keep the evidence (the log goes with the
		// test's temporary directory).
		t.Logf("slow dump, its log:\n%s", readLog(w, "dump.log"))
	}
	select {
	case <-w.Exited():
	case <-time.After(10 * time.Second):
		t.Fatalf("dumped workload %d did not die", w.Pid)
	}
	return dir
}

func readLog(w *harness.Workload, name string) string {
	b, _ := os.ReadFile(filepath.Join(w.Dir, name))
	return string(b)
}

// restoreDetached runs crtools restore -d: crtools returns once the task
// runs, and the restored task becomes the test's child (the test process
// is a child subreaper).
func restoreDetached(t *testing.T, w *harness.Workload, dir string) {
	t.Helper()
	start := time.Now()
	code, out := crtools(t, "restore", "-D", dir, "-d", "-v", "2", "-o", filepath.Join(w.Dir, "restore.log"))
	if code != 0 {
		t.Fatalf("crtools restore -D %s -d: exit %d\n%s\n%s", dir, code, out, readLog(w, "restore.log"))
	}
	t.Logf("restore of %d took %v", w.Pid, time.Since(start))
	checkNoReflection(t, w, "restore.log")
}

// verifyRestored checks the restored workload twice (state intact, same
// run, progress), then has it verify and exit.
func verifyRestored(t *testing.T, w *harness.Workload) {
	t.Helper()
	verifyRestoredPrep(t, w, nil)
}

// verifyRestoredPrep is verifyRestored with prep (if not nil) run before
// each verify signal.
func verifyRestoredPrep(t *testing.T, w *harness.Workload, prep func()) {
	t.Helper()
	if prep == nil {
		prep = func() {}
	}
	prep()
	if err := w.Verify(10 * time.Second); err != nil {
		t.Fatalf("after restore: %v\n%s", err, readLog(w, "restore.log"))
	}
	time.Sleep(20 * time.Millisecond)
	prep()
	if err := w.Verify(10 * time.Second); err != nil {
		t.Fatalf("after restore, second verify: %v", err)
	}
	prep()
	if err := w.VerifyAndExit(10 * time.Second); err != nil {
		t.Fatalf("after restore, verify and exit: %v", err)
	}
}

// dumpedWorkload starts bin as a workload under the test's subreaper,
// checks it is ready and sound, dumps and kills it: the images directory
// and the workload, whose PID restore is to bring back.
func dumpedWorkload(t *testing.T, bin string, args ...string) (*harness.Reaper, *harness.Workload, string) {
	t.Helper()
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	w := harness.StartWorkload(t, bin, args...)
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	dir := dumpKill(t, w)
	rp.Forget(w.Pid)
	return rp, w, dir
}

// waitWorkloadExit waits for the restored workload w, whose parent is now
// the test (the subreaper rp), to exit with status 0.
func waitWorkloadExit(t *testing.T, rp *harness.Reaper, w *harness.Workload) {
	t.Helper()
	ws, err := rp.WaitPid(w.Pid, 10*time.Second)
	if err != nil {
		t.Fatalf("wait for restored workload %d: %v", w.Pid, err)
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("restored workload exited with %v, want 0\n%s", ws, w.Output())
	}
}

// waitInSyscall waits until pid sleeps inside syscall nr (/proc/PID/syscall).
// A workload that checks a flag and then calls pause() loses a signal sent
// between the two, whoever runs it (sleepers.c says so); tests signal such
// a workload only once it is in pause().
func waitInSyscall(t *testing.T, pid, nr int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
		f := strings.Fields(string(b))
		if err == nil && len(f) > 0 && f[0] == fmt.Sprint(nr) {
			if st, err := procStat(pid); err == nil && st.state == "S" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d not asleep in syscall %d after 10s: %q %v", pid, nr, b, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// dumpRestoreVerify runs the whole cycle on one workload: ready, verify,
// dump+kill, restore -d with the same PID, verify twice, verify-and-exit,
// and the exit status collected by the test (the restored task's new
// parent).
func dumpRestoreVerify(t *testing.T, bin string, args ...string) {
	t.Helper()
	dumpRestoreVerifyPrep(t, bin, nil, args...)
}

// dumpRestoreVerifyPrep is dumpRestoreVerify with prep (if not nil) run
// before each verify signal.
func dumpRestoreVerifyPrep(t *testing.T, bin string, prep func(w *harness.Workload), args ...string) {
	t.Helper()
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	w := harness.StartWorkload(t, bin, args...)
	before := func() {}
	if prep != nil {
		before = func() { prep(w) }
	}
	w.MustReady(10 * time.Second)
	before()
	w.MustVerify(10 * time.Second)
	dir := dumpKill(t, w)
	rp.Forget(w.Pid)
	restoreDetached(t, w, dir)
	if st, err := procStat(w.Pid); err != nil {
		t.Fatalf("restored pid %d: %v", w.Pid, err)
	} else if st.ppid != os.Getpid() {
		t.Errorf("restored pid %d has parent %d, want the test process %d (subreaper)", w.Pid, st.ppid, os.Getpid())
	}
	verifyRestoredPrep(t, w, before)
	waitWorkloadExit(t, rp, w)
}

type procStatInfo struct {
	state string
	ppid  int
}

func procStat(pid int) (procStatInfo, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStatInfo{}, err
	}
	s := string(b)
	var st procStatInfo
	_, err = fmt.Sscan(s[strings.LastIndexByte(s, ')')+2:], &st.state, &st.ppid)
	return st, err
}

// tracerOf returns the TracerPid of pid (0: not traced).
func tracerOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "TracerPid:"); ok {
			var n int
			fmt.Sscan(strings.TrimSpace(v), &n)
			return n
		}
	}
	return -1
}
