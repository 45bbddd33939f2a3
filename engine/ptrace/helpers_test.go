package ptrace

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// binDir holds the C test workloads, built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	// Orphans of killed test children must not wait for a slow PID 1.
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	dir, err := os.MkdirTemp("", "crtools-ptrace-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := func() int {
		defer os.RemoveAll(dir)
		for _, name := range []string{"counter", "blocker", "leaderexit"} {
			out, err := exec.Command("gcc", "-O1", "-Wall", "-o", filepath.Join(dir, name), filepath.Join("testdata", name+".c")).CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "build testdata/%s.c (gcc is needed for these tests): %v\n%s", name, err, out)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// requireRoot fails (never skips) without root: CI runs as root and every
// test here needs to trace processes.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("ptrace tests need root (CI runs them as root)")
	}
}

// startSleep starts `sleep 1000` untraced and kills it at the end of the test.
func startSleep(t testing.TB) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sleep: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// Let it reach its nanosleep.
	waitState(t, cmd.Process.Pid, 'S')
	return cmd
}

// workload is a C test program whose stdout lines arrive on lines.
type workload struct {
	cmd   *exec.Cmd
	pid   int
	stdin io.WriteCloser
	lines chan string
	ready []string // fields of the "ready" line
}

// startWorkload starts testdata program name with args and waits for its
// "ready" line.
func startWorkload(t testing.TB, name string, args ...string) *workload {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	w := &workload{cmd: cmd, pid: cmd.Process.Pid, stdin: stdin, lines: make(chan string, 1<<16)}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			w.lines <- sc.Text()
		}
		close(w.lines)
	}()
	w.ready = strings.Fields(w.expect(t, "ready", 5*time.Second))
	return w
}

// expect returns the next line starting with prefix, failing the test if a
// line starting with FAIL comes, the output ends, or timeout passes.
func (w *workload) expect(t testing.TB, prefix string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-w.lines:
			if !ok {
				t.Fatalf("pid %d: output ended waiting for %q", w.pid, prefix)
			}
			if strings.HasPrefix(l, "FAIL") {
				t.Fatalf("pid %d: %s", w.pid, l)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-deadline:
			t.Fatalf("pid %d: no %q line within %v", w.pid, prefix, timeout)
		}
	}
}

// quiet fails if any line arrives within d.
func (w *workload) quiet(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case l := <-w.lines:
		t.Fatalf("pid %d: unexpected output %q", w.pid, l)
	case <-time.After(d):
	}
}

// startMaybeStopped starts workload name, stopped by SIGSTOP (state T)
// if stop: the tracer-death tests check a running and a stopped task.
func startMaybeStopped(t testing.TB, name string, stop bool) *workload {
	t.Helper()
	w := startWorkload(t, name)
	if stop {
		if err := unix.Kill(w.pid, unix.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		waitState(t, w.pid, 'T')
	}
	return w
}

// waitState waits until /proc/PID/stat shows the given state letter.
func waitState(t testing.TB, pid int, state byte) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if procState(pid) == state {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("pid %d did not reach state %c (is %c)", pid, state, procState(pid))
}

func procState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return '?'
	}
	// The state follows the last ')' (comm may contain anything).
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return '?'
	}
	return b[i+2]
}

// stopped seizes pid on tr and brings it into a PTRACE_EVENT_STOP.
// stoppedTracer returns a new Tracer, closed when the test ends, that has
// seized pid and stopped it.
func stoppedTracer(t testing.TB, pid int) *Tracer {
	t.Helper()
	tr := NewTracer()
	t.Cleanup(tr.Close)
	stopped(t, tr, pid)
	return tr
}

func stopped(t testing.TB, tr *Tracer, pid int) {
	t.Helper()
	err := tr.Do(func() error {
		if err := Seize(pid, unix.PTRACE_O_EXITKILL); err != nil {
			return err
		}
		_, err := InterruptAndWait(pid)
		return err
	})
	if err != nil {
		t.Fatalf("stop pid %d: %v", pid, err)
	}
}
