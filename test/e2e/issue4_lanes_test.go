package e2e

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/test/harness"
)

// TestIssue4Lanes restores a tree of a root and 12 children that share
// nothing but the root's stdio (lanes.c): with two CPUs restore takes half
// of the children over to a second tracer thread (engine/restore/lanes.go),
// which the log says. Every child checks its own name, umask, parent-death
// signal, blocked signal, handler, its own file (offset, identity, mode),
// its heap and a mapping, and reports; verify checks every child's report
// moves on with the pid fork gave it, and /proc of the tree is compared as
// for the other trees. Before that, restores that fail in the second lane
// only (the last child's own file gone) and in both lanes (the first
// child's too) exit 1 and leave no task of the tree behind.
func TestIssue4Lanes(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	w, before, dir := dumpFan(t, "lanes.c", 12)
	pids := pstreePids(t, dir)
	lanesNeeded := runtime.NumCPU() >= 2
	for _, c := range []struct {
		name string
		hide []int // children whose own file is gone at restore
	}{
		{"second lane fails", []int{11}},
		{"both lanes fail", []int{0, 11}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, i := range c.hide {
				p := filepath.Join(w.Dir, fmt.Sprintf("lane-%d.dat", i))
				if err := os.Rename(p, p+".hidden"); err != nil {
					t.Fatal(err)
				}
				defer os.Rename(p+".hidden", p)
			}
			logFile := filepath.Join(t.TempDir(), "restore.log")
			out, err := exec.Command(harness.BuildCrtools(t), "restore", "-D", dir, "-d", "-v", "2", "-o", logFile).CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Errorf("restore: %v, want exit 1\n%s", err, lastLines(string(out), 15))
			}
			t.Logf("restore failed as wanted: %s", lastLines(string(out), 1))
			log, _ := os.ReadFile(logFile)
			if lanesNeeded && !strings.Contains(string(log), "second tracer restores processes") {
				t.Errorf("restore used one tracer on %d CPUs; its log:\n%s", runtime.NumCPU(), lastLines(string(log), 30))
			}
			for _, pid := range pids {
				rp.Forget(pid)
			}
			noTreeTaskLeft(t, pids)
		})
	}
	restoreDetached(t, w, dir)
	after := snapTree(t, w.Pid)
	compareSnaps(t, before, after, false)
	log := readLog(w, "restore.log")
	// Two CPUs or more (CI has them): the second lane must have run, else
	// this test would not test it.
	if lanesNeeded && !strings.Contains(log, "second tracer restores processes") {
		t.Errorf("restore used one tracer on %d CPUs; its log:\n%s", runtime.NumCPU(), log)
	}
	verifyRestored(t, w)
	waitExit(t, rp, w.Pid, 0)
}

// noTreeTaskLeft fails unless, within 5 s, none of pids is a task of the
// restore: a puppet (crtools' binary, "exe" until named) or a task named
// as the tree's (lanes, lane-N). A parked puppet of the second lane has
// neither the workload's environment nor any state to tell it by.
func noTreeTaskLeft(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		for _, pid := range pids {
			comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if err != nil {
				continue
			}
			c := strings.TrimSpace(string(comm))
			if c == "exe" || strings.HasPrefix(c, "lane") {
				st, _ := procStat(pid)
				left = append(left, fmt.Sprintf("%d (%s, state %s, parent %d)", pid, c, st.state, st.ppid))
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("tasks of the tree left behind: %s", strings.Join(left, ", "))
			for _, pid := range pids {
				harness.KillTree(pid)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIssue4LanesProgressBar: with a progress bar (stderr a terminal and
// -v 1 or more) restore still uses the second lane, whose page copies add
// to the bar's count at the same time as the main lane's; the bar is drawn
// and the restored tree checks itself as in TestIssue4Lanes.
func TestIssue4LanesProgressBar(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	w, before, dir := dumpFan(t, "lanes.c", 12)
	master, slavePath := harness.OpenPty(t)
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var bar bytes.Buffer
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		_, _ = io.Copy(&bar, master) // ends with EIO once the slave is closed
	}()
	logFile := filepath.Join(w.Dir, "restore.log")
	cmd := exec.Command(harness.BuildCrtools(t), "restore", "-D", dir, "-d", "-v", "2", "-o", logFile)
	cmd.Stdout, cmd.Stderr = slave, slave
	start := time.Now()
	err = cmd.Run()
	t.Logf("restore took %v", time.Since(start))
	slave.Close()
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Error("terminal output not drained")
	}
	if err != nil {
		t.Fatalf("restore with a progress bar: %v\n%s\n%s", err, bar.String(), lastLines(readLog(w, "restore.log"), 30))
	}
	if !strings.Contains(bar.String(), "\r\x1b[K[") || !strings.Contains(bar.String(), "%") {
		t.Errorf("no progress bar with memory percentage on the terminal: %q", bar.String())
	}
	log := readLog(w, "restore.log")
	if runtime.NumCPU() >= 2 && !strings.Contains(log, "second tracer restores processes") {
		t.Errorf("restore with a progress bar used one tracer on %d CPUs; its log:\n%s", runtime.NumCPU(), lastLines(log, 30))
	}
	after := snapTree(t, w.Pid)
	compareSnaps(t, before, after, false)
	verifyRestored(t, w)
	waitExit(t, rp, w.Pid, 0)
}
