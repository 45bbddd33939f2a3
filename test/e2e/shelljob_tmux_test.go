package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/test/harness"
)

// tmuxServer drives a private tmux server (its own socket directory and
// -L name), killed when the test ends.
type tmuxServer struct {
	t    *testing.T
	bin  string
	name string
	env  []string
}

func newTmux(t *testing.T) *tmuxServer {
	t.Helper()
	bin, err := exec.LookPath("tmux")
	if err != nil {
		t.Fatalf("tmux is needed (Debian package tmux, installed by .ci/run): %v", err)
	}
	// A short socket directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "crtmux")
	if err != nil {
		t.Fatal(err)
	}
	s := &tmuxServer{t: t, bin: bin, name: fmt.Sprintf("crtools-e2e-%d", os.Getpid()), env: []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir, "TERM=xterm",
		"TMUX_TMPDIR=" + dir, "HISTFILE=/dev/null", "LANG=C",
	}}
	t.Cleanup(func() {
		// With the server's environment: its socket is in TMUX_TMPDIR.
		// Without it kill-server looked in /tmp/tmux-0, missed, and the
		// server (and its shells) outlived the test with its socket
		// directory removed below.
		kill := exec.Command(bin, "-L", s.name, "kill-server")
		kill.Env = s.env
		if out, err := kill.CombinedOutput(); err != nil {
			t.Errorf("tmux kill-server: %v\n%s", err, out)
		}
		os.RemoveAll(dir)
	})
	return s
}

func (s *tmuxServer) run(args ...string) string {
	s.t.Helper()
	cmd := exec.Command(s.bin, append([]string{"-L", s.name, "-f", "/dev/null"}, args...)...)
	cmd.Env = s.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (s *tmuxServer) capture(pane string) string {
	s.t.Helper()
	return s.run("capture-pane", "-p", "-t", pane)
}

// waitScreen polls the pane until ok says yes (bounded), and returns the
// last screen seen.
func (s *tmuxServer) waitScreen(pane string, d time.Duration, what string, ok func(string) bool) string {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for {
		scr := s.capture(pane)
		if ok(scr) {
			return scr
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("pane %s: %s: not seen within %v; screen:\n%s", pane, what, d, scr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ttyStat gives pgrp, session, tty_nr and tpgid of /proc/PID/stat.
func ttyStat(pid int) (pgrp, sid, ttyNr, tpgid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 6 {
		return 0, 0, 0, 0, fmt.Errorf("parse %q", s)
	}
	v := make([]int, 4)
	for i, j := range []int{2, 3, 4, 5} {
		if v[i], err = strconv.Atoi(f[j]); err != nil {
			return 0, 0, 0, 0, err
		}
	}
	return v[0], v[1], v[2], v[3], nil
}

// childNamed waits (bounded) for a child of parent with that comm.
func childNamed(t *testing.T, parent int, comm string, d time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", parent, parent))
		for _, p := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(p)
			if c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(c)) == comm {
				return pid
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s child of %d within %v", comm, parent, d)
	return 0
}

var (
	topClock = regexp.MustCompile(`top - (\d\d:\d\d:\d\d)`)
	// The typed command line shows "CRTOOLS-RC=$?", the shell's answer a number.
	crtoolsRC = regexp.MustCompile(`CRTOOLS-RC=(\d+)`)
)

// TestShellJobTmuxTop: top -d 0.2 runs as a job of an interactive shell in
// tmux pane A; crtools dump -j checkpoints it from outside (and kills it);
// crtools restore -j typed in pane B brings it back there: top keeps
// redrawing (its clock advances), it is in pane B's shell session with its
// own process group as the terminal's foreground (so it gets the keys and
// SIGWINCH: a wider pane makes it draw the COMMAND column it had no room
// for), and q quits it, crtools exiting with top's status.
func TestShellJobTmuxTop(t *testing.T) {
	harness.RequireRoot(t)
	harness.Subreaper()
	if _, err := exec.LookPath("top"); err != nil {
		t.Fatalf("top is needed (Debian package procps, installed by .ci/run): %v", err)
	}
	crt := harness.BuildCrtools(t)
	start := time.Now()
	work := t.TempDir()
	tm := newTmux(t)
	shell := "bash --norc --noprofile -i"
	tm.run("new-session", "-d", "-x", "200", "-y", "40", "-s", "w", shell)
	tm.run("split-window", "-h", "-t", "w", shell)
	type pane struct {
		id  string
		pid int
		tty string
	}
	var panes []pane
	for _, l := range strings.Split(strings.TrimSpace(tm.run("list-panes", "-t", "w", "-F", "#{pane_id} #{pane_pid} #{pane_tty}")), "\n") {
		f := strings.Fields(l)
		pid, _ := strconv.Atoi(f[1])
		panes = append(panes, pane{f[0], pid, f[2]})
	}
	if len(panes) != 2 {
		t.Fatalf("want 2 panes, got %v", panes)
	}
	a, b := panes[0], panes[1]
	// Pane B is made narrow now; top is dumped at pane A's width.
	tm.run("resize-pane", "-t", b.id, "-x", "60")

	tm.run("send-keys", "-t", a.id, "top -d 0.2", "Enter")
	top := childNamed(t, a.pid, "top", 10*time.Second)
	tm.waitScreen(a.id, 10*time.Second, "top's screen", func(s string) bool { return strings.Contains(s, "load average") })
	if pg, sid, _, tpg, err := ttyStat(top); err != nil || pg != top || sid != a.pid || tpg != top {
		t.Fatalf("top %d before dump: pgrp %d sid %d tpgid %d (%v); want a foreground job of shell %d", top, pg, sid, tpg, err, a.pid)
	}

	dir := filepath.Join(work, "images")
	if code, out := crtools(t, "dump", "-j", "-t", strconv.Itoa(top), "-D", dir, "-v", "2", "-o", filepath.Join(work, "dump.log")); code != 0 {
		t.Fatalf("crtools dump -j: exit %d\n%s", code, out)
	}
	// Pane A's shell reaps the killed top and prints its prompt again.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", top)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dumped top %d still exists", top)
		}
		time.Sleep(10 * time.Millisecond)
	}

	t.Logf("top %d dumped at %v", top, time.Since(start))
	restoreLog := filepath.Join(work, "restore.log")
	tm.run("send-keys", "-t", b.id, fmt.Sprintf("clear; %s restore -j -D %s -v 2 -o %s; echo CRTOOLS-RC=$?", crt, dir, restoreLog), "Enter")
	clockOf := func(s string) string {
		if m := topClock.FindStringSubmatch(s); m != nil {
			return m[1]
		}
		return ""
	}
	first := clockOf(tm.waitScreen(b.id, 15*time.Second, "restored top's screen", func(s string) bool {
		return clockOf(s) != "" || crtoolsRC.MatchString(s)
	}))
	if first == "" {
		logb, _ := os.ReadFile(restoreLog)
		t.Fatalf("restore ended before top drew in pane B:\n%s\n%s", tm.capture(b.id), logb)
	}
	// The clock has a one-second resolution: it moves within ~2 s if top
	// keeps redrawing.
	tm.waitScreen(b.id, 5*time.Second, "top's clock advancing past "+first, func(s string) bool {
		c := clockOf(s)
		return c != "" && c != first
	})
	t.Logf("top %d restored and redrawing at %v", top, time.Since(start))
	pg, sid, ttyNr, tpg, err := ttyStat(top)
	if err != nil {
		t.Fatalf("restored top %d: %v", top, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(b.tty, &st); err != nil {
		t.Fatal(err)
	}
	if sid != b.pid || pg != top || tpg != top || uint64(ttyNr) != st.Rdev {
		t.Errorf("restored top %d: pgrp %d sid %d tty %#x tpgid %d; want pgrp %d in shell %d's session, foreground of %s (%#x)",
			top, pg, sid, ttyNr, tpg, top, b.pid, b.tty, st.Rdev)
	}
	// 60 columns have no room for the COMMAND header; 140 have. top sees
	// the new size only through SIGWINCH to the terminal's foreground group.
	if scr := tm.capture(b.id); strings.Contains(scr, "COMMAND") {
		t.Fatalf("pane B at 60 columns already shows COMMAND:\n%s", scr)
	}
	tm.run("resize-pane", "-t", b.id, "-x", "140")
	tm.waitScreen(b.id, 5*time.Second, "top redrawn for 140 columns (COMMAND header)", func(s string) bool { return strings.Contains(s, "COMMAND") })

	tm.run("send-keys", "-t", b.id, "q")
	scr := tm.waitScreen(b.id, 10*time.Second, "crtools' exit after q", func(s string) bool { return crtoolsRC.MatchString(s) })
	if m := crtoolsRC.FindStringSubmatch(scr); m[1] != "0" {
		logb, _ := os.ReadFile(restoreLog)
		t.Fatalf("crtools restore -j did not exit 0 after top quit:\n%s\n%s", scr, logb)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", top)); !os.IsNotExist(err) {
		t.Errorf("top %d still exists after q (%v)", top, err)
	}
	// The shell has its terminal back.
	if _, _, _, tpg, err := ttyStat(b.pid); err != nil || tpg != b.pid {
		t.Errorf("pane B's shell %d: terminal foreground %d (%v), want the shell's group", b.pid, tpg, err)
	}
}
