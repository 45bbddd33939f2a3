package ptrace

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCuredBatchTracerDeath: the tracer of a multi-threaded task dies
// (its thread exits without detaching, as in a crtools SIGKILLed
// mid-dump) at each point of cured batches (CureSig): a batch set going
// and not waited for, ended in its stop and waited for, the batches of
// every other thread set going, ended but not waited for, ended and
// waited for. Running or stopped by job control, every thread must carry
// on with its own registers (xmm8/xmm9 checked in a loop), mask (SIGUSR2
// blocked) and interrupted syscalls (pause does not return, nanosleep is
// restarted, not EINTR): the workload prints FAIL otherwise. With int3
// batches it died of SIGTRAP at each of these points.
func TestCuredBatchTracerDeath(t *testing.T) {
	requireRoot(t)
	points := []string{"leader-running", "leader-waited", "threads-running", "threads-unwaited", "threads-waited"}
	for _, stop := range []bool{false, true} {
		for k, point := range points {
			name := point
			if stop {
				name += "/group-stopped"
			}
			t.Run(name, func(t *testing.T) {
				w := startMaybeStopped(t, "cured", stop)
				tr := NewTracer()
				t.Cleanup(tr.Close)
				if err := tr.Do(func() error { return curedUntil(t, w.pid, k) }); err != nil {
					t.Fatal(err)
				}
				drain(w)
				tr.Close() // the tracer thread exits: exit_ptrace, no PTRACE_DETACH
				if stop {
					time.Sleep(50 * time.Millisecond)
					if st := procState(w.pid); st != 'T' {
						t.Fatalf("pid %d in state %c after its tracer died, want T", w.pid, st)
					}
					drain(w)
					if err := unix.Kill(w.pid, unix.SIGCONT); err != nil {
						t.Fatal(err)
					}
				}
				// Three ticks with the counters growing, no FAIL.
				var fp0, sl0, fp, sl uint64
				for i := range 4 {
					l := w.expect(t, "tick", 5*time.Second)
					if _, err := fmt.Sscanf(l, "tick %d %d", &fp, &sl); err != nil {
						t.Fatalf("parse %q: %v", l, err)
					}
					if i == 0 {
						fp0, sl0 = fp, sl
					}
				}
				if fp <= fp0 || sl <= sl0 {
					t.Errorf("threads stuck after the tracer died: xmm loop %d -> %d, sleeps %d -> %d", fp0, fp, sl0, sl)
				}
			})
		}
	}
}

// curedUntil seizes every thread of pid, runs a cured batch (getpid) in
// the leader, then in every other thread, and returns at point k of
// TestCuredBatchTracerDeath's points, leaving the tracer to die there.
func curedUntil(t *testing.T, pid, k int) error {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return err
	}
	tids := []int{pid}
	for _, e := range ents {
		if tid, _ := strconv.Atoi(e.Name()); tid != pid && tid != 0 {
			tids = append(tids, tid)
		}
	}
	if len(tids) < 5 {
		return fmt.Errorf("pid %d has %d threads, want 5", pid, len(tids))
	}
	for _, tid := range tids {
		if err := Seize(tid, 0); err != nil { // no PTRACE_O_EXITKILL, as at dump
			return err
		}
		if _, err := InterruptAndWait(tid); err != nil {
			return err
		}
	}
	regs := make([]Regs, len(tids))
	masks := make([]uint64, len(tids))
	xs := make([][]byte, len(tids))
	for i, tid := range tids {
		if regs[i], err = GetRegs(tid); err != nil {
			return err
		}
		if masks[i], err = GetSigmask(tid); err != nil {
			return err
		}
		if xs[i], err = GetXState(tid); err != nil {
			return err
		}
	}
	leader, err := NewInjector(pid)
	if err != nil {
		return err
	}
	leader.CureSig = int(unix.SIGURG)
	if err := leader.BeginWith(regs[0], masks[0], RseqConfig{}); err != nil {
		return err
	}
	slot := SlotSize{Calls: 2, Scratch: 64, Frame: SigFrameSize(len(xs[0]))}
	if err := leader.StartNewBatchSized(slot, slot, len(tids)); err != nil {
		return err
	}
	b, err := leader.FinishNewBatch()
	if err != nil {
		return err
	}
	frame := func(b *Batch, i int) error {
		f, err := SigFrame(b.Frame(), regs[i], masks[i], xs[i])
		if err != nil {
			return err
		}
		b.WriteWith(b.Frame(), f)
		return nil
	}
	if err := frame(b, 0); err != nil {
		return err
	}
	calls := []BatchCall{{Nr: unix.SYS_GETPID}}
	if err := b.Start(calls); err != nil {
		return err
	}
	if k == 0 {
		return nil
	}
	if err := b.Finish(); err != nil {
		return err
	}
	if int(calls[0].Ret) != pid {
		t.Errorf("cured batch getpid = %d, want %d", calls[0].Ret, pid)
	}
	if k == 1 {
		return nil
	}
	ths := make([]*Batch, len(tids)-1)
	thCalls := make([][]BatchCall, len(tids)-1)
	for i := range ths {
		in := leader.ForThread(tids[i+1])
		if err := in.BeginWith(regs[i+1], masks[i+1], RseqConfig{}); err != nil {
			return err
		}
		if ths[i], err = b.Slot(i+1, in); err != nil {
			return err
		}
		if err := frame(ths[i], i+1); err != nil {
			return err
		}
		thCalls[i] = []BatchCall{{Nr: unix.SYS_GETTID}}
	}
	if n, err := StartAll(ths, thCalls); err != nil || n != len(ths) {
		return fmt.Errorf("start %d of %d batches: %v", n, len(ths), err)
	}
	switch k {
	case 2:
		return nil
	case 3:
		// Let them reach their stops, which nobody waits for.
		time.Sleep(20 * time.Millisecond)
		return nil
	}
	for i, err := range FinishAll(ths) {
		if err != nil {
			return err
		}
		if int(thCalls[i][0].Ret) != tids[i+1] {
			t.Errorf("cured batch gettid = %d, want %d", thCalls[i][0].Ret, tids[i+1])
		}
	}
	return nil
}
