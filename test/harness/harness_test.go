package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestKernelAtLeast(t *testing.T) {
	cases := []struct {
		rel, min string
		want     bool
		bad      bool
	}{
		{"6.18.44-fc-v782", "6.7", true, false},
		{"6.7.0", "6.7", true, false},
		{"6.6.99-generic", "6.7", false, false},
		{"5.15", "6.7", false, false},
		{"10.1", "6.7", true, false},
		{"6.7-rc1", "6.7.1", false, false},
		{"banana", "6.7", false, true},
		{"6", "6.7", false, true},
	}
	for _, c := range cases {
		got, err := KernelAtLeast(c.rel, c.min)
		if (err != nil) != c.bad {
			t.Errorf("KernelAtLeast(%q, %q) error %v, want error %v", c.rel, c.min, err, c.bad)
			continue
		}
		if got != c.want {
			t.Errorf("KernelAtLeast(%q, %q) = %v, want %v", c.rel, c.min, got, c.want)
		}
	}
}

func TestParseResult(t *testing.T) {
	r, err := ParseResult("PASS token=00ff progress=12\n")
	if err != nil || !r.Pass || r.Token != "00ff" || r.Progress != 12 {
		t.Fatalf("PASS line: %+v, %v", r, err)
	}
	r, err = ParseResult("FAIL line 3: heap byte 7 is 0x1\n")
	if err != nil || r.Pass || r.Reason != "line 3: heap byte 7 is 0x1" {
		t.Fatalf("FAIL line: %+v, %v", r, err)
	}
	for _, bad := range []string{"", "OK", "PASS", "PASS token=1 progress=x"} {
		if _, err := ParseResult(bad); err == nil {
			t.Errorf("ParseResult(%q) accepted", bad)
		}
	}
}

// TestRequireFailsInCI runs a helper test in a child process with CI set
// and checks that a missing requirement fails it rather than skipping.
func TestRequireFailsInCI(t *testing.T) {
	if os.Getenv("HARNESS_WANT_HELPER") == "1" {
		RequireKernel(t, "99.0", "a feature of the far future")
		return
	}
	for _, ci := range []string{"true", ""} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRequireFailsInCI$", "-test.v")
		cmd.Env = append(os.Environ(), "HARNESS_WANT_HELPER=1", "CI="+ci)
		out, err := cmd.CombinedOutput()
		s := string(out)
		if ci != "" {
			if err == nil || !strings.Contains(s, "--- FAIL") || !strings.Contains(s, "far future") {
				t.Errorf("with CI=%q: want a failure naming the reason, got %v\n%s", ci, err, s)
			}
		} else if err != nil || !strings.Contains(s, "--- SKIP") || !strings.Contains(s, "far future") {
			t.Errorf("without CI: want a skip naming the reason, got %v\n%s", err, s)
		}
	}
}

func TestBuildCCaches(t *testing.T) {
	a := BuildC(t, "simple.c")
	b := BuildC(t, "simple.c")
	if a == b {
		t.Fatalf("two builds share the path %s; each test should get its own", a)
	}
	sa, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(sa, sb) && sa.Size() != sb.Size() {
		t.Errorf("cached builds differ: %s (%d bytes), %s (%d bytes)", a, sa.Size(), b, sb.Size())
	}
	if sa.Mode()&0o111 == 0 {
		t.Errorf("%s is not executable", a)
	}
}

// TestSimpleProtocol runs simple.c through the whole protocol and checks
// that the harness notices a re-run program.
func TestSimpleProtocol(t *testing.T) {
	Subreaper()
	bin := BuildC(t, "simple.c")
	w := StartWorkload(t, bin)
	w.MustReady(10 * time.Second)
	w.MustVerify(5 * time.Second)
	first := w.Progress()
	time.Sleep(20 * time.Millisecond)
	w.MustVerify(5 * time.Second)
	if w.Progress() <= first {
		t.Fatalf("progress %d after %d", w.Progress(), first)
	}
	// Pretend the program was started again: the harness must refuse.
	f, err := os.OpenFile(w.StartsPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("1 0000000000000000\n")
	f.Close()
	if err := w.Verify(5 * time.Second); err == nil || !strings.Contains(err.Error(), "re-run") {
		t.Fatalf("Verify after a second start: %v, want a re-run error", err)
	}
}

// TestReaperReapsOrphans makes a grandchild that is re-parented to the
// test process when its parent exits, kills it and checks that the reaper
// reaps it (and hands its status to WaitPid), while a process started by
// os/exec keeps its status for cmd.Wait.
func TestReaperReapsOrphans(t *testing.T) {
	r := Subreaper()
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	// sh starts a background sleep and exits: the sleep is orphaned.
	cmd := exec.Command("sh", "-c", "sleep 60 & echo $! > "+pidFile)
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmtSscan(strings.TrimSpace(string(b)), &pid); err != nil {
		t.Fatal(err)
	}
	if ppid := parentOf(t, pid); ppid != os.Getpid() {
		t.Fatalf("orphan %d has parent %d, want the test process %d", pid, ppid, os.Getpid())
	}
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st, err := r.WaitPid(pid, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Signaled() || st.Signal() != unix.SIGKILL {
		t.Fatalf("status %v, want killed by SIGKILL", st)
	}

	// An orphan nobody waits for is reaped in the background.
	cmd = exec.Command("sh", "-c", "sleep 60 & echo $! > "+pidFile)
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(pidFile)
	fmtSscan(strings.TrimSpace(string(b)), &pid)
	unix.Kill(pid, unix.SIGKILL)
	if err := waitGone(pid, 5*time.Second); err != nil {
		t.Fatalf("unwaited orphan: %v", err)
	}

	// A child of os/exec that exits keeps its status for Wait, however
	// long the test takes to call it.
	c := exec.Command("sh", "-c", "exit 7")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * reaperGrace)
	err = c.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
		t.Fatalf("cmd.Wait after the reaper ran: %v, want exit status 7", err)
	}
}

func parentOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", itoa(pid), "status"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			var n int
			fmtSscan(strings.TrimSpace(v), &n)
			return n
		}
	}
	t.Fatalf("no PPid in status of %d", pid)
	return 0
}

// TestVerifyRefusesForeignPid checks that a workload whose PID now runs
// something else is reported, not signalled.
func TestVerifyRefusesForeignPid(t *testing.T) {
	Subreaper()
	w := StartWorkload(t, BuildC(t, "simple.c"))
	w.MustReady(10 * time.Second)
	other := exec.Command("sleep", "30")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { other.Process.Kill(); other.Wait() }()
	w.Kill()
	<-w.Exited()
	real := w.Pid
	w.Pid = other.Process.Pid // as if the PID had been reused
	defer func() { w.Pid = real }()
	if err := w.Verify(time.Second); err == nil || !strings.Contains(err.Error(), "not running it") {
		t.Fatalf("Verify against a foreign pid: %v", err)
	}
	w.Kill()
	if st, err := procState(other.Process.Pid); err != nil || st == 'Z' {
		t.Fatalf("Kill hit a process that is not the workload (state %q, %v)", st, err)
	}
}

// TestWorkloadGetsOnlyStdio checks that a workload starts with fds 0-2
// only, even when the test process inherited a descriptor without
// close-on-exec.
func TestWorkloadGetsOnlyStdio(t *testing.T) {
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil { // no O_CLOEXEC: like a leaked fd
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	closeOnExecInherited()
	out, err := exec.Command("ls", "/proc/self/fd").Output()
	if err != nil {
		t.Fatal(err)
	}
	// ls itself opens one descriptor for the directory it lists.
	fds := strings.Fields(string(out))
	if len(fds) > 4 {
		t.Fatalf("child has descriptors %v, want 0 1 2 (and ls's own)", fds)
	}
}

func TestBuildCrtoolsOnce(t *testing.T) {
	a := BuildCrtools(t)
	b := BuildCrtools(t)
	if a != b {
		t.Fatalf("BuildCrtools built twice: %s, %s", a, b)
	}
	out, err := exec.Command(a, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Version:") {
		t.Fatalf("crtools --version: %v\n%s", err, out)
	}
}

func TestBuildGoWorkload(t *testing.T) {
	bin := BuildGo(t, "gowork")
	st, err := os.Stat(bin)
	if err != nil || st.Mode()&0o111 == 0 {
		t.Fatalf("BuildGo(gowork) = %s: %v", bin, err)
	}
	// Without the protocol's environment the workload refuses to run.
	out, err := exec.Command(bin).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "CRT_READY") {
		t.Fatalf("gowork without CRT_READY: %v\n%s", err, out)
	}
}

// TestReaperLeavesTracedChild traces a child from a locked thread (as the
// engine's tracer does), lets it exit, and checks the reaper leaves its
// zombie to the tracer.
func TestReaperLeavesTracedChild(t *testing.T) {
	Subreaper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		// Started without os/exec's pidfd: only tracing protects it.
		// sleep gets no signal, so it exits (and stays a zombie) without
		// the tracer's help.
		pid, err := syscall.ForkExec("/bin/sleep", []string{"sleep", "0.2"}, &syscall.ProcAttr{})
		if err != nil {
			done <- err
			return
		}
		if err := unix.PtraceSeize(pid); err != nil {
			done <- err
			return
		}
		// Well past the reaper's grace period before we wait.
		time.Sleep(0.2e9 + 5*reaperGrace)
		var ws unix.WaitStatus
		for {
			got, err := unix.Wait4(pid, &ws, unix.WALL, nil)
			if err != nil || got != pid {
				done <- fmt.Errorf("tracer's wait4: got %d, %v (the reaper took the child)", got, err)
				return
			}
			if !ws.Stopped() {
				break
			}
			// A signal-delivery stop (SIGCHLD from sleep): pass it on.
			sig := ws.StopSignal()
			if sig == unix.SIGTRAP {
				sig = 0
			}
			if err := unix.PtraceCont(pid, int(sig)); err != nil {
				done <- err
				return
			}
		}
		if !ws.Exited() || ws.ExitStatus() != 0 {
			done <- fmt.Errorf("status %v, want exit 0", ws)
			return
		}
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
