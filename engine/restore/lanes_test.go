package restore

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/ptrace"
)

// TestParkLanePdeathsigBeforeDetach: a puppet parkLane hands over already
// has PR_SET_PDEATHSIG(SIGKILL) when the main tracer detaches it, so no
// moment exists in which it is traced by nobody and would outlive a killed
// crtools asleep in pause(). The parent-death signal is read through an
// injected PR_GET_PDEATHSIG just before the detach (parkHook); afterwards
// the puppet sleeps untraced, marked pdeathKill (the
// dumped signal is set later, queueThread).
func TestParkLanePdeathsigBeforeDetach(t *testing.T) {
	requireRoot(t)
	r, _, p := startAnonTask(t, t.TempDir(), 0x10000000, pageSize, unix.PROT_READ, nil)
	defer r.Close()
	got, seen := -1, false
	parkHook = func(hp *puppet) error {
		if hp != p {
			return fmt.Errorf("parkHook saw puppet %d, want %d", hp.pid, p.pid)
		}
		seen = true
		saved, err := ptrace.GetRegs(p.pid)
		if err != nil {
			return err
		}
		addr := r.tramp.scratch
		if _, err := p.callf("get parent-death signal", unix.SYS_PRCTL, unix.PR_GET_PDEATHSIG, addr); err != nil {
			return err
		}
		var b [4]byte
		if _, err := ptrace.ReadMem(p.pid, uintptr(addr), b[:]); err != nil {
			return err
		}
		got = int(int32(binary.LittleEndian.Uint32(b[:])))
		return ptrace.SetRegs(p.pid, &saved)
	}
	defer func() { parkHook = nil }()
	l := &lane{pool: &procPool{procs: r.procs}}
	if err := r.tr.Do(func() error { return r.parkLane(l) }); err != nil {
		t.Fatalf("parkLane: %v", err)
	}
	if !seen {
		t.Fatal("parkLane detached no puppet")
	}
	if got != int(unix.SIGKILL) {
		t.Errorf("parent-death signal of the puppet just before the detach: %d, want SIGKILL (%d)", got, unix.SIGKILL)
	}
	if !p.pdeathKill {
		t.Error("parked puppet not marked pdeathKill: its dumped parent-death signal would not be set")
	}
	// Just detached, it may still be on its way into pause().
	var st []byte
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		var err error
		if st, err = os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid)); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(st), "State:\tS") || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range []string{"TracerPid:\t0\n", "State:\tS (sleeping)\n"} {
		if !strings.Contains(string(st), want) {
			t.Errorf("parked puppet's status lacks %q:\n%s", strings.TrimSpace(want), st)
		}
	}
}

// TestAddFilledConcurrent: the progress count of memory filled is added to
// by both lanes' page copies at once (the second lane runs with a progress
// bar): no addition is lost, and every report is within the total (run
// with -race).
func TestAddFilledConcurrent(t *testing.T) {
	const workers, adds, chunk = 8, 2000, 4096
	var reports, maxDone atomic.Int64
	r := &restorer{fillTotal: workers * adds * chunk}
	r.opts.Progress = func(done, total int64) {
		reports.Add(1)
		if done <= 0 || done > total {
			t.Errorf("progress %d of %d", done, total)
		}
		for m := maxDone.Load(); done > m && !maxDone.CompareAndSwap(m, done); m = maxDone.Load() {
		}
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range adds {
				r.addFilled(chunk)
			}
		})
	}
	wg.Wait()
	if got := r.fillDone.Load(); got != r.fillTotal {
		t.Errorf("filled %d bytes in all, want %d", got, r.fillTotal)
	}
	if got := maxDone.Load(); got != r.fillTotal {
		t.Errorf("highest progress reported %d, want %d", got, r.fillTotal)
	}
	if got := reports.Load(); got != workers*adds {
		t.Errorf("%d progress reports, want %d", got, workers*adds)
	}
}

// TestNthCPUNoMask: without a mask (pin could not pin the tracer, or was
// told not to), there is no n-th CPU. It dereferenced the nil mask, which
// made CreateTasks panic as it dropped the first puppet
// (BenchmarkPuppetSyscall/unpinned).
func TestNthCPUNoMask(t *testing.T) {
	if c := nthCPU(nil, 2); c != -1 {
		t.Errorf("nthCPU(nil, 2) = %d, want -1", c)
	}
	var one unix.CPUSet
	one.Set(3)
	if c, d := nthCPU(&one, 1), nthCPU(&one, 2); c != 3 || d != -1 {
		t.Errorf("nthCPU({3}, 1), nthCPU({3}, 2) = %d, %d, want 3, -1", c, d)
	}
}
