package main

// Regression tests of the command-line contract audit (crtools(1)): the
// per-process logs of --log-pid on a real tree, and the options that are
// refused with one clear line.

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
)

// startShTree starts `sh` with one `sleep` child, in its own session, and
// returns both PIDs.
func startShTree(t *testing.T) (int, int) {
	t.Helper()
	cmd := exec.Command("sh", "-c", "sleep 300 & wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	root := cmd.Process.Pid
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", root, root))
		if f := strings.Fields(string(b)); len(f) == 1 {
			child, _ := strconv.Atoi(f[0])
			// sleep has exec'd once its comm says so.
			if c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", child)); strings.TrimSpace(string(c)) == "sleep" {
				return root, child
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("sh %d did not start its sleep child", root)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLogPidRealTree: `dump -o dump.log --log-pid` on a real 2-process
// tree writes dump.log.PID for each task, with content, inside the images
// directory; `restore -o rst.log --log-pid` does the same for restore.
func TestLogPidRealTree(t *testing.T) {
	crtoolsBin(t)
	root, child := startShTree(t)
	dir := filepath.Join(t.TempDir(), "ckpt")
	r := crtoolsRun(t, nil, "dump", "-t", strconv.Itoa(root), "-D", dir, "-o", "dump.log", "--log-pid")
	if r.code != 0 {
		t.Fatalf("dump exit %d: %s", r.code, r.stderr)
	}
	for _, pid := range []int{root, child} {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("dump.log.%d", pid)))
		if err != nil || !strings.Contains(string(b), "I: task frozen") || !strings.Contains(string(b), fmt.Sprintf("pid=%d", pid)) {
			t.Errorf("dump.log.%d: %v %q", pid, err, b)
		}
	}
	main, _ := os.ReadFile(filepath.Join(dir, "dump.log"))
	if strings.Contains(string(main), "task frozen") {
		t.Errorf("per-task lines also in the main log:\n%s", main)
	}
	if ents, _ := os.ReadDir(filepath.Dir(dir)); len(ents) != 1 {
		t.Errorf("log files left next to the images dir: %v", ents)
	}
	// The dump killed the tree; reap both (the orphaned sleep came to us
	// as subreaper) so that their PIDs are free to restore.
	jobKillReap(root)
	jobKillReap(child)
	r = crtoolsRun(t, nil, "restore", "-d", "-D", dir, "-o", "rst.log", "--log-pid")
	t.Cleanup(func() { jobKillReap(child); jobKillReap(root) })
	if r.code != 0 {
		t.Fatalf("restore exit %d: %s", r.code, r.stderr)
	}
	for _, pid := range []int{root, child} {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("rst.log.%d", pid)))
		if err != nil || !strings.Contains(string(b), "I: task state restored") {
			t.Errorf("rst.log.%d: %v %q", pid, err, b)
		}
	}
	if c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", child)); strings.TrimSpace(string(c)) != "sleep" {
		t.Errorf("restored child %d is %q, want sleep", child, c)
	}
}

// TestCLIRefusals: options of the man page that do not apply or whose
// engine is missing give one line naming the option and the right code.
func TestCLIRefusals(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"dump", "-t", "5", "-D", "x", "--veth-pair", "a=b"}, exitUsage, "--veth-pair applies to restore only"},
		{[]string{"dump", "-t", "5", "-D", "x", "-o", "sub/d.log"}, exitUsage, "-o sub/d.log: a relative log file of dump must be a plain file name"},
		{[]string{"dump", "-t", "5", "-D", "x", "-r", "/"}, exitFailed, "crtools: -r/--root: changing the root filesystem at checkpoint time (-r/--root) is not supported yet; -r is implemented for restore"},
	} {
		code, _, errs := runCLI(t, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, code, errs, tc.code, tc.want)
		}
		if n := strings.Count(strings.TrimSpace(errs), "\n"); n > 1 {
			t.Errorf("%v: %d lines on stderr: %q", tc.args, n+1, errs)
		}
	}
}

// TestQuietFailureOneLine: with -v 0 and no log file, a failed dump or
// restore prints exactly one line on stderr (what failed, why, and that it
// was rolled back), not the same error again as log lines.
func TestQuietFailureOneLine(t *testing.T) {
	t.Setenv(lockDirEnv, t.TempDir())
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dump", "-v", "0", "-t", "4194000", "-D", filepath.Join(dir, "img")}, "pid 4194000 does not exist; rolled back"},
		{[]string{"restore", "-v", "0", "-D", filepath.Join(dir, "missing")}, "missing: no such file or directory (give -D the directory a dump wrote); rolled back"},
	} {
		code, _, errs := runCLI(t, tc.args...)
		if code != exitFailed || strings.Count(errs, "\n") != 1 || !strings.HasPrefix(errs, "crtools: ") || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 1 and one line with %q", tc.args, code, errs, tc.want)
		}
	}
}
