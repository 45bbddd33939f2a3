package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/test/harness"
)

// TestDumpRestoreLeaderExited: a process whose main thread called
// pthread_exit while other threads run (its leader a zombie) is dumped and
// restored as such: "self", the tree's root; "child", a child of the root.
// The workload checks after the restore that the leader is still a zombie
// and that the counting thread counts on; the test that the pid and the
// threads' tids and states are the same and, for "child", that it is
// still the root's child.
func TestDumpRestoreLeaderExited(t *testing.T) {
	bin := harness.BuildC(t, "leaderexit.c")
	for _, mode := range []string{"self", "child"} {
		t.Run(mode, func(t *testing.T) {
			harness.RequireRoot(t)
			rp := harness.Subreaper()
			w := harness.StartWorkload(t, bin, mode)
			// The harness's Kill cannot always tell that a process
			// with a zombie leader is the workload.
			t.Cleanup(func() { _ = unix.Kill(w.Pid, unix.SIGKILL) })
			w.MustReady(10 * time.Second)
			w.MustVerify(10 * time.Second)
			target := w.Pid
			if mode == "child" {
				b, err := os.ReadFile(filepath.Join(w.Dir, "child"))
				if err != nil {
					t.Fatal(err)
				}
				if target, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = unix.Kill(target, unix.SIGKILL) })
			}
			before := taskStates(t, target)
			if before[target] != 'Z' || len(before) < 2 {
				t.Fatalf("pid %d before the dump: threads %v, want a zombie leader and live threads", target, before)
			}
			dir := dumpKill(t, w)
			rp.Forget(w.Pid)
			restoreDetached(t, w, dir)
			after := taskStates(t, target)
			for tid, s := range before {
				if after[tid] != s && !(s == 'S' && after[tid] == 'R') && !(s == 'R' && after[tid] == 'S') {
					t.Errorf("thread %d of pid %d in state %q after the restore, was %q (threads %v)", tid, target, after[tid], s, after)
				}
			}
			if len(after) != len(before) {
				t.Errorf("threads of pid %d after the restore: %v, before %v", target, after, before)
			}
			if mode == "child" {
				if ppid := parentPid(t, target); ppid != w.Pid {
					t.Errorf("parent of the restored child %d: %d, want %d", target, ppid, w.Pid)
				}
			}
			verifyRestored(t, w)
			ws, err := rp.WaitPid(w.Pid, 10*time.Second)
			if err != nil {
				t.Fatalf("wait for restored workload %d: %v", w.Pid, err)
			}
			if !ws.Exited() || ws.ExitStatus() != 0 {
				t.Fatalf("restored workload exited with %v, want 0\n%s", ws, w.Output())
			}
		})
	}
}

// parentPid is the parent pid in /proc/PID/stat.
func parentPid(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}
