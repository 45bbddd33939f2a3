package e2e

import (
	"encoding/json"
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

// shellJobInitSrc: the init of a pid namespace of its own, run as a shell
// job: session leader with a terminal, the foreground group, its stdio on
// that terminal. It sleeps in short steps until SIGTERM.
const shellJobInitSrc = `#include <signal.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

int main(void)
{
	struct timespec ts = {0, 5 * 1000 * 1000};

	signal(SIGTERM, on_term);
	while (!stop)
		nanosleep(&ts, NULL);
	return 0;
}
`

// TestShellJobPidNSForeground: a shell job (-j) that is the init of a pid
// namespace of its own (-n pid) holds the foreground of its terminal. The
// dump records that foreground group as the tree sees it (1: the init's
// group inside its namespace), not by crtools' pid of the init, and a
// restore with -j from a shell on another terminal gives that terminal to
// the restored init's group, by the id crtools sees. Before, the image
// held crtools' pid, which no group of the restored namespace has, so the
// terminal stayed with the shell.
func TestShellJobPidNSForeground(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	src := filepath.Join(t.TempDir(), "shelljob_init.c")
	if err := os.WriteFile(src, []byte(shellJobInitSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := harness.BuildC(t, src)
	crt := harness.BuildCrtools(t)

	// The job on terminal A.
	mA, sA := harness.OpenPty(t)
	ttyA, err := os.OpenFile(sA, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = ttyA, ttyA, ttyA
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0, Cloneflags: unix.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ttyA.Close()
	init := cmd.Process.Pid
	t.Cleanup(func() { _ = unix.Kill(init, unix.SIGKILL) })
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	if fg, err := unix.IoctlGetInt(int(mA.Fd()), unix.TIOCGPGRP); err != nil || fg != init {
		t.Fatalf("terminal A's foreground group %d (%v), want the job %d", fg, err, init)
	}

	dir := filepath.Join(t.TempDir(), "images")
	dlog := filepath.Join(t.TempDir(), "dump.log")
	if code, out := crtools(t, "dump", "-j", "-n", "pid", "-t", fmt.Sprint(init), "-D", dir, "-v", "2", "-o", dlog); code != 0 {
		b, _ := os.ReadFile(dlog)
		t.Fatalf("crtools dump -j -n pid: exit %d\n%s\n%s", code, out, b)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("dumped init %d did not die", init)
	}
	rp.Forget(init)

	// The image: the terminal's foreground group as the tree saw it.
	code, out := crtools(t, "show", "-f", filepath.Join(dir, "tty-info.img"), "--json")
	if code != 0 {
		t.Fatalf("crtools show tty-info.img: exit %d\n%s", code, out)
	}
	if pgrp, sid := extTTYGroup(t, out); pgrp != 1 || sid != 1 {
		t.Errorf("shell-job terminal recorded with session %d and foreground group %d, want 1 and 1 (the ids inside the tree's pid namespace, crtools' being %d)\n%s", sid, pgrp, init, out)
	}

	// Restore from a shell on terminal B: the shell leads B's session,
	// crtools runs in its foreground group, the restored init leads a
	// group of its own in that session and must get B's foreground.
	mB, sB := harness.OpenPty(t)
	ttyB, err := os.OpenFile(sB, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	rlog := filepath.Join(work, "restore.log")
	sh := exec.Command("/bin/sh", "-c", `"$0" restore -D "$1" -d -j -v 2 -o "$2"; echo $? > "$3"; exec sleep 60`,
		crt, dir, rlog, filepath.Join(work, "rc"))
	sh.Stdin, sh.Stdout, sh.Stderr = ttyB, ttyB, ttyB
	sh.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	ttyB.Close()
	t.Cleanup(func() { _ = sh.Process.Kill(); _ = sh.Wait() })
	var rc []byte
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if rc, err = os.ReadFile(filepath.Join(work, "rc")); err == nil && len(rc) > 0 {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(rlog)
			t.Fatalf("crtools restore -j did not finish\n%s", b)
		}
	}
	if strings.TrimSpace(string(rc)) != "0" {
		b, _ := os.ReadFile(rlog)
		t.Fatalf("crtools restore -j: exit %s\n%s", rc, b)
	}
	restored := runningExe(bin)
	t.Cleanup(func() {
		for _, pid := range restored {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	})
	if len(restored) != 1 {
		t.Fatalf("%d processes run %s after the restore (%v), want 1", len(restored), bin, restored)
	}
	fg, err := unix.IoctlGetInt(int(mB.Fd()), unix.TIOCGPGRP)
	if err != nil {
		t.Fatal(err)
	}
	if fg != restored[0] {
		b, _ := os.ReadFile(rlog)
		t.Fatalf("terminal B's foreground group is %d (the shell is %d), not the restored init's %d\n%s", fg, sh.Process.Pid, restored[0], lastLines(string(b), 20))
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", fg))
	if err != nil {
		t.Fatalf("terminal B's foreground group %d: %v", fg, err)
	}
	var nspid []string
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "NSpid:"); ok {
			nspid = strings.Fields(v)
		}
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", fg))
	if len(nspid) != 2 || nspid[1] != "1" || strings.TrimSpace(string(comm)) != filepath.Base(bin)[:min(15, len(filepath.Base(bin)))] {
		t.Errorf("terminal B's foreground group %d is %q with NSpid %v, want the restored init (pid 1 of its namespace)", fg, strings.TrimSpace(string(comm)), nspid)
	}
	if pg, err := unix.Getpgid(fg); err != nil || pg != fg {
		t.Errorf("restored init %d: process group %d (%v), want its own", fg, pg, err)
	}
}

// extTTYGroup returns the foreground group and session of the one
// EXT_TTY entry of crtools show --json's output of tty-info.img.
func extTTYGroup(t *testing.T, out string) (pgrp, sid int) {
	t.Helper()
	var doc struct {
		Entries []map[string]any `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("parse show output: %v\n%s", err, out)
	}
	n := 0
	for _, e := range doc.Entries {
		if e["type"] != "EXT_TTY" {
			continue
		}
		n++
		pgrp, _ = strconv.Atoi(fmt.Sprint(e["pgrp"]))
		sid, _ = strconv.Atoi(fmt.Sprint(e["sid"]))
	}
	if n != 1 {
		t.Fatalf("%d EXT_TTY entries in tty-info.img, want 1\n%s", n, out)
	}
	return pgrp, sid
}

// runningExe lists the processes whose executable is bin.
func runningExe(bin string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == bin {
			out = append(out, pid)
		}
	}
	return out
}
