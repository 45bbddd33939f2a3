package e2e

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/ptrace"
	"github.com/crtools/crtools/test/harness"
)

// TestSeccompRestored dumps and restores a tree under seccomp
// (test/workloads/seccomp.c): a two-threaded root whose threads share a
// chain of two filters installed with TSYNC (the second with
// SECCOMP_FILTER_FLAG_LOG), children that inherited it (one adds a filter,
// and its second thread one more), and a child with a thread in strict
// mode serving a pipe. First a dump that leaves the tree running (-R): the
// collect step injected its calls with seccomp suspended, and the filters
// are in force again afterwards (the workload checks from inside). Then a
// dump and restore: every thread's mode, filter count and no_new_privs
// are as before, the filtered calls fail with the same errno, the others
// work, and every thread carried on. The images share the chain that
// several threads have, and CRIU's schema decodes seccomp.img.
func TestSeccompRestored(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	w := harness.StartWorkload(t, harness.BuildC(t, "seccomp.c"))
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	tids := readSeccompTids(t, w.Dir)
	before := seccompStatuses(t, tids)
	for _, name := range []string{"Pmain", "P", "C2"} {
		if got := before[name]; got != "Seccomp 2 filters 2 nnp 1" {
			t.Fatalf("workload thread %s: %s before any dump", name, got)
		}
	}

	// -R: seccomp was suspended for the injections only.
	dumpDir(t, w, "-R")
	for name, th := range tids {
		if tr := tracerOf(th[1]); tr != 0 {
			t.Errorf("after dump -R, thread %s (%d) is traced by %d", name, th[1], tr)
		}
	}
	w.MustVerify(10 * time.Second)
	if got := seccompStatuses(t, tids); !mapsEqual(got, before) {
		t.Errorf("after dump -R: %v, want %v", got, before)
	}

	dir := dumpKill(t, w)
	rp.Forget(w.Pid)
	checkSeccompImages(t, dir, tids)
	restoreDetached(t, w, dir)
	if got := seccompStatuses(t, tids); !mapsEqual(got, before) {
		t.Errorf("after restore: %v, want %v", got, before)
	}
	// The LOG flag of the root's second filter, as the kernel keeps it,
	// in both threads (one chain, given to both by TSYNC).
	for _, name := range []string{"Pmain", "P"} {
		if flags := seccompFlags(t, tids[name][1]); len(flags) != 2 || flags[0] != 0 || flags[1] != 2 {
			t.Errorf("restored thread %s: filter flags %v, want [0 2] (SECCOMP_FILTER_FLAG_LOG on the second)", name, flags)
		}
	}
	verifyRestored(t, w)
	waitWorkloadExit(t, rp, w)
}

// readSeccompTids reads the workload's "tids" file: name → pid, tid.
func readSeccompTids(t *testing.T, dir string) map[string][2]int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "tids"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][2]int{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var name string
		var pid, tid int
		if _, err := fmt.Sscanf(l, "%s %d %d", &name, &pid, &tid); err != nil {
			t.Fatalf("tids line %q: %v", l, err)
		}
		out[name] = [2]int{pid, tid}
	}
	if len(out) != 8 {
		t.Fatalf("tids: %v, want 8 threads", out)
	}
	return out
}

// seccompStatuses reads every thread's seccomp mode, filter count and
// no_new_privs from its /proc status.
func seccompStatuses(t *testing.T, tids map[string][2]int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, th := range tids {
		path := fmt.Sprintf("/proc/%d/task/%d/status", th[0], th[1])
		f, err := os.Open(path)
		if err != nil {
			t.Fatalf("thread %s: %v", name, err)
		}
		v := map[string]string{}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, val, ok := strings.Cut(sc.Text(), ":"); ok {
				v[k] = strings.TrimSpace(val)
			}
		}
		f.Close()
		out[name] = fmt.Sprintf("Seccomp %s filters %s nnp %s", v["Seccomp"], v["Seccomp_filters"], v["NoNewPrivs"])
	}
	return out
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// seccompFlags reads the flags of each seccomp filter of thread tid (the
// oldest first) with PTRACE_SECCOMP_GET_METADATA: it seizes the thread,
// stops it, reads, and lets it go.
func seccompFlags(t *testing.T, tid int) []uint64 {
	t.Helper()
	type res struct {
		flags []uint64
		err   error
	}
	ch := make(chan res, 1)
	go func() {
		// ptrace ties the tracee to this thread: it stays locked, and
		// ends with the goroutine (no unlock).
		runtime.LockOSThread()
		var r res
		defer func() { ch <- r }()
		if r.err = ptrace.Seize(tid, 0); r.err != nil {
			return
		}
		defer ptrace.Detach(tid, 0)
		if r.err = ptrace.Interrupt(tid); r.err != nil {
			return
		}
		if _, r.err = ptrace.WaitInterrupted(tid); r.err != nil {
			return
		}
		for i := 0; ; i++ {
			f, err := ptrace.SeccompFilterFlags(tid, i)
			if err != nil {
				if !errors.Is(err, unix.ENOENT) {
					r.err = err
				}
				return
			}
			r.flags = append(r.flags, f)
		}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("seccomp filter flags of thread %d: %v", tid, r.err)
	}
	return r.flags
}

// checkSeccompImages checks seccomp.img and the thread cores: the root's
// chain (TSYNC on each filter, LOG on the second) on its leader only, the
// same entries for C2 (same chain), C1's and its worker's chains of 3 and
// 4 filters of their own, strict mode for C3's thread, and 12 filters in
// all. Then crtools show prints it, and protoc decodes it with CRIU's
// schema.
func checkSeccompImages(t *testing.T, dir string, tids map[string][2]int) {
	t.Helper()
	var se pb.SeccompEntry
	if err := image.ReadOne(dir, image.Seccomp, 0, &se); err != nil {
		t.Fatalf("read seccomp.img: %v", err)
	}
	filters := se.GetSeccompFilters()
	core := func(name string) *pb.ThreadCoreEntry {
		var c pb.CoreEntry
		if err := image.ReadOne(dir, image.Core, uint64(tids[name][1]), &c); err != nil {
			t.Fatalf("read core of thread %s: %v", name, err)
		}
		return c.GetThreadCore()
	}
	// chain follows a thread's filters from its oldest: their flags.
	chain := func(name string) []uint32 {
		tc := core(name)
		if tc.GetSeccompMode() != pb.SeccompMode_filter || tc.SeccompFilter == nil {
			t.Fatalf("thread %s: seccomp mode %v, filter %v", name, tc.GetSeccompMode(), tc.SeccompFilter)
		}
		var flags []uint32
		for i := tc.GetSeccompFilter(); len(flags) <= len(filters); {
			if int(i) >= len(filters) {
				t.Fatalf("thread %s: filter index %d of %d", name, i, len(filters))
			}
			flags = append(flags, filters[i].GetFlags())
			if filters[i].Prev == nil {
				return flags
			}
			i = filters[i].GetPrev()
		}
		t.Fatalf("thread %s: filters loop", name)
		return nil
	}
	if got := fmt.Sprint(chain("Pmain")); got != "[1 3]" {
		t.Errorf("root's chain: flags %s, want [1 3] (TSYNC; TSYNC|LOG)", got)
	}
	if tc := core("P"); tc.GetSeccompMode() != pb.SeccompMode_disabled || tc.SeccompFilter != nil {
		t.Errorf("root's worker: seccomp mode %v filter %v, want none (the leader's TSYNC chain gives it hers)", tc.GetSeccompMode(), tc.SeccompFilter)
	}
	if a, b := core("Pmain").GetSeccompFilter(), core("C2").GetSeccompFilter(); a != b {
		t.Errorf("C2 has the root's chain at filter %d, the root at %d: want the same entries", b, a)
	}
	if got := fmt.Sprint(chain("C1")); got != "[0 2 0]" {
		t.Errorf("C1's chain: flags %s, want [0 2 0]", got)
	}
	if got := fmt.Sprint(chain("C1W")); got != "[0 2 0 0]" {
		t.Errorf("C1's worker's chain: flags %s, want [0 2 0 0]", got)
	}
	if got := fmt.Sprint(chain("C2a")); got != "[1 3 1]" {
		t.Errorf("C2a's chain: flags %s, want [1 3 1] (single-threaded: TSYNC on all, as CRIU)", got)
	}
	if m := core("C3S").GetSeccompMode(); m != pb.SeccompMode_strict {
		t.Errorf("C3's strict thread: seccomp mode %v", m)
	}
	if m := core("C3").GetSeccompMode(); m != pb.SeccompMode_disabled {
		t.Errorf("C3's main thread: seccomp mode %v", m)
	}
	if len(filters) != 12 {
		t.Errorf("seccomp.img has %d filters, want 12 (2 shared, 3, 4, 3)", len(filters))
	}

	path := filepath.Join(dir, "seccomp.img")
	code, out := crtools(t, "show", "-f", path)
	if code != 0 || !strings.Contains(out, "seccomp_filters") || !strings.Contains(out, "prev") {
		t.Errorf("crtools show -f %s: exit %d:\n%s", path, code, out)
	}
	code, out = crtools(t, "show", "-D", dir)
	if code != 0 || !strings.Contains(out, "Seccomp (12 filters in seccomp.img") ||
		!strings.Contains(out, fmt.Sprintf("%-8d %-8d strict", tids["C3S"][0], tids["C3S"][1])) {
		t.Errorf("crtools show -D %s: exit %d:\n%s", dir, code, out)
	}
	// protoc, with the schema's field numbers (CRIU's), decodes the
	// entry: after the two magic words, a length and the message.
	protoc, err := exec.LookPath("protoc")
	if err != nil {
		t.Logf("no protoc: seccomp.img not decoded with it (%v)", err)
		return
	}
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 12 {
		t.Fatalf("read %s: %d bytes, %v", path, len(b), err)
	}
	n := binary.LittleEndian.Uint32(b[8:])
	if int(n) != len(b)-12 {
		t.Fatalf("%s: entry of %d bytes in a file of %d", path, n, len(b))
	}
	schemas, err := filepath.Abs("../../schemas/images")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(protoc, "-I", schemas, "--decode=crtools.images.seccomp_entry", "seccomp.proto")
	cmd.Stdin = bytes.NewReader(b[12:])
	dec, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("protoc --decode seccomp_entry: %v\n%s", err, dec)
	}
	if c := strings.Count(string(dec), "seccomp_filters {"); c != 12 {
		t.Errorf("protoc decoded %d filters, want 12:\n%s", c, dec)
	}
	if c := strings.Count(string(dec), "prev: "); c != 12-4 {
		t.Errorf("protoc decoded %d prev fields, want 8 (every filter but the newest of each of 4 chains):\n%s", c, dec)
	}
}

// TestSeccompUserNotifRefused: a task whose filter hands a system call to
// a user-space listener (SECCOMP_RET_USER_NOTIF) held by a supervisor
// outside the tree (testdata/seccomp_notif.c: the workload's root, whose
// child is dumped) is refused at dump with a message that says so, before
// any injection: the child runs on, untraced, and no images are left.
func TestSeccompUserNotifRefused(t *testing.T) {
	harness.RequireRoot(t)
	w := harness.StartWorkload(t, buildTestdata(t, "seccomp_notif.c", "-I"+harness.WorkloadsDir(t)))
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	child := strings.TrimSpace(readLog(w, "child"))
	dir := filepath.Join(t.TempDir(), "images")
	code, out := crtools(t, "dump", "-t", child, "-D", dir)
	if code == 0 {
		t.Fatalf("crtools dump of a task with a user-notification filter: exit 0\n%s", out)
	}
	if !strings.Contains(out, "SECCOMP_RET_USER_NOTIF") || !strings.Contains(out, "listener") {
		t.Errorf("crtools dump: exit %d, want a message about SECCOMP_RET_USER_NOTIF and its listener:\n%s", code, out)
	}
	t.Logf("refused: %s", strings.TrimSpace(out))
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("images directory %s after a refused dump: %v", dir, err)
	}
	pid, err := strconv.Atoi(child)
	if err != nil {
		t.Fatalf("child pid %q: %v", child, err)
	}
	if tr := tracerOf(pid); tr != 0 {
		t.Errorf("after the refused dump, pid %d is traced by %d", pid, tr)
	}
	// The child counts on (the root's verify checks it).
	w.MustVerify(10 * time.Second)
	if err := w.VerifyAndExit(10 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestSeccompHeir: a child under seccomp that a restore forks late from
// its restored parent (an heir, testdata/seccomp_heir.c) gets its own
// filters, not those its parent installed after forking it: the heir is
// forked before its parent's filters are installed, and installs its own.
func TestSeccompHeir(t *testing.T) {
	rp, w, dir := dumpedWorkload(t, buildTestdata(t, "seccomp_heir.c", "-I"+harness.WorkloadsDir(t)))
	child := strings.TrimSpace(readLog(w, "child"))
	restoreDetached(t, w, dir)
	if log := readLog(w, "restore.log"); !strings.Contains(log, "heir=true") || !strings.Contains(log, "pid="+child) {
		t.Errorf("child %s was not restored as an heir:\n%s", child, log)
	}
	verifyRestored(t, w)
	waitWorkloadExit(t, rp, w)
}

// TestSeccompLanes: a tree of a root and 12 children under one filter
// (lanes.c started under testdata/enosys.c, whose filter makes munmap fail
// with ENOSYS; lanes.c never unmaps) is restored on two tracer threads,
// half of the children parked and seized again by the second
// (engine/restore/lanes.go). The restore unmaps its trampoline in every
// process after the filter is installed: that works only with
// PTRACE_O_SUSPEND_SECCOMP on every puppet, the second lane's too. Every
// process has its one filter again; the images hold it once.
func TestSeccompLanes(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	w := harness.StartWorkload(t, buildTestdata(t, "enosys.c"), fmt.Sprint(unix.SYS_MUNMAP), harness.BuildC(t, "lanes.c"), "12")
	w.MustReady(30 * time.Second)
	w.MustVerify(10 * time.Second)
	dir := dumpKill(t, w)
	pids := pstreePids(t, dir)
	for _, pid := range pids {
		rp.Forget(pid)
	}
	if len(pids) != 13 {
		t.Fatalf("%d processes in the images, want 13", len(pids))
	}
	var se pb.SeccompEntry
	if err := image.ReadOne(dir, image.Seccomp, 0, &se); err != nil || len(se.GetSeccompFilters()) != 1 {
		t.Errorf("seccomp.img: %d filters, %v; want the one all share", len(se.GetSeccompFilters()), err)
	}
	restoreDetached(t, w, dir)
	if log := readLog(w, "restore.log"); runtime.NumCPU() >= 2 && !strings.Contains(log, "second tracer restores processes") {
		t.Errorf("restore used one tracer on %d CPUs; its log:\n%s", runtime.NumCPU(), lastLines(log, 30))
	}
	threads := map[string][2]int{}
	for _, pid := range pids {
		threads[fmt.Sprint(pid)] = [2]int{pid, pid}
	}
	for name, got := range seccompStatuses(t, threads) {
		if got != "Seccomp 2 filters 1 nnp 0" {
			t.Errorf("restored process %s: %s, want its one filter", name, got)
		}
	}
	verifyRestored(t, w)
	waitWorkloadExit(t, rp, w)
}
