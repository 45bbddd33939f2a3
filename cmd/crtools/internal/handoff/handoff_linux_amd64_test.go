package handoff

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestHolder runs a child that makes a holder and then waits for its
// stdin to end. While the child lives, the holder is its child, shares
// its address space (the same maps), holds one descriptor (its pipe) and
// blocks every signal; when the child exits, the holder exits 0 and is
// re-parented to this test process (a child subreaper), which reaps it.
func TestHolder(t *testing.T) {
	if os.Getenv("HANDOFF_TEST_CHILD") != "" {
		pid := start()
		fmt.Printf("holder %d\n", pid)
		bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes stdin
		os.Exit(0)
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHolder$")
	cmd.Env = append(os.Environ(), "HANDOFF_TEST_CHILD=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out := bufio.NewReader(stdout)
	line, err := out.ReadString('\n')
	var holder int
	if _, serr := fmt.Sscanf(line, "holder %d", &holder); err != nil || serr != nil || holder <= 0 {
		stdin.Close()
		cmd.Wait()
		t.Fatalf("child said %q (%v): want the holder's PID", line, err)
	}
	// It closes its descriptors, then sleeps in its read (the bound is
	// for a hang only).
	status := procStatus(t, holder)
	for end := time.Now().Add(10 * time.Second); !strings.HasPrefix(status["State"], "S") && time.Now().Before(end); {
		time.Sleep(time.Millisecond)
		status = procStatus(t, holder)
	}
	if status["PPid"] != strconv.Itoa(cmd.Process.Pid) || !strings.HasPrefix(status["State"], "S") {
		t.Errorf("holder %d: PPid %s, State %s; want a child of %d, sleeping", holder, status["PPid"], status["State"], cmd.Process.Pid)
	}
	// Its parent's policy: at SCHED_IDLE it waited for an idle CPU to
	// unmap the address space, seconds on a busy host.
	if policy, want := procSched(t, holder, "policy"), procSched(t, cmd.Process.Pid, "policy"); policy != want {
		t.Errorf("holder's scheduling policy %q, want its parent's, %q", policy, want)
	}
	// Every signal but SIGKILL and SIGSTOP (which cannot be) is blocked.
	if blk, _ := strconv.ParseUint(status["SigBlk"], 16, 64); blk != ^uint64(0)&^(1<<8|1<<18) {
		t.Errorf("holder's SigBlk %s, want every signal but SIGKILL and SIGSTOP", status["SigBlk"])
	}
	childMaps, err1 := os.ReadFile(fmt.Sprintf("/proc/%d/maps", cmd.Process.Pid))
	holderMaps, err2 := os.ReadFile(fmt.Sprintf("/proc/%d/maps", holder))
	if err1 != nil || err2 != nil || string(childMaps) != string(holderMaps) {
		t.Errorf("holder's maps differ from its parent's (%v, %v): not the same address space", err1, err2)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", holder))
	if err != nil || len(fds) != 1 {
		t.Errorf("holder's descriptors: %d (%v), want its pipe only", len(fds), err)
	} else if link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", holder, fds[0].Name())); !strings.HasPrefix(link, "pipe:") {
		t.Errorf("holder's descriptor %s is %s, want its pipe", fds[0].Name(), link)
	}

	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	// The holder exits on its own once the child's files are closed, and
	// comes to this process to be reaped. The bound is for a hang only.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(holder, &ws, unix.WNOHANG|unix.WALL, nil)
		if err != nil {
			t.Fatalf("wait for holder %d: %v (not re-parented here)", holder, err)
		}
		if pid == holder {
			if !ws.Exited() || ws.ExitStatus() != 0 {
				t.Errorf("holder %d: %v, want exit 0", holder, ws)
			}
			return
		}
		if time.Now().After(deadline) {
			unix.Kill(holder, unix.SIGKILL)
			t.Fatalf("holder %d still there 10 s after its parent exited", holder)
		}
		time.Sleep(time.Millisecond)
	}
}

// procStatus reads /proc/PID/status into a map of its fields.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// procSched returns the value of field in /proc/PID/sched.
func procSched(t *testing.T, pid int, field string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/sched", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == field {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
