package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/test/harness"
)

// mainexitTids reads the tids mainexit.c wrote (waiter, sleeper, spinner).
func mainexitTids(t *testing.T, w *harness.Workload) []int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(w.Dir, "tids"))
	if err != nil {
		t.Fatal(err)
	}
	var tids []int
	for _, f := range strings.Fields(string(b)) {
		tid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("tids file %q: %v", b, err)
		}
		tids = append(tids, tid)
	}
	if len(tids) != 3 {
		t.Fatalf("tids file %q: want 3 tids", b)
	}
	return tids
}

// taskStates maps each thread of pid in /proc/PID/task to its state letter.
func taskStates(t *testing.T, pid int) map[int]byte {
	t.Helper()
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatalf("threads of pid %d: %v", pid, err)
	}
	m := map[int]byte{}
	for _, e := range es {
		tid, _ := strconv.Atoi(e.Name())
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) {
			t.Fatalf("stat of thread %d: %q", tid, b)
		}
		m[tid] = b[i+2]
	}
	return m
}

// checkLeaderExited checks that pid's threads are its zombie leader and
// tids, running, as in a process whose main thread called pthread_exit.
// It waits (up to 10 s) for the leader to become a zombie: mainexit.c's
// sleeper says ready as soon as the threads run, and main may not have
// got through pthread_exit by then on a loaded machine (a dump then
// refuses it as exiting, and the check saw state 'R' or 'S').
func checkLeaderExited(t *testing.T, pid int, tids []int) {
	t.Helper()
	st := taskStates(t, pid)
	for deadline := time.Now().Add(10 * time.Second); st[pid] != 'Z' && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		st = taskStates(t, pid)
	}
	if st[pid] != 'Z' {
		t.Errorf("leader %d in state %q, want Z (threads %v)", pid, st[pid], st)
	}
	var got []int
	for tid, s := range st {
		if tid == pid {
			continue
		}
		if s == 'Z' || s == 'X' {
			t.Errorf("thread %d of pid %d in state %c", tid, pid, s)
		}
		got = append(got, tid)
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(tids))
	if !slices.Equal(got, want) {
		t.Errorf("threads of pid %d besides the leader: %v, want %v", pid, got, want)
	}
}

// exitedLeaderImages copies the images in dir with the core of pid's
// leader made that of a main thread that has exited: the process's state
// stays, the leader's registers and its own thread state go.
func exitedLeaderImages(t *testing.T, dir string, pid int) string {
	t.Helper()
	return imagesWithCore(t, dir, pid, func(core *pb.CoreEntry) {
		core.ThreadInfo = nil
		tc := core.ThreadCore
		tc.FutexRla, tc.FutexRlaLen = new(uint64), new(uint32)
		tc.SignalsP, tc.RseqEntry = nil, nil
	})
}

// TestRestoreLeaderExitedImages: images of a four-thread process whose
// leader's core has no registers (what dump writes for a process whose
// main thread has exited; made here from a dump of one whose main thread
// only sleeps) restore as such a process: the same pid and tids, the
// leader a zombie in /proc/PID/task, the three other threads (one in a
// condvar wait, one sleeping, one spinning) counting on, and the exit
// status the test (its parent, a subreaper) reaps the one of the thread
// that ends the process: exit_group(3).
func TestRestoreLeaderExitedImages(t *testing.T) {
	bin := harness.BuildC(t, "mainexit.c")
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	w := harness.StartWorkload(t, bin, "park", "group")
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	tids := mainexitTids(t, w)
	dir := dumpKill(t, w)
	rp.Forget(w.Pid)
	restoreDetached(t, w, exitedLeaderImages(t, dir, w.Pid))
	checkLeaderExited(t, w.Pid, tids)
	if err := w.Verify(10 * time.Second); err != nil {
		t.Fatalf("after restore: %v\n%s", err, readLog(w, "restore.log"))
	}
	time.Sleep(20 * time.Millisecond)
	w.MustVerify(10 * time.Second)
	checkLeaderExited(t, w.Pid, tids)
	exitAndReap(t, rp, w, 3)
}

// TestDumpRestoreMainExit: mainexit.c's main thread calls pthread_exit
// after starting three threads that count (one in a condvar wait, one
// sleeping, one spinning). Dump writes its leader's core without
// registers; restore gives back the same pid and tids, the leader a zombie
// again, the threads counting on, and the status its parent (the test, a
// subreaper) reaps once the threads end: "group", the last thread's
// exit_group(3); "thread", each thread's own exit, the last one's 5 (on
// this kernel the process's status is the last thread's exit code, not
// its leader's 0 from pthread_exit: TestMainExitStatusUndumped).
func TestDumpRestoreMainExit(t *testing.T) {
	bin := harness.BuildC(t, "mainexit.c")
	for _, tc := range []struct {
		end  string
		want int
		kid  bool
	}{{"group", 3, false}, {"thread", 5, false}, {"group", 3, true}} {
		name := tc.end
		args := []string{"exit", tc.end}
		if tc.kid {
			name += "-kid"
			args = append(args, "kid")
		}
		t.Run(name, func(t *testing.T) {
			harness.RequireRoot(t)
			rp := harness.Subreaper()
			w := harness.StartWorkload(t, bin, args...)
			w.MustReady(10 * time.Second)
			w.MustVerify(10 * time.Second)
			tids := mainexitTids(t, w)
			checkLeaderExited(t, w.Pid, tids)
			comm, uids := procComm(t, w.Pid), statusLine(t, w.Pid, "Uid:")
			dir := dumpKill(t, w)
			rp.Forget(w.Pid)
			var core pb.CoreEntry
			if err := image.ReadOne(dir, image.Core, uint64(w.Pid), &core); err != nil {
				t.Fatal(err)
			}
			if core.ThreadInfo != nil || core.Tc == nil || core.Tc.GetTaskState() != 1 {
				t.Errorf("core of the exited leader %d: thread_info %v, task state %d; want no registers, alive", w.Pid, core.ThreadInfo != nil, core.Tc.GetTaskState())
			}
			if core.Tc.GetComm() != comm || core.GetThreadCore().GetCreds() == nil {
				t.Errorf("core of the exited leader %d: comm %q (want %q), creds %v", w.Pid, core.Tc.GetComm(), comm, core.GetThreadCore().GetCreds())
			}
			restoreDetached(t, w, dir)
			checkLeaderExited(t, w.Pid, tids)
			if c, u := procComm(t, w.Pid), statusLine(t, w.Pid, "Uid:"); c != comm || u != uids {
				t.Errorf("restored leader %d: comm %q, %s; before the dump %q, %s", w.Pid, c, u, comm, uids)
			}
			if tc.kid {
				// The child would be a heir (a single-threaded leaf),
				// forked by its parent's leader: not when that has
				// exited (it exits again before the heir is forked).
				// Its parent thread's exit must not end it either
				// (mainexit.c checks that it is still the child).
				if log := readLog(w, "restore.log"); !strings.Contains(log, "parent's main thread has exited") {
					t.Errorf("the child was not refused as a heir; the log:\n%s", lastLines(log, 30))
				}
			}
			w.MustVerify(10 * time.Second)
			time.Sleep(20 * time.Millisecond)
			w.MustVerify(10 * time.Second)
			exitAndReap(t, rp, w, tc.want)
		})
	}
}

// TestMainExitStatusUndumped is TestDumpRestoreMainExit's end without a
// dump: the statuses it expects are the kernel's, not crtools' (with
// threads ending by exit alone, the last one's code: 5).
func TestMainExitStatusUndumped(t *testing.T) {
	bin := harness.BuildC(t, "mainexit.c")
	for _, tc := range []struct {
		end  string
		want int
	}{{"group", 3}, {"thread", 5}} {
		t.Run(tc.end, func(t *testing.T) {
			harness.RequireRoot(t)
			w := harness.StartWorkload(t, bin, "exit", tc.end)
			w.MustReady(10 * time.Second)
			w.MustVerify(10 * time.Second)
			checkLeaderExited(t, w.Pid, mainexitTids(t, w))
			if err := w.VerifyAndExit(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			select {
			case <-w.Exited():
			case <-time.After(10 * time.Second):
				t.Fatal("workload did not exit")
			}
			code := 0
			if err := w.ExitErr(); err != nil {
				var ee *exec.ExitError
				if !errors.As(err, &ee) {
					t.Fatal(err)
				}
				code = ee.ExitCode()
			}
			if code != tc.want {
				t.Fatalf("workload exited with %d (%v), want %d", code, w.ExitErr(), tc.want)
			}
		})
	}
}

// TestDumpRestoreMainExitStopped: mainexit.c stopped by SIGSTOP after its
// main thread exited comes back stopped (every live thread in 'T', the
// leader a zombie), and runs on after SIGCONT.
func TestDumpRestoreMainExitStopped(t *testing.T) {
	bin := harness.BuildC(t, "mainexit.c")
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	w := harness.StartWorkload(t, bin, "exit", "group")
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	tids := mainexitTids(t, w)
	waitStates := func(want byte) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			st := taskStates(t, w.Pid)
			ok := st[w.Pid] == 'Z'
			for _, tid := range tids {
				ok = ok && st[tid] == want
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("threads of pid %d: %v, want the leader in Z and the others in %c", w.Pid, st, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if err := unix.Kill(w.Pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitStates('T')
	dir := dumpKill(t, w)
	rp.Forget(w.Pid)
	restoreDetached(t, w, dir)
	waitStates('T')
	if err := unix.Kill(w.Pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	checkLeaderExited(t, w.Pid, tids)
	w.MustVerify(10 * time.Second)
	exitAndReap(t, rp, w, 3)
}

// exitAndReap has the restored workload w verify and exit, reaps it as
// rp and checks its exit status is want.
func exitAndReap(t *testing.T, rp *harness.Reaper, w *harness.Workload, want int) {
	t.Helper()
	if err := w.VerifyAndExit(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	ws, err := rp.WaitPid(w.Pid, 10*time.Second)
	if err != nil {
		t.Fatalf("wait for restored workload %d: %v", w.Pid, err)
	}
	if !ws.Exited() || ws.ExitStatus() != want {
		t.Fatalf("restored workload exited with %v, want exit status %d\n%s", ws, want, w.Output())
	}
}

// procComm is /proc/PID/comm without its newline.
func procComm(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(string(b), "\n")
}

// statusLine is the line of /proc/PID/status that starts with key.
func statusLine(t *testing.T, pid int, key string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, key) {
			return l
		}
	}
	t.Fatalf("/proc/%d/status has no %s line", pid, key)
	return ""
}
