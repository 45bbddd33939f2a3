package e2e

import (
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

// Issue 5 through the real engines: a process holding a pipe with 100000
// unread bytes, an eventfd, socket pairs with queued datagrams and stream
// bytes, and an epoll watching the eventfd and the pipe is dumped, killed
// and restored; its own checks prove that every byte, counter, datagram
// boundary and epoll watch came back (engine/files).
func TestDumpRestoreSpecialFiles(t *testing.T) {
	dumpRestoreVerify(t, harness.BuildC(t, "specialfiles.c"))
}

// File locks (flock, OFD, POSIX): without -l the dump is refused with a
// message naming the file and the option, and the workload carries on
// untouched; restore refuses the images without -l; with -l the locks are
// held again after restore (flock and OFD taken by crtools on the open
// file, POSIX injected into the task): another process cannot take them,
// the owner can release and take them again.
func TestDumpRestoreFileLocks(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	w := harness.StartWorkload(t, harness.BuildC(t, "locks.c"))
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)

	refused := filepath.Join(t.TempDir(), "refused")
	code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", refused)
	if code != 1 || !strings.Contains(out, "-l/--file-locks") || !strings.Contains(out, filepath.Join(w.Dir, "flock.dat")) {
		t.Fatalf("dump without -l: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(refused); !os.IsNotExist(err) {
		t.Errorf("refused dump left %s behind (%v)", refused, err)
	}
	w.MustVerify(10 * time.Second) // still running, locks still held

	dir := filepath.Join(t.TempDir(), "images")
	code, out = crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", dir, "-l", "-v", "2", "-o", filepath.Join(w.Dir, "dump.log"))
	if code != 0 {
		t.Fatalf("crtools dump -l: exit %d\n%s\n%s", code, out, readLog(w, "dump.log"))
	}
	select {
	case <-w.Exited():
	case <-time.After(10 * time.Second):
		t.Fatalf("dumped workload %d did not die", w.Pid)
	}
	rp.Forget(w.Pid)

	// The images hold locks: restore without -l refuses them, naming
	// the option, and leaves no task behind.
	code, out = crtools(t, "restore", "-D", dir, "-d")
	if code != 1 || !strings.Contains(out, "-l/--file-locks") || !strings.Contains(out, fmt.Sprintf("pid %d through fd 30", w.Pid)) {
		t.Fatalf("restore without -l: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", w.Pid)); !os.IsNotExist(err) {
		t.Fatalf("refused restore left pid %d behind (%v)", w.Pid, err)
	}

	code, out = crtools(t, "restore", "-D", dir, "-d", "-l", "-v", "2", "-o", filepath.Join(w.Dir, "restore.log"))
	if code != 0 {
		t.Fatalf("crtools restore -l: exit %d\n%s\n%s", code, out, readLog(w, "restore.log"))
	}
	// Another process (the test) cannot take any of the three locks.
	probe := func(name string) *os.File {
		f, err := os.OpenFile(filepath.Join(w.Dir, name), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	fl := probe("flock.dat")
	if err := unix.Flock(int(fl.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != unix.EWOULDBLOCK {
		t.Errorf("another process took the restored flock lock: %v", err)
	}
	fl.Close()
	for _, c := range []struct {
		name       string
		start, len int64
	}{{"ofd.dat", 12, 1}, {"posix.dat", 100, 0}} {
		f := probe(c.name)
		lk := unix.Flock_t{Type: unix.F_WRLCK, Start: c.start, Len: c.len}
		if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != unix.EAGAIN && err != unix.EACCES {
			t.Errorf("another process took a write lock on %s at %d: %v", c.name, c.start, err)
		}
		f.Close()
	}
	verifyRestored(t, w) // the owner still holds them, releases and retakes them
	waitWorkloadExit(t, rp, w)
}

// timerfd, signalfd, inotify, a FIFO and a deleted file with data, a
// listening socket with a connection not accepted yet, a bound datagram
// socket with queued datagrams, and a datagram socket connected to a
// socket of the test (outside the tree): refused without -x (naming the
// descriptor and the option), reconnected with -x.
func TestDumpRestoreSpecialFilesExternalSocket(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	extPath := filepath.Join(t.TempDir(), "ext.sock")
	// bindExt binds the outside socket (like a syslog daemon's /dev/log).
	bindExt := func() int {
		s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Bind(s, &unix.SockaddrUnix{Name: extPath}); err != nil {
			t.Fatal(err)
		}
		unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
		return s
	}
	srv := bindExt()
	defer func() { unix.Close(srv) }()
	expect := func(want string) {
		t.Helper()
		buf := make([]byte, 128)
		n, err := unix.Read(srv, buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("external socket received %q (%v), want %q", buf[:max(n, 0)], err, want)
		}
	}

	w := harness.StartWorkload(t, harness.BuildC(t, "specialfiles2.c"), extPath)
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	expect("hello 0")

	refused := filepath.Join(t.TempDir(), "refused")
	code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", refused)
	if code != 1 || !strings.Contains(out, "-x/--ext-unix-sk") || !strings.Contains(out, fmt.Sprintf("fd 48 of pid %d", w.Pid)) || !strings.Contains(out, extPath) {
		t.Fatalf("dump without -x: exit %d\n%s", code, out)
	}
	w.MustVerify(10 * time.Second)
	expect("hello 1")

	dir := filepath.Join(t.TempDir(), "images")
	code, out = crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", dir, "-x", "-v", "2", "-o", filepath.Join(w.Dir, "dump.log"))
	if code != 0 {
		t.Fatalf("crtools dump -x: exit %d\n%s\n%s", code, out, readLog(w, "dump.log"))
	}
	select {
	case <-w.Exited():
	case <-time.After(10 * time.Second):
		t.Fatalf("dumped workload %d did not die", w.Pid)
	}
	rp.Forget(w.Pid)
	// The daemon restarted meanwhile: a new socket under the same name.
	// The restored task connects to the name, so it reaches the new one.
	unix.Close(srv)
	os.Remove(extPath)
	srv = bindExt()
	restoreDetached(t, w, dir)
	verifyRestored(t, w)
	for i := 2; i <= 4; i++ {
		expect(fmt.Sprintf("hello %d", i))
	}
	waitWorkloadExit(t, rp, w)
}

// A pipeline producer | filter | consumer (three processes, two full
// pipes) checkpointed mid-stream: after restore the consumer still sees
// exactly the next number, so nothing in flight was lost or repeated.
func TestDumpRestorePipeline(t *testing.T) {
	dumpRestoreVerify(t, harness.BuildC(t, "pipeline.c"))
}

// A terminal from outside the tree is refused without -j/--shell-job,
// with a message naming the descriptor and the option, and the task
// carries on untouched; with -j it is restored on crtools' own terminal
// with the settings it had (echo off).
func TestDumpRestoreShellJobTerminal(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	_, shellPts := harness.OpenPty(t)
	w := harness.StartWorkload(t, harness.BuildC(t, "tty.c"), shellPts)
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	dir := filepath.Join(t.TempDir(), "images")
	code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", dir)
	if code != 1 || !strings.Contains(out, "-j/--shell-job") || !strings.Contains(out, fmt.Sprintf("fd 50 of pid %d (%s)", w.Pid, shellPts)) {
		t.Fatalf("dump of a task with a terminal: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("refused dump left %s behind (%v)", dir, err)
	}
	if tr := tracerOf(w.Pid); tr != 0 {
		t.Errorf("pid %d still traced by %d after a refused dump", w.Pid, tr)
	}
	w.MustVerify(10 * time.Second)

	code, out = crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", dir, "-j")
	if code != 0 {
		t.Fatalf("crtools dump -j: exit %d\n%s", code, out)
	}
	select {
	case <-w.Exited():
	case <-time.After(10 * time.Second):
		t.Fatalf("dumped workload %d did not die", w.Pid)
	}
	rp.Forget(w.Pid)
	// crtools restore -j runs on a terminal of its own (another pty).
	_, crtPts := harness.OpenPty(t)
	tty, err := os.OpenFile(crtPts, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	cmd := exec.Command(harness.BuildCrtools(t), "restore", "-D", dir, "-d", "-j", "-v", "2", "-o", filepath.Join(w.Dir, "restore.log"))
	cmd.Stdin = tty
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("crtools restore -j: %v\n%s\n%s", err, b, readLog(w, "restore.log"))
	}
	verifyRestored(t, w)
	waitWorkloadExit(t, rp, w)
}
