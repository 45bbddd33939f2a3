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

// nsWorkload is testdata/ns_uts.c started in new UTS and IPC namespaces
// (new IPC too, so that its msgmax write never touches the test's own).
type nsWorkload struct {
	pid    int
	report string
	done   chan error
}

func startNSWorkload(t *testing.T, flags uintptr) *nsWorkload {
	t.Helper()
	bin := buildTestdata(t, "ns_uts.c")
	report := filepath.Join(t.TempDir(), "report")
	cmd := exec.Command(bin, "crt-ns-host", "crt-ns-dom", "12345", report)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: flags}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s in new namespaces: %v", bin, err)
	}
	w := &nsWorkload{pid: cmd.Process.Pid, report: report, done: make(chan error, 1)}
	go func() { w.done <- cmd.Wait() }()
	t.Cleanup(func() { _ = unix.Kill(w.pid, unix.SIGKILL) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(report); err == nil {
			break
		}
		select {
		case err := <-w.done:
			t.Fatalf("workload %d exited before it was ready: %v", w.pid, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("workload %d not ready in 10 s", w.pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return w
}

// ask has the workload (or its restored copy) write what it sees.
func (w *nsWorkload) ask(t *testing.T) []string {
	t.Helper()
	_ = os.Remove(w.report)
	if err := unix.Kill(w.pid, unix.SIGUSR1); err != nil {
		t.Fatalf("signal workload %d: %v", w.pid, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(w.report); err == nil {
			f := strings.Fields(string(b))
			if len(f) != 4 {
				t.Fatalf("workload %d report %q: want 4 fields", w.pid, b)
			}
			return f
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("workload %d wrote no report in 5 s", w.pid)
	return nil
}

func atoiT(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("counter %q: %v", s, err)
	}
	return n
}

func nsOf(t *testing.T, pid, name string) string {
	t.Helper()
	l, err := os.Readlink("/proc/" + pid + "/ns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestNSUTSIPCDumpRestore dumps a task with UTS and IPC namespaces of its
// own (-n uts,ipc), kills it, restores it and checks that the restored task
// sees its hostname, domainname and kernel.msgmax, in namespaces that are
// not crtools', and that crtools' own hostname did not change.
func TestNSUTSIPCDumpRestore(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	hostBefore, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	w := startNSWorkload(t, unix.CLONE_NEWUTS|unix.CLONE_NEWIPC)
	before := w.ask(t)
	if want := []string{"crt-ns-host", "crt-ns-dom", "12345"}; strings.Join(before[:3], " ") != strings.Join(want, " ") {
		t.Fatalf("workload sees %v before the dump, want %v", before[:3], want)
	}
	dir := filepath.Join(t.TempDir(), "images")
	log := filepath.Join(t.TempDir(), "dump.log")
	code, out := crtools(t, "dump", "-t", fmt.Sprint(w.pid), "-D", dir, "-n", "uts,ipc", "-v", "2", "-o", log)
	if code != 0 {
		b, _ := os.ReadFile(log)
		t.Fatalf("crtools dump -n uts,ipc: exit %d\n%s\n%s", code, out, b)
	}
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("dumped workload %d did not die", w.pid)
	}
	for _, g := range []string{"utsns-*.img", "ipcns-var-*.img"} {
		if m, _ := filepath.Glob(filepath.Join(dir, g)); len(m) != 1 {
			t.Errorf("images: %d files %s, want 1", len(m), g)
		}
	}
	rp.Forget(w.pid)
	rlog := filepath.Join(t.TempDir(), "restore.log")
	code, out = crtools(t, "restore", "-D", dir, "-d", "-v", "2", "-o", rlog)
	if code != 0 {
		b, _ := os.ReadFile(rlog)
		t.Fatalf("crtools restore: exit %d\n%s\n%s", code, out, b)
	}
	after := w.ask(t)
	if strings.Join(after[:3], " ") != strings.Join(before[:3], " ") {
		t.Errorf("restored workload sees %v, want %v as before the dump", after[:3], before[:3])
	}
	// The loop counter lives in the restored memory: it goes on from
	// where the dump caught it, it does not start over.
	if a, b := atoiT(t, after[3]), atoiT(t, before[3]); a < b {
		t.Errorf("restored counter %d is behind the one before the dump %d", a, b)
	}
	pid := fmt.Sprint(w.pid)
	for _, n := range []string{"uts", "ipc"} {
		if nsOf(t, pid, n) == nsOf(t, "self", n) {
			t.Errorf("restored task %d is in the test's %s namespace", w.pid, n)
		}
	}
	if h, _ := os.Hostname(); h != hostBefore {
		t.Errorf("the test's hostname changed from %q to %q", hostBefore, h)
	}
	if err := unix.Kill(w.pid, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitExit(t, rp, w.pid, 0)
}

// TestNSRefusals: a task in namespaces of its own is not dumped without
// -n for each of them, -n for a namespace shared with crtools is an error,
// and -n for net or mnt namespaces the task shares with crtools too;
// the task runs on untouched after every refusal.
func TestNSRefusals(t *testing.T) {
	harness.RequireRoot(t)
	harness.Subreaper()
	w := startNSWorkload(t, unix.CLONE_NEWUTS|unix.CLONE_NEWIPC)
	w.ask(t)
	sleeper := exec.Command("sleep", "100")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	for _, c := range []struct {
		name string
		pid  int
		args []string
		want []string
	}{
		{"no -n", w.pid, nil, []string{"uts namespace of its own", "-n uts"}},
		{"-n uts without ipc", w.pid, []string{"-n", "uts"}, []string{"ipc namespace of its own", "-n ipc"}},
		{"-n net of a task sharing crtools' net", w.pid, []string{"-n", "uts,ipc,net"}, []string{"shares crtools' net namespace"}},
		{"-n mnt of a task sharing crtools' mnt", w.pid, []string{"-n", "uts,ipc,mnt"}, []string{"shares crtools' mnt namespace"}},
		{"-n uts of a task sharing crtools' uts", sleeper.Process.Pid, []string{"-n", "uts"}, []string{"shares crtools' uts namespace"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "images")
			args := append([]string{"dump", "-t", fmt.Sprint(c.pid), "-D", dir}, c.args...)
			code, out := crtools(t, args...)
			if code != 1 {
				t.Fatalf("crtools %v: exit %d, want 1\n%s", args, code, out)
			}
			for _, s := range c.want {
				if !strings.Contains(out, s) {
					t.Errorf("crtools %v: output lacks %q:\n%s", args, s, out)
				}
			}
			if _, err := os.Stat(dir); err == nil {
				t.Errorf("a refused dump left %s", dir)
			}
		})
	}
	if got := w.ask(t); got[0] != "crt-ns-host" {
		t.Errorf("workload sees hostname %q after the refusals", got[0])
	}
	if err := unix.Kill(sleeper.Process.Pid, 0); err != nil {
		t.Errorf("sleeper gone after the refusals: %v", err)
	}
}
