package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/ptrace"
	"github.com/crtools/crtools/test/harness"
)

// runExec runs the crtools binary with args and returns exit code, stdout
// and stderr. A separate process, not run() in-process: a tracer must be
// the only waiter for its tracees, and the harness waits for its workloads
// from another goroutine of this process (see engine/ptrace's package doc).
func runExec(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(harness.BuildCrtools(t), args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run crtools: %v", err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// mustExec runs crtools exec and returns its one output line.
func mustExec(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := runExec(t, args...)
	if code != 0 {
		t.Fatalf("crtools %s: exit %d, stderr %q", strings.Join(args, " "), code, errs)
	}
	return strings.TrimSuffix(out, "\n")
}

// procState is jobProcState for a pid that must exist.
func procState(t *testing.T, pid int) byte {
	t.Helper()
	st := jobProcState(pid)
	if st == "" {
		t.Fatalf("pid %d: no state in /proc/%d/stat", pid, pid)
	}
	return st[0]
}

// waitProcState is waitJobState for one state.
func waitProcState(t *testing.T, pid int, want byte) {
	t.Helper()
	waitJobState(t, pid, fmt.Sprintf("pid %d", pid), string(want))
}

func startSleep(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	waitProcState(t, cmd.Process.Pid, 'S')
	return cmd.Process.Pid
}

// TestExecLiveWorkload is the man page's exec on a live workload: getpid,
// open '&/path' 2, close N; the workload verifies itself before and after
// (state intact, still progressing) and keeps its memory map.
func TestExecLiveWorkload(t *testing.T) {
	harness.RequireRoot(t)
	w := harness.StartWorkload(t, harness.BuildC(t, "simple.c"))
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	pid := strconv.Itoa(w.Pid)
	maps, err := os.ReadFile("/proc/" + pid + "/maps")
	if err != nil {
		t.Fatal(err)
	}

	if got := mustExec(t, "exec", "-t", pid, "getpid"); got != pid {
		t.Errorf("exec getpid printed %q, want %q", got, pid)
	}
	path := filepath.Join(t.TempDir(), "opened by exec")
	if err := os.WriteFile(path, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := mustExec(t, "exec", "-t", pid, "open", "&"+path, "2")
	fd, err := strconv.Atoi(out)
	if err != nil || fd < 0 {
		t.Fatalf("exec open printed %q, want a descriptor", out)
	}
	fdPath := fmt.Sprintf("/proc/%d/fd/%d", w.Pid, fd)
	if link, err := os.Readlink(fdPath); err != nil || link != path {
		t.Errorf("fd %d of the workload: %q, %v; want %q", fd, link, err, path)
	}
	fdinfo, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", w.Pid, fd))
	if err != nil || !strings.Contains(string(fdinfo), "flags:\t0100002") {
		// O_RDWR|O_LARGEFILE, as open(2) from a 64-bit task sets it.
		t.Errorf("fdinfo of fd %d: %q, %v; want O_RDWR", fd, fdinfo, err)
	}
	w.MustVerify(10 * time.Second)

	if got := mustExec(t, "exec", "-t", pid, "close", strconv.Itoa(fd)); got != "0" {
		t.Errorf("exec close printed %q, want 0", got)
	}
	if _, err := os.Lstat(fdPath); !os.IsNotExist(err) {
		t.Errorf("fd %d still there after exec close: %v", fd, err)
	}
	if got := mustExec(t, "exec", "-t", pid, "close", strconv.Itoa(fd)); got != "-9 (EBADF: bad file descriptor)" {
		t.Errorf("second exec close printed %q, want the EBADF line", got)
	}
	after, err := os.ReadFile("/proc/" + pid + "/maps")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(maps, after) {
		t.Errorf("memory map changed by exec (scratch left behind?):\nbefore:\n%s\nafter:\n%s", maps, after)
	}
	w.MustVerify(10 * time.Second)
}

// TestExecNumbersAndStopped: negative and hex arguments reach the syscall
// (mmap with fd -1), and a task stopped by job control stays stopped.
func TestExecNumbersAndStopped(t *testing.T) {
	harness.RequireRoot(t)
	pid := startSleep(t)
	p := strconv.Itoa(pid)
	out := mustExec(t, "exec", "-t", p, "mmap", "0", "0x2000", "3", "0x22", "-1", "0")
	addr, err := strconv.ParseInt(out, 10, 64)
	if err != nil || addr <= 0 {
		t.Fatalf("exec mmap printed %q, want an address", out)
	}
	maps, _ := os.ReadFile("/proc/" + p + "/maps")
	want := fmt.Sprintf("%x-%x rw-p", addr, addr+0x2000)
	if !strings.Contains(string(maps), want) {
		t.Errorf("no mapping %q after exec mmap:\n%s", want, maps)
	}
	if got := mustExec(t, "exec", "-t", p, "munmap", out, "020000"); got != "0" {
		t.Errorf("exec munmap printed %q", got)
	}
	if maps, _ := os.ReadFile("/proc/" + p + "/maps"); strings.Contains(string(maps), want) {
		t.Errorf("mapping still there after munmap")
	}
	waitProcState(t, pid, 'S')

	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitProcState(t, pid, 'T')
	if got := mustExec(t, "exec", "-t", p, "getppid"); got != strconv.Itoa(os.Getpid()) {
		t.Errorf("exec getppid printed %q, want %d", got, os.Getpid())
	}
	time.Sleep(50 * time.Millisecond)
	if s := procState(t, pid); s != 'T' {
		t.Errorf("stopped task is in state %c after exec, want T", s)
	}
	if err := unix.Kill(pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitProcState(t, pid, 'S')
}

// kernelThread finds a kernel thread (PF_KTHREAD) in /proc.
func kernelThread(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if flags, err := strconv.ParseUint(f[6], 10, 64); err == nil && flags&0x00200000 != 0 {
			return pid
		}
	}
	t.Fatalf("no kernel thread visible in /proc (CI runs in the host PID namespace)")
	return 0
}

func TestExecErrors(t *testing.T) {
	harness.RequireRoot(t)
	pid := startSleep(t)
	p := strconv.Itoa(pid)

	// A task traced by someone else (our own tracer here).
	traced := startSleep(t)
	tr := ptrace.NewTracer()
	defer tr.Close()
	if err := tr.Do(func() error { return ptrace.Seize(traced, 0) }); err != nil {
		t.Fatal(err)
	}

	// A zombie: our child that nobody reaps until the test ends.
	zombie := exec.Command("true")
	if err := zombie.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = zombie.Wait() })
	waitProcState(t, zombie.Process.Pid, 'Z')

	for _, c := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"missing pid", []string{"exec", "-t", "4194000", "getpid"}, 1, "pid 4194000 does not exist"},
		{"kernel thread", []string{"exec", "-t", strconv.Itoa(kernelThread(t)), "getpid"}, 1, "is a kernel thread"},
		{"traced", []string{"exec", "-t", strconv.Itoa(traced), "getpid"}, 1,
			fmt.Sprintf("is already traced by pid %d", tr.Tid())},
		{"zombie", []string{"exec", "-t", strconv.Itoa(zombie.Process.Pid), "getpid"}, 1, "is a zombie"},
		{"unknown syscall", []string{"exec", "-t", p, "no_such_call"}, 2, `unknown system call "no_such_call"`},
		{"bad number", []string{"exec", "-t", p, "close", "12abc"}, 2, `argument "12abc" is neither a number nor an &string`},
		{"too many", []string{"exec", "-t", p, "getpid", "1", "2", "3", "4", "5", "6", "7"}, 2, "at most 6"},
		{"no pid", []string{"exec", "getpid"}, 2, "exec needs -t/--tree PID"},
		{"no syscall", []string{"exec", "-t", p}, 2, "exec needs a SYSCALL name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, errs := runExec(t, c.args...)
			if code != c.code || out != "" || !strings.Contains(errs, c.msg) {
				t.Errorf("crtools %s: exit %d, stdout %q, stderr %q; want exit %d and %q",
					strings.Join(c.args, " "), code, out, errs, c.code, c.msg)
			}
			if lines := strings.Count(strings.TrimSpace(errs), "\n"); c.code == 1 && lines != 0 {
				t.Errorf("error is %d lines, want one: %q", lines+1, errs)
			}
		})
	}
	// crtools itself: sh replaces itself with crtools, keeping its pid.
	self := exec.Command("sh", "-c", `exec "$0" exec -t $$ getpid`, harness.BuildCrtools(t))
	out, err := self.CombinedOutput()
	if code := self.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), "is crtools itself") {
		t.Errorf("crtools exec on itself: exit %d (%v), output %q; want exit 1, \"is crtools itself\"", code, err, out)
	}

	// Nothing changed: both tasks still sleep; the traced one is still
	// traced by us.
	waitProcState(t, pid, 'S')
	st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", traced))
	if !strings.Contains(string(st), fmt.Sprintf("TracerPid:\t%d\n", tr.Tid())) {
		t.Errorf("traced task lost its tracer")
	}
}

func TestParseExecArg(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
		str  string
		bad  bool
	}{
		{in: "0", want: 0}, {in: "42", want: 42}, {in: "0x1F", want: 31}, {in: "010", want: 8},
		{in: "-1", want: ^uint64(0)}, {in: "-0x10", want: ^uint64(0) - 15}, {in: "+7", want: 7},
		{in: "0xffffffffffffffff", want: ^uint64(0)}, {in: "-9223372036854775808", want: 1 << 63},
		{in: "&/foo/bar", str: "/foo/bar"}, {in: "&", str: ""},
		{in: "", bad: true}, {in: "-", bad: true}, {in: "08", bad: true}, {in: "1_000", bad: true},
		{in: "0x", bad: true}, {in: "--1", bad: true}, {in: "18446744073709551616", bad: true},
		{in: "-9223372036854775809", bad: true}, {in: "abc", bad: true},
	} {
		a, err := parseExecArg(c.in)
		switch {
		case c.bad:
			if err == nil {
				t.Errorf("parseExecArg(%q) = %+v, want an error", c.in, a)
			}
		case err != nil:
			t.Errorf("parseExecArg(%q): %v", c.in, err)
		case c.str != "" || strings.HasPrefix(c.in, "&"):
			if a.Str == nil || *a.Str != c.str {
				t.Errorf("parseExecArg(%q) = %+v, want string %q", c.in, a, c.str)
			}
		case uint64(a.Num) != c.want || a.Str != nil:
			t.Errorf("parseExecArg(%q) = %#x, want %#x", c.in, a.Num, c.want)
		}
	}
}

// TestExecBlockedSleepers: exec into tasks blocked in nanosleep, select,
// pause and sigsuspend; each verifies afterwards that its call went on as
// if nothing happened (no early or lost wake-up, sigsuspend's mask back).
func TestExecBlockedSleepers(t *testing.T) {
	harness.RequireRoot(t)
	bin := harness.BuildC(t, "sleepers.c")
	for _, mode := range []string{"nanosleep", "select", "pause", "sigsuspend"} {
		t.Run(mode, func(t *testing.T) {
			w := harness.StartWorkload(t, bin, mode)
			w.MustReady(10 * time.Second)
			w.MustVerify(10 * time.Second)
			waitProcState(t, w.Pid, 'S')
			for range 3 {
				if got := mustExec(t, "exec", "-t", strconv.Itoa(w.Pid), "getpid"); got != strconv.Itoa(w.Pid) {
					t.Errorf("exec getpid printed %q", got)
				}
				time.Sleep(20 * time.Millisecond)
			}
			w.MustVerify(10 * time.Second)
			w.MustVerify(10 * time.Second)
		})
	}
}
