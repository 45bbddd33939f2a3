package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/test/harness"
)

// mntRoot makes a directory to be the root of testdata/ns_mnt.c's mount
// namespace: mount points bin (holding bin, a hard link of the workload),
// usr, data, tmp, proc, and the host's lib links.
func mntRoot(t *testing.T, bin string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	for _, d := range []string{"bin", "usr", "data", "tmp", "proc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The dynamic loader and libc come from /usr, as on the host.
	for _, l := range []string{"lib", "lib64"} {
		if target, err := os.Readlink("/" + l); err == nil {
			if err := os.Symlink(target, filepath.Join(root, l)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A hard link: the restored mapping is the same file.
	if err := os.Link(bin, filepath.Join(root, "bin", "ns_mnt")); err != nil {
		t.Fatal(err)
	}
	return root
}

// mntReport asks the workload for /data/report and returns its fields by
// key.
func mntReport(t *testing.T, pid int, data string) map[string]string {
	t.Helper()
	path := filepath.Join(data, "report")
	_ = os.Remove(path)
	if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
		t.Fatalf("signal %d: %v", pid, err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		out := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			k, v, _ := strings.Cut(l, " ")
			out[k] = v
		}
		return out
	}
	t.Fatalf("workload %d wrote no report in 5 s", pid)
	return nil
}

// TestNSMntDumpRestore: PID 1 of its own pid and mount namespaces, the
// workload runs in a root it built (a bind mount of a directory, the
// host's /usr bound read-only, a host directory bound on /data, a tmpfs
// with files on /tmp, proc on /proc). It is dumped with -n mnt,pid and
// restored with -r into another directory: the restored task sees its
// tmpfs files (saved in the images), /proc showing its own pid namespace,
// /usr read-only, /data where the test reads its reports, and the memory
// token and counter from before the dump.
func TestNSMntDumpRestore(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	bin := buildTestdata(t, "ns_mnt.c")
	root := mntRoot(t, bin)
	data := t.TempDir()
	cmd := exec.Command(bin, "setup", root, data)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID}
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = unix.Kill(pid, unix.SIGKILL) })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(data, "ready")); err == nil {
			break
		}
		select {
		case err := <-done:
			b, _ := os.ReadFile(out.Name())
			t.Fatalf("workload exited before it was ready: %v\n%s", err, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("workload not ready in 10 s")
		}
	}
	before := mntReport(t, pid, data)
	want := map[string]string{"hello": before["token"], "sub": "sub-file", "proc": "1", "usr-ro": "30"}
	for k, v := range want {
		if before[k] != v {
			t.Fatalf("workload before the dump: %s %q, want %q (%v)", k, before[k], v, before)
		}
	}

	dir := filepath.Join(t.TempDir(), "images")
	dlog := filepath.Join(t.TempDir(), "dump.log")
	code, o := crtools(t, "dump", "-t", fmt.Sprint(pid), "-D", dir, "-n", "mnt,pid", "-v", "2", "-o", dlog)
	if code != 0 {
		b, _ := os.ReadFile(dlog)
		t.Fatalf("crtools dump -n mnt,pid: exit %d\n%s\n%s", code, o, b)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("dumped workload %d did not die", pid)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "tmpfs-dev-*.tar.gz.img")); len(m) != 1 {
		t.Errorf("images: %d tmpfs contents, want 1", len(m))
	}

	// Without -r: refused, naming it.
	code, o = crtools(t, "restore", "-D", dir, "-d")
	if code == 0 || !strings.Contains(o, "-r/--root") {
		t.Fatalf("restore of a mount namespace without -r: exit %d, want a failure naming -r:\n%s", code, o)
	}

	root2 := mntRoot(t, bin)
	before2 := nsInits(t)
	rlog := filepath.Join(t.TempDir(), "restore.log")
	code, o = crtools(t, "restore", "-D", dir, "-d", "-r", root2, "-v", "2", "-o", rlog)
	if code != 0 {
		b, _ := os.ReadFile(rlog)
		t.Fatalf("crtools restore -r: exit %d\n%s\n%s", code, o, b)
	}
	var rpid int
	for p := range nsInits(t) {
		if !before2[p] {
			rpid = p
		}
	}
	if rpid == 0 {
		t.Fatal("no restored init among the test's children")
	}
	t.Cleanup(func() { _ = unix.Kill(rpid, unix.SIGKILL) })
	after := mntReport(t, rpid, data)
	for k, v := range map[string]string{"token": before["token"], "hello": before["token"], "sub": "sub-file", "proc": "1", "usr-ro": "30"} {
		if after[k] != v {
			t.Errorf("restored workload: %s %q, want %q (%v)", k, after[k], v, after)
		}
	}
	var cb, ca int
	fmt.Sscan(before["counter"], &cb)
	fmt.Sscan(after["counter"], &ca)
	if ca < cb {
		t.Errorf("restored counter %d is behind the one before the dump %d", ca, cb)
	}
	if nsOf(t, fmt.Sprint(rpid), "mnt") == nsOf(t, "self", "mnt") {
		t.Error("restored task is in the test's mount namespace")
	}
	// Its root is the -r directory: the hard link of the binary there.
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/tmp/hello.txt", rpid)); err != nil || string(b) != before["token"] {
		t.Errorf("restored tmpfs seen from outside: %q, %v", b, err)
	}
	var st1, st2 unix.Stat_t
	if unix.Stat(fmt.Sprintf("/proc/%d/root/bin", rpid), &st1) != nil || unix.Stat(filepath.Join(root2, "bin"), &st2) != nil || st1.Ino != st2.Ino {
		t.Errorf("restored root is not %s", root2)
	}
	// Nothing of the restored mounts leaked into the test's namespace.
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), root2) {
		t.Errorf("the test's mount table shows %s", root2)
	}
	if err := unix.Kill(rpid, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitExit(t, rp, rpid, 0)
}
