package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/restore"
	"github.com/crtools/crtools/test/harness"
)

// Acceptance tests of issue 4, checked from outside the workloads as well
// as by their own verify: every TID and per-thread signal state, the
// tree's PIDs, parents, groups, sessions, the zombie and the stopped task,
// a fork storm while freezing, and failed restores that leave nothing
// behind.

// taskSnap is what /proc says about one thread.
type taskSnap struct {
	state           string
	ppid, pgid, sid int
	sigBlk, sigPnd  string
	sigIgn, sigCgt  string
	comm            string
}

// treeSnap maps every process of a tree to its threads (TID -> state).
type treeSnap map[int]map[int]taskSnap

func readTaskSnap(pid, tid int) (taskSnap, error) {
	var s taskSnap
	base := fmt.Sprintf("/proc/%d/task/%d/", pid, tid)
	b, err := os.ReadFile(base + "stat")
	if err != nil {
		return s, err
	}
	str := string(b)
	i := strings.LastIndexByte(str, ')')
	if i < 0 {
		return s, fmt.Errorf("parse %sstat", base)
	}
	if _, err := fmt.Sscan(str[i+2:], &s.state, &s.ppid, &s.pgid, &s.sid); err != nil {
		return s, fmt.Errorf("parse %sstat: %w", base, err)
	}
	c, _ := os.ReadFile(base + "comm")
	s.comm = strings.TrimSpace(string(c))
	st, err := os.ReadFile(base + "status")
	if err != nil {
		return s, err
	}
	for _, l := range strings.Split(string(st), "\n") {
		k, v, _ := strings.Cut(l, ":")
		v = strings.TrimSpace(v)
		switch k {
		case "SigBlk":
			s.sigBlk = v
		case "SigPnd":
			s.sigPnd = v
		case "SigIgn":
			s.sigIgn = v
		case "SigCgt":
			s.sigCgt = v
		}
	}
	return s, nil
}

func threadsOf(pid int) []int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var tids []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, n)
		}
	}
	sort.Ints(tids)
	return tids
}

func childrenOf(pid int) []int {
	var kids []int
	for _, tid := range threadsOf(pid) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, tid))
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				kids = append(kids, n)
			}
		}
	}
	return kids
}

// snapTree reads the tree under root from /proc.
func snapTree(t *testing.T, root int) treeSnap {
	t.Helper()
	snap := treeSnap{}
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if _, ok := snap[pid]; ok {
			continue
		}
		threads := map[int]taskSnap{}
		for _, tid := range threadsOf(pid) {
			s, err := readTaskSnap(pid, tid)
			if err != nil {
				continue // a thread that just exited
			}
			threads[tid] = s
		}
		if len(threads) == 0 {
			// A zombie leader has no readable task dir on some kernels:
			// read the process itself.
			s, err := readTaskSnap(pid, pid)
			if err != nil {
				if pid == root {
					t.Fatalf("read /proc of %d: %v", pid, err)
				}
				continue // reaped since its parent listed it (a running tree)
			}
			threads[pid] = s
		}
		snap[pid] = threads
		queue = append(queue, childrenOf(pid)...)
	}
	return snap
}

// running folds the states a running thread may be caught in into one.
func running(state string) string {
	switch state {
	case "R", "S", "D":
		return "running"
	}
	return state
}

// compareSnaps checks that after holds the same processes and threads as
// before, with the same links, groups, sessions, states (running, stopped,
// zombie), names and signal masks. Pending signals are compared only for
// stopped threads (a running one may have been sent one since).
//
// newThreadsOK: the program may start threads of its own at any time (the
// Go runtime does); the dumped ones must all be there still.
func compareSnaps(t *testing.T, before, after treeSnap, newThreadsOK bool) {
	t.Helper()
	for pid, bt := range before {
		at, ok := after[pid]
		if !ok {
			t.Errorf("process %d (%s) is missing after restore", pid, bt[pid].comm)
			continue
		}
		for tid, b := range bt {
			a, ok := at[tid]
			if !ok {
				t.Errorf("process %d: thread %d is missing after restore", pid, tid)
				continue
			}
			if running(a.state) != running(b.state) {
				t.Errorf("thread %d/%d: state %s, was %s", pid, tid, a.state, b.state)
			}
			if a.ppid != b.ppid && tid == pid && pid != rootOf(before) {
				t.Errorf("process %d: parent %d, was %d", pid, a.ppid, b.ppid)
			}
			if a.pgid != b.pgid || a.sid != b.sid {
				t.Errorf("thread %d/%d: group %d session %d, was %d %d", pid, tid, a.pgid, a.sid, b.pgid, b.sid)
			}
			if a.comm != b.comm {
				t.Errorf("thread %d/%d: name %q, was %q", pid, tid, a.comm, b.comm)
			}
			if b.state != "Z" && (a.sigBlk != b.sigBlk || a.sigIgn != b.sigIgn || a.sigCgt != b.sigCgt) {
				t.Errorf("thread %d/%d: blocked/ignored/caught %s/%s/%s, was %s/%s/%s", pid, tid,
					a.sigBlk, a.sigIgn, a.sigCgt, b.sigBlk, b.sigIgn, b.sigCgt)
			}
			if b.state == "T" && a.sigPnd != b.sigPnd {
				t.Errorf("stopped thread %d/%d: pending %s, was %s", pid, tid, a.sigPnd, b.sigPnd)
			}
		}
		for tid := range at {
			if _, ok := bt[tid]; !ok && !newThreadsOK {
				t.Errorf("process %d: thread %d appeared after restore", pid, tid)
			}
		}
	}
	for pid := range after {
		if _, ok := before[pid]; !ok {
			t.Errorf("process %d appeared in the tree after restore", pid)
		}
	}
}

// rootOf returns the process of the snapshot that is no other's child.
func rootOf(s treeSnap) int {
	for pid, th := range s {
		if _, ok := s[th[pid].ppid]; !ok {
			return pid
		}
	}
	return 0
}

// dumpRestoreSnap runs the whole cycle and compares /proc of the tree
// before the dump and after the restore; check runs extra checks on the
// restored snapshot.
func dumpRestoreSnap(t *testing.T, bin string, args []string, newThreadsOK bool, check func(t *testing.T, before, after treeSnap)) {
	t.Helper()
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	w := harness.StartWorkload(t, bin, args...)
	w.MustReady(30 * time.Second)
	w.MustVerify(10 * time.Second)
	before := snapTree(t, w.Pid)
	dir := dumpKill(t, w)
	for pid := range before {
		rp.Forget(pid)
	}
	restoreDetached(t, w, dir)
	after := snapTree(t, w.Pid)
	compareSnaps(t, before, after, newThreadsOK)
	if check != nil {
		check(t, before, after)
	}
	verifyRestored(t, w)
	waitExit(t, rp, w.Pid, 0)
}

func threadCount(s treeSnap) int {
	n := 0
	for _, th := range s {
		n += len(th)
	}
	return n
}

// TestIssue4Threads64: 64 workers (counters, TLS, mutex/condvar
// ping-pong, per-thread masks and altstacks, one in an hour-long sleep)
// come back with every TID, name and signal mask, and all progress.
func TestIssue4Threads64(t *testing.T) {
	dumpRestoreSnap(t, harness.BuildC(t, "threads.c"), []string{"64"}, false, func(t *testing.T, before, after treeSnap) {
		if n := threadCount(after); n != 65 {
			t.Errorf("%d threads after restore, want 65", n)
		}
	})
}

// TestIssue4Go: the Go workload (runtime threads, SIGURG preemption,
// timers, a big map, GC) comes back with its threads and carries on.
func TestIssue4Go(t *testing.T) {
	dumpRestoreSnap(t, harness.BuildGo(t, "gowork"), nil, true, func(t *testing.T, before, after treeSnap) {
		if n := threadCount(after); n < 2 {
			t.Errorf("%d threads after restore, want the Go runtime's threads", n)
		}
	})
}

// TestIssue4Tree: root, three children, a grandchild, a child in its own
// session, one in its own process group, a zombie that exited 7 and a
// stopped child; all PIDs, links, groups, sessions and states come back;
// the shared page is incremented by all (tree.c's verify); the final
// verify reaps the zombie with status 7 (tree.c checks it) and the root
// exits 0.
func TestIssue4Tree(t *testing.T) {
	dumpRestoreSnap(t, harness.BuildC(t, "tree.c"), nil, false, func(t *testing.T, before, after treeSnap) {
		if len(after) != 7 {
			t.Errorf("%d processes after restore, want 7", len(after))
		}
		var zombies, stopped int
		for pid, th := range after {
			switch th[pid].state {
			case "Z":
				zombies++
			case "T":
				stopped++
			}
		}
		if zombies != 1 || stopped != 1 {
			t.Errorf("after restore: %d zombies and %d stopped processes, want 1 and 1", zombies, stopped)
		}
	})
}

// pstreePids reads the PIDs of the images' tree.
func pstreePids(t *testing.T, dir string) []int {
	t.Helper()
	ents, err := image.ReadFile(dir, image.Pstree, 0)
	if err != nil {
		t.Fatalf("read pstree image: %v", err)
	}
	var pids []int
	for _, e := range ents {
		pids = append(pids, int(e.Msg.(*pb.PstreeEntry).GetPid()))
	}
	sort.Ints(pids)
	return pids
}

func sortedPids(s treeSnap) []int {
	var pids []int
	for pid := range s {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	return pids
}

// TestIssue4ForkStorm freezes a tree that forks and exits all the time
// (forkstorm.c, 16 children each forking grandchildren) several times
// with -s: every dump either succeeds and then holds exactly the tasks
// left stopped in /proc, or fails with exit 1, no images directory, and
// the tree running on untraced. The last good images are restored and
// the storm carries on.
func TestIssue4ForkStorm(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	w := harness.StartWorkload(t, harness.BuildC(t, "forkstorm.c"), "16")
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	var good string
	var goodPids []int
	const rounds = 6
	// round dumps the storm with -s and checks the result; it reports
	// whether the tree is left stopped (the dump succeeded).
	round := func(i int) bool {
		dir := filepath.Join(t.TempDir(), "images")
		code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", dir, "-s")
		if code != 0 {
			checkFailedDumpRound(t, w, i, code, dir, strings.TrimSpace(out))
			return false
		}
		// Every task of the tree is stopped now and cannot fork: the
		// live tree must be exactly the dumped one.
		live := waitTreeStopped(t, w.Pid)
		for pid, th := range live {
			for tid, s := range th {
				if s.state != "T" && s.state != "Z" {
					t.Errorf("round %d: thread %d/%d is in state %s after dump -s, want stopped", i, pid, tid, s.state)
				}
				if tr := tracerOf(tid); tr > 0 {
					t.Errorf("round %d: thread %d still traced by %d", i, tid, tr)
				}
			}
		}
		got, want := pstreePids(t, dir), sortedPids(live)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("round %d: images hold %v, the frozen tree is %v", i, got, want)
		}
		good, goodPids = dir, got
		return true
	}
	stopped := false
	for i := 0; i < rounds; i++ {
		if stopped {
			// Let the tree go on (SIGCONT to every task) for the
			// next round.
			for pid := range snapTree(t, w.Pid) {
				_ = unix.Kill(pid, unix.SIGCONT)
			}
			w.MustVerify(10 * time.Second)
		}
		stopped = round(i)
	}
	if good == "" {
		t.Fatalf("no dump of the fork storm succeeded in %d rounds", rounds)
	}
	// A failed last round (a clean refusal, checked above) left the tree
	// running and forking: the PIDs of the last good images may be taken
	// by new tasks since. Dump again until the tree is left stopped.
	for i := rounds; !stopped && i < 2*rounds; i++ {
		stopped = round(i)
	}
	if !stopped {
		t.Fatalf("no dump of the fork storm succeeded in the %d rounds after the last one failed", rounds)
	}
	if t.Failed() {
		return
	}
	// The last round left the tree stopped: kill it and restore it.
	for _, pid := range goodPids {
		_ = unix.Kill(pid, unix.SIGKILL)
		rp.Forget(pid)
	}
	select {
	case <-w.Exited():
	case <-time.After(10 * time.Second):
		t.Fatalf("killed storm root %d did not exit", w.Pid)
	}
	restoreDetached(t, w, good)
	verifyRestored(t, w)
	waitExit(t, rp, w.Pid, 0)
}

// waitTreeStopped waits (bounded) until every task of the tree under
// root is stopped or a zombie (a task left stopped with -s gets its stop
// signal as it is let go, an instant after crtools returns) and returns
// the tree.
func waitTreeStopped(t *testing.T, root int) treeSnap {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		s := snapTree(t, root)
		all := true
		for _, th := range s {
			for _, ts := range th {
				all = all && (ts.state == "T" || ts.state == "Z")
			}
		}
		if all || time.Now().After(deadline) {
			return s
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkFailedDumpRound checks a dump of w that failed in round i of a
// dump-while-it-changes loop (exit code, what it said in msg):
// it must have failed as refused (1), left no images directory and left
// the workload running untouched and sound.
func checkFailedDumpRound(t *testing.T, w *harness.Workload, i, code int, dir, msg string) {
	t.Helper()
	t.Logf("round %d: dump failed (exit %d): %s", i, code, msg)
	if code != 1 {
		t.Errorf("round %d: dump exit %d, want 0 or 1", i, code)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("round %d: failed dump left %s", i, dir)
	}
	checkUntouched(t, w.Pid)
	w.MustVerify(10 * time.Second)
}

// checkUntouched checks that no task of the tree under root is traced or
// stopped.
func checkUntouched(t *testing.T, root int) {
	t.Helper()
	time.Sleep(5 * time.Millisecond)
	for pid, th := range snapTree(t, root) {
		for tid, s := range th {
			if s.state == "T" || s.state == "t" {
				t.Errorf("thread %d/%d left in state %s after a failed dump", pid, tid, s.state)
			}
			if tr := tracerOf(tid); tr > 0 {
				t.Errorf("thread %d/%d left traced by %d after a failed dump", pid, tid, tr)
			}
		}
	}
}

// restoreSteps lists the steps of a detached restore plan, from crtools
// plan --json on a restore spec.
func restoreSteps(t *testing.T, dir string) []string {
	t.Helper()
	spec := filepath.Join(t.TempDir(), "rs.yaml")
	if err := os.WriteFile(spec, []byte(fmt.Sprintf(`apiVersion: crtools/v1
kind: Restore
metadata: {name: rs}
spec:
  imagesDir: %q
  detached: true
`, dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := crtools(t, "plan", spec)
	if code != 0 {
		t.Fatalf("crtools plan: exit %d\n%s", code, out)
	}
	var steps []string
	for _, l := range strings.Split(out, "\n") {
		// "  3. load: read and check every image" or similar: take the
		// word after the number.
		l = strings.TrimSpace(l)
		n, rest, ok := strings.Cut(l, ".")
		if _, err := strconv.Atoi(n); !ok || err != nil {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		steps = append(steps, strings.Trim(f[0], ":[]"))
	}
	if len(steps) < 4 {
		t.Fatalf("could not read the restore steps from crtools plan:\n%s", out)
	}
	return steps
}

// noTaskLeft waits (bounded) until none of pids runs the workload w any
// more: each is gone, or belongs to someone else.
func noTaskLeft(t *testing.T, w *harness.Workload, pids []int, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		for _, pid := range pids {
			st, err := procStat(pid)
			if err != nil {
				continue
			}
			if st.state == "Z" || ownedBy(w, pid) {
				left = append(left, fmt.Sprintf("%d (state %s, parent %d)", pid, st.state, st.ppid))
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: tasks of the tree left behind: %s", what, strings.Join(left, ", "))
			for _, pid := range pids {
				harness.KillTree(pid)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ownedBy reports whether pid runs with the workload's environment.
func ownedBy(w *harness.Workload, pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	return err == nil && strings.Contains(string(b), "CRT_RESULT="+w.ResultPath+"\x00")
}

func dirSum(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, e := range ents {
		i, _ := e.Info()
		s = append(s, fmt.Sprintf("%s:%d", e.Name(), i.Size()))
	}
	return strings.Join(s, ",")
}

// TestIssue4FailedRestore makes restores of tree.c fail: at each step of
// the plan (CRTOOLS_FAULT_STEP), with one PID of the tree held by another
// process, with a truncated pages image of the last task, and with a damaged
// core image of the last task (found late in the load step). Every
// failure exits 1, leaves no task of the tree behind (and the foreign
// process alone), and the images as they were; then a restore succeeds.
func TestIssue4FailedRestore(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	w := harness.StartWorkload(t, harness.BuildC(t, "tree.c"))
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	before := snapTree(t, w.Pid)
	dir := dumpKill(t, w)
	pids := pstreePids(t, dir)
	if fmt.Sprint(pids) != fmt.Sprint(sortedPids(before)) {
		t.Fatalf("images hold %v, the tree was %v", pids, sortedPids(before))
	}
	for _, pid := range pids {
		rp.Forget(pid)
	}
	noTaskLeft(t, w, pids, "after the dump")
	sum := dirSum(t, dir)
	crt := harness.BuildCrtools(t)
	restoreFail := func(t *testing.T, env []string, dir string) string {
		t.Helper()
		cmd := exec.Command(crt, "restore", "-D", dir, "-d", "-v", "2")
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Errorf("restore %v: %v, want exit 1\n%s", env, err, lastLines(string(out), 15))
		}
		t.Logf("restore failed as wanted: %s", lastLines(string(out), 1))
		for _, pid := range pids {
			rp.Forget(pid)
		}
		noTaskLeft(t, w, pids, fmt.Sprintf("restore %v", env))
		return string(out)
	}
	for _, step := range restoreSteps(t, dir) {
		t.Run("fault at "+step, func(t *testing.T) {
			restoreFail(t, []string{"CRTOOLS_FAULT_STEP=" + step}, dir)
			if s := dirSum(t, dir); s != sum {
				t.Errorf("images changed: %s -> %s", sum, s)
			}
		})
	}
	// The task created last (T, forked last) has the highest PID.
	last := pids[len(pids)-1]
	t.Run("pid in use", func(t *testing.T) {
		holder := holdPid(t, last)
		out := restoreFail(t, nil, dir)
		if !strings.Contains(out, fmt.Sprint(last)) {
			t.Errorf("the error does not name pid %d:\n%s", last, lastLines(out, 5))
		}
		if err := unix.Kill(holder.Process.Pid, 0); err != nil {
			t.Errorf("the process holding pid %d was harmed: %v", last, err)
		}
	})
	t.Run("truncated pages", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "images")
		if out, err := exec.Command("cp", "-a", dir, bad).CombinedOutput(); err != nil {
			t.Fatalf("copy images: %v\n%s", err, out)
		}
		pages, _ := filepath.Glob(filepath.Join(bad, "pages-*.img"))
		if len(pages) == 0 {
			t.Fatal("no pages images")
		}
		// Truncate every pages file to half: whichever task is filled
		// first, the fill fails partway through the tree.
		for _, p := range pages {
			fi, _ := os.Stat(p)
			if err := os.Truncate(p, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		}
		restoreFail(t, nil, bad)
	})
	t.Run("damaged last core", func(t *testing.T) {
		// Found late in the load step (the last task's core): the
		// rollback contract holds whatever Load has started by then.
		bad := copyDir(t, dir)
		core := fmt.Sprintf("core-%d.img", last)
		spoilAt(t, filepath.Join(bad, core), 12, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		out := restoreFail(t, nil, bad)
		if !strings.Contains(out, core) {
			t.Errorf("the error does not name %s:\n%s", core, lastLines(out, 5))
		}
		// In the test process, a puppet would be its child: a failed
		// Load leaves none behind, not even stopped.
		r, err := engine.NewRestorer(engine.RestoreOptions{ImagesDir: bad, Detached: true, Log: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Load(context.Background()); err == nil || !strings.Contains(err.Error(), core) {
			t.Errorf("load: %v, want an error naming %s", err, core)
		}
		if left := puppetChildren(t); len(left) > 0 {
			t.Errorf("puppets left after a failed load: %v", left)
		}
		r.Close()
	})
	if t.Failed() {
		return
	}
	restoreDetached(t, w, dir)
	verifyRestored(t, w)
	waitExit(t, rp, w.Pid, 0)
}

// puppetChildren lists the children of the test process that are restore
// puppets (crtools' binary run with restore.PuppetArg).
func puppetChildren(t *testing.T) []string {
	t.Helper()
	var left []string
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, pid := range strings.Fields(string(b)) {
			if c, err := os.ReadFile("/proc/" + pid + "/cmdline"); err == nil && strings.Contains(string(c), restore.PuppetArg) {
				left = append(left, pid)
			}
		}
	}
	return left
}

// holdPid starts a sleeping process with the given PID (through
// ns_last_pid; retried, other processes fork too, and one that took the
// PID is waited for) and kills it when the test ends.
func holdPid(t *testing.T, pid int) *exec.Cmd {
	t.Helper()
	for try := 0; try < 50; try++ {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(fmt.Sprint(pid-1)), 0o644); err != nil {
			t.Fatalf("set ns_last_pid: %v", err)
		}
		cmd := exec.Command("sleep", "600")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if cmd.Process.Pid == pid {
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			return cmd
		}
		cmd.Process.Kill()
		cmd.Wait()
		// Someone forked between the write and the fork and took pid: a
		// thread of this process (the Go runtime starts one when a
		// system call blocks) keeps it for good; any other task is
		// waited for, then tried again (on a busy host another test's
		// short-lived process took it 1 run in ~9).
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", pid)); err == nil {
			t.Fatalf("pid %d got taken by a thread of this test process", pid)
		}
		for end := time.Now().Add(10 * time.Second); unix.Kill(pid, 0) == nil; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("pid %d got taken by someone else, still there after 10 s", pid)
			}
		}
	}
	t.Fatalf("could not start a process with pid %d", pid)
	return nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
