package e2e

import (
	"bufio"
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

// Issue 3's error contract, for the cases TestDumpErrors and
// TestRestoreErrors do not cover: one line naming the object, exit 1,
// nothing changed.

// oneLine checks that crtools (run with -v 0) printed exactly one line and
// that it holds every piece of want; it returns the line.
func oneLine(t *testing.T, what string, code int, out string, want ...string) string {
	t.Helper()
	if code != 1 {
		t.Errorf("%s: exit %d, want 1\n%s", what, code, out)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "crtools: ") {
		t.Errorf("%s: want one line starting with \"crtools: \", got %d:\n%s", what, len(lines), out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: output lacks %q:\n%s", what, w, out)
		}
	}
	return lines[len(lines)-1]
}

// pidFree fails the test if pid exists (a failed restore must leave no
// task behind, and may not have taken the PID).
func pidFree(t *testing.T, pid int, what string) {
	t.Helper()
	// The reaper collects a killed puppet within its grace period.
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			st, _ := procStat(pid)
			t.Errorf("%s: pid %d exists (%+v)", what, pid, st)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func copyDir(t *testing.T, dir string) string {
	t.Helper()
	bad := filepath.Join(t.TempDir(), "images")
	if out, err := exec.Command("cp", "-a", dir, bad).CombinedOutput(); err != nil {
		t.Fatalf("copy images: %v\n%s", err, out)
	}
	return bad
}

// TestRestoreImageErrors: a missing, empty or non-directory images path and
// images that are truncated, corrupt, unreadable or missing each stop the
// restore in its load step with one line naming the file; no task is
// created. The intact images still restore afterwards.
func TestRestoreImageErrors(t *testing.T) {
	rp, w, dir := dumpedWorkload(t, harness.BuildC(t, "simple.c"))
	sum := dirSum(t, dir)
	core := fmt.Sprintf("core-%d.img", w.Pid)
	mm := fmt.Sprintf("mm-%d.img", w.Pid)
	pagemap := fmt.Sprintf("pagemap-%d.img", w.Pid)
	pages, _ := filepath.Glob(filepath.Join(dir, "pages-*.img"))
	if len(pages) != 1 {
		t.Fatalf("want one pages image, have %v", pages)
	}
	pagesName := filepath.Base(pages[0])

	cases := []struct {
		name  string
		spoil func(t *testing.T, d string) string // returns the -D argument
		want  []string
	}{
		{"missing dir", func(t *testing.T, d string) string { return d + "-nope" },
			[]string{"images-nope", "no such file or directory"}},
		{"not a dir", func(t *testing.T, d string) string { return filepath.Join(d, core) },
			[]string{core, "is not a directory"}},
		{"empty dir", func(t *testing.T, d string) string { return t.TempDir() },
			[]string{"inventory.img", "no such file or directory"}},
		{"unreadable inventory", func(t *testing.T, d string) string {
			os.Remove(filepath.Join(d, "inventory.img"))
			os.Mkdir(filepath.Join(d, "inventory.img"), 0o755)
			return d
		}, []string{"inventory.img", "is a directory"}},
		{"truncated core", func(t *testing.T, d string) string {
			p := filepath.Join(d, core)
			fi, _ := os.Stat(p)
			os.Truncate(p, fi.Size()-3)
			return d
		}, []string{core + ": truncated at offset"}},
		{"bad magic", func(t *testing.T, d string) string {
			spoilAt(t, filepath.Join(d, mm), 4, []byte{0xde, 0xad, 0xbe, 0xef})
			return d
		}, []string{mm + ": bad magic 0xefbeadde for a MM image"}},
		{"corrupt entry", func(t *testing.T, d string) string {
			spoilAt(t, filepath.Join(d, "pstree.img"), 12, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
			return d
		}, []string{"pstree.img: entry 0 at offset 8 is not a valid pstree_entry"}},
		{"missing core", func(t *testing.T, d string) string {
			os.Remove(filepath.Join(d, core))
			return d
		}, []string{core, "no such file or directory"}},
		{"truncated pages", func(t *testing.T, d string) string {
			os.Truncate(filepath.Join(d, pagesName), 4096)
			return d
		}, []string{pagesName + ": truncated at offset 4096: page data of " + pagemap + " needs"}},
		{"missing pages", func(t *testing.T, d string) string {
			os.Remove(filepath.Join(d, pagesName))
			return d
		}, []string{pagesName, "no such file or directory"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			arg := c.spoil(t, copyDir(t, dir))
			code, out := crtools(t, "restore", "-D", arg, "-d", "-v", "0")
			line := oneLine(t, "restore", code, out, c.want...)
			if !strings.Contains(line, "step load") && !strings.Contains(line, "step pick-images") {
				t.Errorf("restore failed after it began creating tasks: %s", line)
			}
			pidFree(t, w.Pid, c.name)
		})
	}
	if s := dirSum(t, dir); s != sum {
		t.Fatalf("images changed: %s -> %s", sum, s)
	}
	if t.Failed() {
		return
	}
	restoreDetached(t, w, dir)
	verifyRestored(t, w)
	waitExit(t, rp, w.Pid, 0)
}

func spoilAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// zombieHolder makes pid a zombie child of a Python process that reaps it
// after hold; it returns once the zombie exists.
const zombieHolder = `
import os, sys, time
pid, hold = int(sys.argv[1]), float(sys.argv[2])
for _ in range(500):
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid - 1))
    c = os.fork()
    if c == 0:
        os._exit(0)
    if c == pid:
        break
    os.waitpid(c, 0)
else:
    print("pid %d not obtained" % pid, flush=True)
    sys.exit(3)
while open("/proc/%d/stat" % pid).read().split(") ")[1][0] != "Z":
    time.sleep(0.001)
print("zombie", flush=True)
time.sleep(hold)
os.waitpid(pid, 0)
print("reaped", flush=True)
`

// TestRestoreWaitsForZombie: the PID a restore needs is held by a zombie
// whose parent reaps it only later; restore waits for it, says so at -v 1,
// and succeeds.
func TestRestoreWaitsForZombie(t *testing.T) {
	rp, w, dir := dumpedWorkload(t, harness.BuildC(t, "simple.c"))

	holder := exec.Command(harness.Python3(t), "-c", zombieHolder, fmt.Sprint(w.Pid), "1.0")
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	rd := bufio.NewReader(stdout)
	if l, _ := rd.ReadString('\n'); strings.TrimSpace(l) != "zombie" {
		t.Fatalf("zombie holder: %q", l)
	}
	if st, err := procStat(w.Pid); err != nil || st.state != "Z" || st.ppid != holder.Process.Pid {
		t.Fatalf("pid %d: %+v %v, want a zombie child of %d", w.Pid, st, err, holder.Process.Pid)
	}
	start := time.Now()
	code, out := crtools(t, "restore", "-D", dir, "-d", "-v", "1")
	if code != 0 {
		t.Fatalf("restore over a zombie that is reaped later: exit %d\n%s", code, out)
	}
	if want := fmt.Sprintf("waiting for PID %d to be reaped", w.Pid); !strings.Contains(out, want) {
		t.Errorf("restore -v 1 does not say %q:\n%s", want, out)
	}
	if took := time.Since(start); took < 500*time.Millisecond {
		t.Errorf("restore took %v: it did not wait for the zombie", took)
	}
	if l, _ := rd.ReadString('\n'); strings.TrimSpace(l) != "reaped" {
		t.Errorf("zombie holder: %q", l)
	}
	verifyRestored(t, w)
	waitExit(t, rp, w.Pid, 0)
}

// TestMissingKernelFeature runs crtools under a seccomp filter that makes
// one syscall fail with ENOSYS, as on a kernel without it: the dump (no
// process_vm_readv) and the restore (no clone3) fail with one line naming
// the kernel feature; the failed dump leaves the task running as before
// and no images directory, the failed restore no task.
func TestMissingKernelFeature(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	enosys := buildTestdata(t, "enosys.c")
	crt := harness.BuildCrtools(t)
	without := func(nr int, args ...string) (int, string) {
		cmd := exec.Command(enosys, append([]string{fmt.Sprint(nr), crt}, args...)...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("run crtools %v: %v", args, err)
		}
		return cmd.ProcessState.ExitCode(), string(out)
	}
	w := harness.StartWorkload(t, harness.BuildC(t, "memory.c"))
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)

	dir := filepath.Join(t.TempDir(), "images")
	code, out := without(unix.SYS_PROCESS_VM_READV, "dump", "-t", fmt.Sprint(w.Pid), "-D", dir, "-v", "0")
	oneLine(t, "dump without process_vm_readv", code, out, "kernel feature process_vm_readv is missing", fmt.Sprint(w.Pid))
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("the failed dump left %s", dir)
	}
	if ents, _ := os.ReadDir(filepath.Dir(dir)); len(ents) != 0 {
		t.Errorf("the failed dump left %d entries next to the images directory", len(ents))
	}
	if st, err := procStat(w.Pid); err != nil || st.state == "T" || tracerOf(w.Pid) != 0 {
		t.Fatalf("after the failed dump pid %d: %+v %v, tracer %d", w.Pid, st, err, tracerOf(w.Pid))
	}
	w.MustVerify(10 * time.Second)

	dir = dumpKill(t, w)
	rp.Forget(w.Pid)
	code, out = without(unix.SYS_CLONE3, "restore", "-D", dir, "-d", "-v", "0")
	oneLine(t, "restore without clone3", code, out, "kernel feature clone3-set_tid is missing", fmt.Sprint(w.Pid))
	pidFree(t, w.Pid, "after the failed restore")

	restoreDetached(t, w, dir)
	verifyRestored(t, w)
	waitExit(t, rp, w.Pid, 0)
}
