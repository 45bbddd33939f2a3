package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/test/harness"
)

// TestIssue4Heirs restores a root and 6 children that keep most of what
// fork gave them (heirs.c): restore creates each child by fork from its
// restored parent (engine/restore/inherit.go), which the log says for
// every child, and then makes its memory the child's own: pages the child
// rewrote (also in a read-only mapping), pages only the parent touched
// after the fork (zeros in the child), a mapping the parent unmapped, one
// it added, another heap size, a private file mapping the child split and
// wrote, one the parent wrote after the fork (the file's pages in the
// child). Every child checks all of it, its name and
// its parent-death signal, and reports; verify checks every report moves
// on with the pid fork gave, and the root's own memory. /proc of the tree
// is compared as for the other trees. Before that, a restore that fails
// in the last child (a heir: its image asks for a POSIX timer id no
// restore can reach) exits 1 and leaves no task of the tree behind, and a
// restore with a progress callback reports all the memory filled.
func TestIssue4Heirs(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	const n = 6
	w, before, dir := dumpFan(t, "heirs.c", n)
	pids := pstreePids(t, dir)
	t.Run("heir fails", func(t *testing.T) {
		bad := imagesWithCore(t, dir, pids[len(pids)-1], heirTimer)
		logFile := filepath.Join(t.TempDir(), "restore.log")
		out, err := exec.Command(harness.BuildCrtools(t), "restore", "-D", bad, "-d", "-v", "2", "-o", logFile).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Errorf("restore: %v, want exit 1\n%s", err, lastLines(string(out), 15))
		}
		if !strings.Contains(string(out), "timer id 5000") {
			t.Errorf("the error is not the last child's timer:\n%s", lastLines(string(out), 5))
		}
		if log, _ := os.ReadFile(logFile); strings.Count(string(log), "heir=true") != n-1 {
			t.Errorf("the children before the last were not restored as heirs; the log:\n%s", lastLines(string(log), 30))
		}
		for _, pid := range pids {
			rp.Forget(pid)
		}
		noHeirLeft(t, pids)
	})
	t.Run("first heir fails", func(t *testing.T) {
		// The first heir fails with every later one forked and not
		// restored yet: no task is left, those included.
		bad := imagesWithCore(t, dir, pids[1], heirTimer)
		out, err := exec.Command(harness.BuildCrtools(t), "restore", "-D", bad, "-d").CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Errorf("restore: %v, want exit 1\n%s", err, lastLines(string(out), 15))
		}
		if !strings.Contains(string(out), "timer id 5000") || !strings.Contains(string(out), fmt.Sprintf("restore task %d", pids[1])) {
			t.Errorf("the error is not the first child's timer:\n%s", lastLines(string(out), 5))
		}
		for _, pid := range pids {
			rp.Forget(pid)
		}
		noHeirLeft(t, pids)
	})
	t.Run("parent fails", func(t *testing.T) {
		// The root's process-wide pending signals are queued after its
		// heirs were forked (endProc): a short siginfo there fails the
		// restore with every heir alive but not restored yet.
		bad := imagesWithCore(t, dir, pids[0], func(core *pb.CoreEntry) {
			if core.Tc.SignalsS == nil {
				core.Tc.SignalsS = &pb.SignalQueueEntry{}
			}
			core.Tc.SignalsS.Signals = append(core.Tc.SignalsS.Signals, &pb.SiginfoEntry{Siginfo: []byte{10, 0, 0, 0}})
		})
		out, err := exec.Command(harness.BuildCrtools(t), "restore", "-D", bad, "-d").CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Errorf("restore: %v, want exit 1\n%s", err, lastLines(string(out), 15))
		}
		if !strings.Contains(string(out), "siginfo of 4 bytes") {
			t.Errorf("the error is not the root's siginfo:\n%s", lastLines(string(out), 5))
		}
		for _, pid := range pids {
			rp.Forget(pid)
		}
		noHeirLeft(t, pids)
	})
	t.Run("progress", func(t *testing.T) { heirsProgress(t, dir, n) })
	for _, pid := range pids {
		rp.Forget(pid)
	}
	restoreDetached(t, w, dir)
	after := snapTree(t, w.Pid)
	compareSnaps(t, before, after, false)
	log := readLog(w, "restore.log")
	if got := strings.Count(log, "heir=true"); got != n {
		t.Errorf("%d children restored as heirs of their parent, want %d; the log:\n%s", got, n, lastLines(log, 40))
	}
	// The children differ from the root in the pages it wrote after the
	// forks (ro, mine): those of the first are lent to the root for the
	// forks (lendHeirPages), and every task's memory is still its own
	// (verifyRestored).
	if !strings.Contains(log, "pages lent to the parent for the forks") {
		t.Errorf("no pages of the first heir lent to the root for the forks; the log:\n%s", lastLines(log, 40))
	}
	// Every task has its dumped rseq registration again: a dump of the
	// restored tree finds the same (TestHeirsRseq: and the kernel keeps
	// updating it).
	again := dumpKillLeaveRunning(t, w)
	for _, pid := range pids {
		var was, is pb.CoreEntry
		if err := image.ReadOne(dir, image.Core, uint64(pid), &was); err != nil {
			t.Fatal(err)
		}
		if err := image.ReadOne(again, image.Core, uint64(pid), &is); err != nil {
			t.Fatal(err)
		}
		if a, b := was.GetThreadCore().GetRseqEntry(), is.GetThreadCore().GetRseqEntry(); a.GetRseqAbiPointer() == 0 ||
			a.GetRseqAbiPointer() != b.GetRseqAbiPointer() || a.GetRseqAbiSize() != b.GetRseqAbiSize() || a.GetSignature() != b.GetSignature() {
			t.Errorf("task %d: rseq %v after the restore, %v dumped", pid, b, a)
		}
	}
	verifyRestored(t, w)
	waitExit(t, rp, w.Pid, 0)
}

// heirsProgress restores the images in dir (a root and n heirs) in the
// test process with a progress callback, up to and with RestoreState:
// the memory reported filled reaches the total, heirs' memory (inherited
// and their own pages written) included. Then it kills the tree.
// dumpFan starts the C workload src with n children, checks that its
// tree has n+1 processes, dumps it (killing it) and returns the workload,
// the tree before the dump and the images directory. The subreaper
// forgets the dumped PIDs: the restored tasks will have them.
func dumpFan(t *testing.T, src string, n int) (*harness.Workload, treeSnap, string) {
	t.Helper()
	rp := harness.Subreaper()
	w := harness.StartWorkload(t, harness.BuildC(t, src), fmt.Sprint(n))
	w.MustReady(30 * time.Second)
	w.MustVerify(10 * time.Second)
	before := snapTree(t, w.Pid)
	if len(before) != n+1 {
		t.Fatalf("%d processes before the dump, want %d", len(before), n+1)
	}
	dir := dumpKill(t, w)
	for pid := range before {
		rp.Forget(pid)
	}
	return w, before, dir
}

func heirsProgress(t *testing.T, dir string, n int) {
	var mu sync.Mutex
	var top, total int64
	var logBuf bytes.Buffer
	r, err := engine.NewRestorer(engine.RestoreOptions{ImagesDir: dir, Detached: true,
		Log: zerolog.New(&logBuf).Level(zerolog.DebugLevel),
		Progress: func(done, all int64) {
			mu.Lock()
			defer mu.Unlock()
			top = max(top, done)
			total = all
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, phase := range []func(context.Context) error{r.Load, r.CreateTasks, r.RestoreState} {
		if err := phase(context.Background()); err != nil {
			_ = r.Kill()
			t.Fatal(err)
		}
	}
	if err := r.Kill(); err != nil {
		t.Error(err)
	}
	if got := strings.Count(logBuf.String(), `"heir":true`); got != n {
		t.Errorf("%d children restored as heirs, want %d", got, n)
	}
	mu.Lock()
	defer mu.Unlock()
	if total <= 0 || top != total {
		t.Errorf("progress reached %d of %d bytes, want all of them", top, total)
	}
}

// noHeirLeft fails unless, within 5 s, none of pids is a task of the
// restore: a puppet ("exe" until named) or a task named as heirs.c's.
func noHeirLeft(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		for _, pid := range pids {
			comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if err != nil {
				continue
			}
			if c := strings.TrimSpace(string(comm)); c == "exe" || strings.HasPrefix(c, "heir") {
				left = append(left, fmt.Sprintf("%d (%s)", pid, c))
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

// heirTimer gives core a POSIX timer id no restore can reach.
func heirTimer(core *pb.CoreEntry) {
	zero := func() *pb.ItimerEntry {
		return &pb.ItimerEntry{Isec: proto.Uint64(0), Iusec: proto.Uint64(0), Vsec: proto.Uint64(0), Vusec: proto.Uint64(0)}
	}
	if core.Tc.Timers == nil {
		core.Tc.Timers = &pb.TaskTimersEntry{Real: zero(), Virt: zero(), Prof: zero()}
	}
	core.Tc.Timers.Posix = append(core.Tc.Timers.Posix, &pb.PosixTimerEntry{ItId: proto.Uint32(5000),
		ClockId: proto.Uint32(1), SiSigno: proto.Uint32(14), ItSigevNotify: proto.Uint32(0), SivalPtr: proto.Uint64(0),
		Overrun: proto.Uint32(0), Isec: proto.Uint64(0), Insec: proto.Uint64(0), Vsec: proto.Uint64(0), Vnsec: proto.Uint64(0)})
}

// imagesWithCore copies the images in dir and changes the core image of
// pid in the copy with edit.
func imagesWithCore(t *testing.T, dir string, pid int, edit func(*pb.CoreEntry)) string {
	t.Helper()
	bad := filepath.Join(t.TempDir(), "images")
	if out, err := exec.Command("cp", "-a", dir, bad).CombinedOutput(); err != nil {
		t.Fatalf("copy images: %v\n%s", err, out)
	}
	core := &pb.CoreEntry{}
	if err := image.ReadOne(bad, image.Core, uint64(pid), core); err != nil {
		t.Fatal(err)
	}
	edit(core)
	if err := os.Remove(image.Core.Path(bad, uint64(pid))); err != nil {
		t.Fatal(err)
	}
	if err := image.WriteFile(bad, image.Core, uint64(pid), core); err != nil {
		t.Fatal(err)
	}
	return bad
}

// TestHeirsUserDumpable: a dumpable process of another user (euid 65534)
// and its child, restored as a heir, are still dumpable after the
// restore: setting their credentials makes the kernel reset the flag,
// which restore must set again afterwards (userdump.c checks it in both).
func TestHeirsUserDumpable(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	w := harness.StartWorkload(t, harness.BuildC(t, "userdump.c"))
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	dir := dumpKill(t, w)
	rp.Forget(w.Pid)
	restoreDetached(t, w, dir)
	if log := readLog(w, "restore.log"); strings.Count(log, "heir=true") != 1 {
		t.Errorf("the child was not restored as a heir; the log:\n%s", lastLines(log, 30))
	}
	verifyRestoredPrep(t, w, nil)
	waitWorkloadExit(t, rp, w)
}

// TestHeirsRseq restores a root and 4 children that keep everything of
// the root's but a few stack and TLS pages (rseqfan.c): all are heirs,
// each registers its own rseq area, and every task finds the kernel
// updating its area after the restore (it writes -2 into cpu_id, sleeps,
// and must read a CPU back).
func TestHeirsRseq(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	const n = 4
	w, _, dir := dumpFan(t, "rseqfan.c", n)
	restoreDetached(t, w, dir)
	log := readLog(w, "restore.log")
	if got := strings.Count(log, "heir=true"); got != n {
		t.Errorf("%d children restored as heirs, want %d; the log:\n%s", got, n, lastLines(log, 40))
	}
	verifyRestored(t, w)
	waitExit(t, rp, w.Pid, 0)
}
