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

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/test/harness"
	"github.com/crtools/crtools/test/testenv"
)

// TestDumpLeaveStopped: with -s the task is left stopped (not traced) after
// a good dump, and carries on intact once continued.
func TestDumpLeaveStopped(t *testing.T) {
	harness.RequireRoot(t)
	w := harness.StartWorkload(t, harness.BuildC(t, "simple.c"))
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	dir := dumpDir(t, w, "-s")
	if !image.Exists(dir, image.Core, uint64(w.Pid)) {
		t.Fatalf("no core image in %s", dir)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := procStat(w.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if st.state == "T" && tracerOf(w.Pid) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after dump -s pid %d is in state %s, traced by %d; want stopped, untraced", w.Pid, st.state, tracerOf(w.Pid))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Still stopped a while later: nothing resumed it.
	time.Sleep(100 * time.Millisecond)
	if st, _ := procStat(w.Pid); st.state != "T" {
		t.Fatalf("pid %d left stopped is now in state %s", w.Pid, st.state)
	}
	if err := syscall.Kill(w.Pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	w.MustVerify(10 * time.Second)
}

// TestDumpLeaveRunning: with -R the task runs on untraced, intact, and
// makes progress; a second dump of it works too.
func TestDumpLeaveRunning(t *testing.T) {
	harness.RequireRoot(t)
	w := harness.StartWorkload(t, harness.BuildC(t, "simple.c"))
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	before, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", w.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		dumpDir(t, w, "-R")
		// The injections' scratch page is gone again: the address
		// space is exactly as before.
		after, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", w.Pid))
		if err != nil {
			t.Fatal(err)
		}
		if string(after) != string(before) {
			t.Errorf("dump %d changed the memory map:\nbefore:\n%s\nafter:\n%s", i, before, after)
		}
		if tr := tracerOf(w.Pid); tr != 0 {
			t.Fatalf("dump %d: pid %d still traced by %d", i, w.Pid, tr)
		}
		w.MustVerify(10 * time.Second)
	}
}

// TestDumpKill: by default the dumped task is killed.
func TestDumpKill(t *testing.T) {
	harness.RequireRoot(t)
	w := harness.StartWorkload(t, harness.BuildC(t, "simple.c"))
	w.MustReady(10 * time.Second)
	dumpKill(t, w)
}

// TestDumpErrors: each refusal is one line naming the object, exit code
// 1, no images directory left behind, and the target untouched.
func TestDumpErrors(t *testing.T) {
	harness.RequireRoot(t)
	crt := harness.BuildCrtools(t)
	refuse := func(t *testing.T, pid string, want ...string) {
		t.Helper()
		dir := filepath.Join(t.TempDir(), "images")
		code, out := crtools(t, "dump", "-t", pid, "-D", dir, "-v", "0")
		if code != 1 {
			t.Errorf("dump -t %s: exit %d, want 1\n%s", pid, code, out)
		}
		if n := strings.Count(strings.TrimRight(out, "\n"), "\n"); n != 0 || !strings.HasPrefix(out, "crtools: ") {
			t.Errorf("dump -t %s -v 0: want one line starting with \"crtools: \", got:\n%s", pid, out)
		}
		for _, w := range want {
			// "a|b": either wording will do.
			ok := false
			for _, alt := range strings.Split(w, "|") {
				ok = ok || strings.Contains(out, alt)
			}
			if !ok {
				t.Errorf("dump -t %s: output %q lacks %q", pid, out, w)
			}
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("dump -t %s left %s behind", pid, dir)
		}
	}
	t.Run("no such pid", func(t *testing.T) {
		refuse(t, "4194303", "pid 4194303 does not exist")
	})
	t.Run("kernel thread", func(t *testing.T) {
		refuse(t, "2", "pid 2 (kthreadd) is a kernel thread; kernel threads cannot be dumped")
	})
	t.Run("init", func(t *testing.T) {
		// Refused before any ptrace call: init is not touched.
		refuse(t, "1", "pid 1 (", ") is the init process of crtools' PID namespace; it cannot be dumped from inside that namespace")
	})
	t.Run("traced by strace", func(t *testing.T) {
		strace := testenv.RequireCommand(t, "strace")
		w := harness.StartWorkload(t, harness.BuildC(t, "simple.c"))
		w.MustReady(10 * time.Second)
		st := exec.Command(strace, "-q", "-o", "/dev/null", "-p", fmt.Sprint(w.Pid))
		if err := st.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { st.Process.Kill(); st.Wait() }()
		for i := 0; tracerOf(w.Pid) != st.Process.Pid; i++ {
			if i == 500 {
				t.Fatalf("strace %d did not attach to %d", st.Process.Pid, w.Pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
		refuse(t, fmt.Sprint(w.Pid), fmt.Sprintf("pid %d (simple) is already traced by pid %d (strace); detach the tracer first", w.Pid, st.Process.Pid))
		if tracerOf(w.Pid) != st.Process.Pid {
			t.Errorf("the tracer of %d changed", w.Pid)
		}
		st.Process.Signal(os.Interrupt) // strace detaches on SIGINT
		st.Wait()
		if tr := tracerOf(w.Pid); tr != 0 {
			t.Fatalf("pid %d still traced by %d", w.Pid, tr)
		}
		w.MustVerify(10 * time.Second)
	})
	t.Run("crtools itself", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "images")
		// exec keeps the shell's pid, so $$ is crtools' own pid.
		out, err := exec.Command("bash", "-c", `exec "$0" dump -t $$ -D "$1"`, crt, dir).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "crtools itself") {
			t.Errorf("dump of itself: %v\n%s", err, out)
		}
	})
	t.Run("already traced", func(t *testing.T) {
		bin := buildTestdata(t, "dump_traced.c")
		pidFile := filepath.Join(t.TempDir(), "pid")
		tracer := exec.Command(bin, pidFile)
		if err := tracer.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { tracer.Process.Kill(); tracer.Wait() }()
		var child int
		for i := 0; i < 500 && child == 0; i++ {
			b, _ := os.ReadFile(pidFile)
			child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			time.Sleep(10 * time.Millisecond)
		}
		if child == 0 {
			t.Fatal("tracer did not start")
		}
		refuse(t, fmt.Sprint(child), fmt.Sprint(child), "already traced", fmt.Sprint(tracer.Process.Pid))
		if tracerOf(child) != tracer.Process.Pid {
			t.Errorf("the tracer of %d changed", child)
		}
	})
	t.Run("unsupported fd", func(t *testing.T) {
		w := harness.StartWorkload(t, buildTestdata(t, "dump_uffd.c", "-I"+harness.WorkloadsDir(t)))
		w.MustReady(10 * time.Second)
		w.MustVerify(10 * time.Second)
		b, err := os.ReadFile(filepath.Join(w.Dir, "fd"))
		if err != nil {
			t.Fatal(err)
		}
		fd := strings.TrimSpace(string(b))
		refuse(t, fmt.Sprint(w.Pid), "fd "+fd, fmt.Sprint(w.Pid), "not supported")
		// The failed dump left the task running as before.
		if tr := tracerOf(w.Pid); tr != 0 {
			t.Errorf("pid %d still traced by %d after a failed dump", w.Pid, tr)
		}
		w.MustVerify(10 * time.Second)
		// And no scratch mapping (or anything else) was left in it.
		maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", w.Pid))
		if n := strings.Count(string(maps), "\n"); n > 40 {
			t.Errorf("%d mappings after a failed dump:\n%s", n, maps)
		}
	})
}
