package ptrace

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestBatch runs a batch in a live workload: results per call, MayFail
// errors pass, the first hard error stops the batch, and the workload
// carries on with its registers, fds and memory map as before.
func TestBatch(t *testing.T) {
	requireRoot(t)
	w := startWorkload(t, "counter")
	w.expect(t, "tick", 5*time.Second)
	mapsBefore := countMaps(t, w.pid)
	path := filepath.Join(t.TempDir(), "batch")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tr := stoppedTracer(t, w.pid)
	err := tr.Do(func() error {
		before, err := GetRegs(w.pid)
		if err != nil {
			return err
		}
		in, err := NewInjector(w.pid)
		if err != nil {
			return err
		}
		if err := in.Begin(); err != nil {
			return err
		}
		cleanup, err := in.WithScratch(4096)
		if err != nil {
			return err
		}
		p, err := in.PutBytes(append([]byte(path), 0))
		if err != nil {
			return err
		}
		b, err := in.NewBatch(100)
		if err != nil {
			return err
		}
		calls := []BatchCall{
			{Nr: unix.SYS_GETPID},
			{Nr: unix.SYS_CLOSE, Args: [6]uintptr{12345}, MayFail: true},
			{Nr: unix.SYS_OPEN, Args: [6]uintptr{p, unix.O_RDWR}},
			{Nr: unix.SYS_GETPPID},
		}
		if err := b.Run(calls); err != nil {
			return err
		}
		if !calls[3].Ran || int(calls[0].Ret) != w.pid || int(calls[3].Ret) != os.Getpid() {
			t.Errorf("getpid/getppid in batch: %+v", calls)
		}
		if !errors.Is(calls[1].Errno(), unix.EBADF) {
			t.Errorf("close(12345): %v, want EBADF", calls[1].Errno())
		}
		fd := calls[2].Ret
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", w.pid, fd)); err != nil || link != path {
			t.Errorf("fd %d: %q, %v", fd, link, err)
		}
		// NoResult everywhere: no results read back, but what ran,
		// the last result and a hard failure are still known.
		calls = []BatchCall{
			{Nr: unix.SYS_GETPID, NoResult: true},
			{Nr: unix.SYS_GETPPID, NoResult: true},
		}
		if err := b.Run(calls); err != nil || !calls[0].Ran || !calls[1].Ran || int(calls[1].Ret) != os.Getpid() {
			t.Errorf("batch without results: %v, %+v", err, calls)
		}
		calls = []BatchCall{
			{Nr: unix.SYS_CLOSE, Args: [6]uintptr{12345}, NoResult: true},
			{Nr: unix.SYS_GETPID, NoResult: true},
		}
		err = b.Run(calls)
		if be := (*BatchError)(nil); !errors.As(err, &be) || be.Index != 0 || !errors.Is(err, unix.EBADF) || calls[1].Ran {
			t.Errorf("batch without results, failing close: %v, %+v", err, calls)
		}
		// A hard failure stops the batch there.
		calls = []BatchCall{
			{Nr: unix.SYS_CLOSE, Args: [6]uintptr{fd}},
			{Nr: unix.SYS_CLOSE, Args: [6]uintptr{fd}},
			{Nr: unix.SYS_GETPID},
		}
		err = b.Run(calls)
		var be *BatchError
		if !errors.As(err, &be) || be.Index != 1 || !errors.Is(err, unix.EBADF) || calls[2].Ran || calls[0].Ret != 0 {
			t.Errorf("batch with a failing close: %v, %+v", err, calls)
		}
		// Many calls, one stop.
		many := make([]BatchCall, 100)
		for i := range many {
			many[i].Nr = unix.SYS_GETTID
		}
		if err := b.Run(many); err != nil {
			return err
		}
		for i, c := range many {
			if int(c.Ret) != w.pid {
				t.Fatalf("call %d: gettid = %d", i, c.Ret)
			}
		}
		if err := b.Close(); err != nil {
			return err
		}
		if err := cleanup(); err != nil {
			return err
		}
		if err := in.End(); err != nil {
			return err
		}
		after, err := GetRegs(w.pid)
		if err != nil {
			return err
		}
		if after != before {
			t.Errorf("registers changed by the batch")
		}
		return Detach(w.pid, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := countMaps(t, w.pid); got != mapsBefore {
		t.Errorf("%d mappings after the batch, %d before", got, mapsBefore)
	}
	checkTicking(t, w)
}

// BenchmarkBatchGetpid is the cost per syscall of a 64-call batch, to
// compare with BenchmarkInjectGetpid.
func BenchmarkBatchGetpid(b *testing.B) {
	requireRoot(b)
	cmd := startSleep(b)
	pid := cmd.Process.Pid
	tr := stoppedTracer(b, pid)
	const per = 64
	err := tr.Do(func() error {
		in, err := NewInjector(pid)
		if err != nil {
			return err
		}
		if err := in.Begin(); err != nil {
			return err
		}
		bt, err := in.NewBatch(per)
		if err != nil {
			return err
		}
		calls := make([]BatchCall, per)
		b.ResetTimer()
		for i := 0; i < b.N; i += per {
			for j := range calls {
				calls[j] = BatchCall{Nr: unix.SYS_GETPID}
			}
			if err := bt.Run(calls); err != nil {
				return err
			}
		}
		b.StopTimer()
		if err := bt.Close(); err != nil {
			return err
		}
		if err := in.End(); err != nil {
			return err
		}
		return Detach(pid, 0)
	})
	if err != nil {
		b.Fatal(err)
	}
}

func TestBatchCodeSize(t *testing.T) {
	if len(batchCode) != BatchCodeSize {
		t.Errorf("len(batchCode) = %#x, BatchCodeSize = %#x", len(batchCode), BatchCodeSize)
	}
}

// TestBatchAt runs a batch in memory the caller mapped (here with single
// injections; a puppet would use its trampoline), with an Injector that has
// no syscall address of its own for the batch.
func TestBatchAt(t *testing.T) {
	requireRoot(t)
	pid := startSleep(t).Process.Pid
	tr := stoppedTracer(t, pid)
	err := tr.Do(func() error {
		setup, err := NewInjector(pid)
		if err != nil {
			return err
		}
		mem, err := setup.Syscall(unix.SYS_MMAP, 0, 8192, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
		if err != nil {
			return err
		}
		in := &Injector{Tid: pid}
		if err := in.Begin(); err != nil {
			return err
		}
		b, err := in.BatchAt(mem, mem+4096, 8)
		if err != nil {
			return err
		}
		calls := []BatchCall{{Nr: unix.SYS_GETPID}, {Nr: unix.SYS_MUNMAP, Args: [6]uintptr{mem + 4096 + 4096, 4096}}}
		if err := b.Run(calls); err != nil {
			return err
		}
		if int(calls[0].Ret) != pid || calls[1].Ret != 0 {
			t.Errorf("batch results %+v", calls)
		}
		if err := b.Close(); err != nil {
			return err
		}
		if err := in.End(); err != nil {
			return err
		}
		if _, err := setup.Syscall(unix.SYS_MUNMAP, mem, 8192); err != nil {
			return err
		}
		return Detach(pid, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, pid, 'S')
}

// TestPipelined drives two tasks through the split halves at once (the
// dump's injectAll): a batch mapped in one injection and made writable by
// its first run, a second slot, a single call, the unmap and a settled end;
// each task gets its own results and its registers, signal mask and
// memory map back.
func TestPipelined(t *testing.T) {
	requireRoot(t)
	pids := []int{startSleep(t).Process.Pid, startSleep(t).Process.Pid}
	tr := NewTracer()
	t.Cleanup(tr.Close)
	var maps []int
	for _, pid := range pids {
		stopped(t, tr, pid)
		maps = append(maps, countMaps(t, pid))
	}
	err := tr.Do(func() error {
		ins := make([]*Injector, len(pids))
		before := make([]Regs, len(pids))
		masks := make([]uint64, len(pids))
		for i, pid := range pids {
			var err error
			if before[i], err = GetRegs(pid); err != nil {
				return err
			}
			if masks[i], err = GetSigmask(pid); err != nil {
				return err
			}
			if ins[i], err = NewInjector(pid); err != nil {
				return err
			}
			ins[i].SettleAtEnd = true
			if err := ins[i].BeginWith(before[i], masks[i], RseqConfig{}); err != nil {
				return err
			}
			if err := ins[i].StartNewBatchSized(SlotSize{Calls: 4, Scratch: 64}, SlotSize{Calls: 4, Scratch: 64}, 2); err != nil {
				return err
			}
		}
		batches := make([]*Batch, len(pids))
		calls := make([][]BatchCall, len(pids))
		for i := range pids {
			var err error
			if batches[i], err = ins[i].FinishNewBatch(); err != nil {
				return err
			}
			if _, err := batches[i].Slot(1, ins[i]); err == nil {
				t.Errorf("task %d: slot 1 before slot 0 ran", pids[i])
			}
			calls[i] = []BatchCall{{Nr: unix.SYS_GETPID}, {Nr: unix.SYS_GETPPID}}
			if err := batches[i].Start(calls[i]); err != nil {
				return err
			}
		}
		for i, pid := range pids {
			if err := batches[i].Finish(); err != nil {
				return err
			}
			if int(calls[i][0].Ret) != pid || !calls[i][1].Ran {
				t.Errorf("task %d: batch results %+v", pid, calls[i])
			}
			// The tables are writable now: slot 1, then slot 0 again.
			s1, err := batches[i].Slot(1, ins[i])
			if err != nil {
				return err
			}
			c := []BatchCall{{Nr: unix.SYS_GETTID}}
			if err := s1.Run(c); err != nil || int(c[0].Ret) != pid {
				t.Errorf("task %d: slot 1: %v %+v", pid, err, c)
			}
			if err := batches[i].Run(c); err != nil || int(c[0].Ret) != pid {
				t.Errorf("task %d: slot 0 again: %v %+v", pid, err, c)
			}
			if err := batches[i].StartClose(); err != nil {
				return err
			}
		}
		for i := range pids {
			if err := batches[i].FinishClose(); err != nil {
				return err
			}
			if err := ins[i].Start(unix.SYS_GETPID); err != nil {
				return err
			}
		}
		for i, pid := range pids {
			if ret, err := ins[i].Finish(); err != nil || int(ret) != pid {
				t.Errorf("task %d: single call: %d, %v", pid, ret, err)
			}
			if err := ins[i].StartEnd(); err != nil {
				return err
			}
		}
		for i, pid := range pids {
			if err := ins[i].FinishEnd(); err != nil {
				return err
			}
			after, err := GetRegs(pid)
			if err != nil {
				return err
			}
			mask, err := GetSigmask(pid)
			if err != nil {
				return err
			}
			if after != before[i] || mask != masks[i] {
				t.Errorf("task %d: registers or mask changed", pid)
			}
			if err := Detach(pid, 0); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, pid := range pids {
		if got := countMaps(t, pid); got != maps[i] {
			t.Errorf("task %d: %d mappings after, %d before", pid, got, maps[i])
		}
		waitState(t, pid, 'S') // back in its sleep, not stopped

	}
}

// TestStartAllThreads runs a batch in every thread of a process at once as
// the dump does (BeginAllWith, slots, StartAll, FinishAll): each thread runs its own
// calls in its own context, and every thread gets its registers, signal
// mask and the process its memory map back.
func TestStartAllThreads(t *testing.T) {
	requireRoot(t)
	w := startWorkload(t, "blocker", "threads", "5")
	var tids []int
	for _, f := range w.ready[1:] {
		tid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("ready line %q: %v", w.ready, err)
		}
		tids = append(tids, tid)
	}
	pid := tids[0]
	tr := NewTracer()
	t.Cleanup(tr.Close)
	for _, tid := range tids {
		stopped(t, tr, tid)
	}
	maps := countMaps(t, pid)
	err := tr.Do(func() error {
		regs := make([]Regs, len(tids))
		masks := make([]uint64, len(tids))
		rseqs := make([]RseqConfig, len(tids))
		for i, tid := range tids {
			var err error
			if regs[i], err = GetRegs(tid); err != nil {
				return err
			}
			if masks[i], err = GetSigmask(tid); err != nil {
				return err
			}
			if rseqs[i], err = GetRseqConfig(tid); err != nil {
				return err
			}
		}
		if masks[1] == masks[2] {
			t.Errorf("threads 1 and 2 have the same mask %#x: the workload did not set them", masks[1])
		}
		leader, err := NewInjector(pid)
		if err != nil {
			return err
		}
		leader.SettleAtEnd = true
		if err := leader.BeginWith(regs[0], masks[0], rseqs[0]); err != nil {
			return err
		}
		ins := make([]*Injector, len(tids)-1)
		for i, tid := range tids[1:] {
			ins[i] = leader.ForThread(tid)
		}
		if n, err := BeginAllWith(ins, regs[1:], masks[1:], rseqs[1:]); err != nil || n != len(ins) {
			return fmt.Errorf("begin threads: %d of %d, %v", n, len(ins), err)
		}
		// The leader's slot larger than the threads' (as a dump's).
		if err := leader.StartNewBatchSized(SlotSize{Calls: 4, Scratch: 64}, SlotSize{Calls: 2, Scratch: 32}, len(tids)); err != nil {
			return err
		}
		b, err := leader.FinishNewBatch()
		if err != nil {
			return err
		}
		c0 := []BatchCall{{Nr: unix.SYS_GETTID}}
		if err := b.Run(c0); err != nil || int(c0[0].Ret) != pid {
			t.Errorf("leader: %v %+v", err, c0)
		}
		if n, err := StartAll([]*Batch{b}, nil); err == nil || n != 0 {
			t.Errorf("StartAll with a call list missing: %d, %v", n, err)
		}
		bs := make([]*Batch, len(ins))
		calls := make([][]BatchCall, len(ins))
		for i, in := range ins {
			if bs[i], err = b.Slot(i+1, in); err != nil {
				return err
			}
			calls[i] = []BatchCall{{Nr: unix.SYS_GETTID}, {Nr: unix.SYS_GETPID}}
		}
		if n, err := StartAll(bs, calls); err != nil || n != len(bs) {
			return fmt.Errorf("start all: %d of %d, %v", n, len(bs), err)
		}
		errs := FinishAll(bs)
		for i, tid := range tids[1:] {
			if errs[i] != nil {
				return errs[i]
			}
			if !calls[i][0].Ran || !calls[i][1].Ran || int(calls[i][0].Ret) != tid || int(calls[i][1].Ret) != pid {
				t.Errorf("thread %d: gettid %d, getpid %d", tid, calls[i][0].Ret, calls[i][1].Ret)
			}
			if err := ins[i].StartEnd(); err != nil {
				return err
			}
		}
		for _, in := range ins {
			if err := in.FinishEnd(); err != nil {
				return err
			}
		}
		if err := b.Close(); err != nil {
			return err
		}
		if err := leader.End(); err != nil {
			return err
		}
		for i, tid := range tids {
			r, err := GetRegs(tid)
			if err != nil {
				return err
			}
			m, err := GetSigmask(tid)
			if err != nil {
				return err
			}
			if r != regs[i] || m != masks[i] {
				t.Errorf("thread %d: registers or mask changed (mask %#x, was %#x)", tid, m, masks[i])
			}
		}
		for _, tid := range tids {
			if err := Detach(tid, 0); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := countMaps(t, pid); got != maps {
		t.Errorf("%d mappings after, %d before", got, maps)
	}
	for _, tid := range tids {
		waitState(t, tid, 'S') // back in pause, not stopped
	}
}

// TestBatchSlotsSized: slots of StartNewBatchSized lie one after the
// other, slot 0 with its own size, each with room for its calls and
// scratch, all inside the mapping.
func TestBatchSlotsSized(t *testing.T) {
	first, rest := SlotSize{Calls: 20, Scratch: 20 * 32}, SlotSize{Calls: 3, Scratch: 3 * 32}
	const slots = 50
	page := uintptr(os.Getpagesize())
	entries := 1 + first.entries() + (slots-1)*rest.entries()
	size := page + (uintptr(entries*batchEntrySize)+page-1)/page*page
	addr := uintptr(0x10000)
	table := addr + page + batchEntrySize
	b := &Batch{in: &Injector{Tid: 1}, addr: addr, table: table, size: int(size), maxCalls: first.Calls, slots: slots,
		slot0Size: uintptr(first.entries() * batchEntrySize), slotSize: uintptr(rest.entries() * batchEntrySize), slotCalls: rest.Calls}
	b.Scratch = b.table + uintptr(b.maxCalls*batchEntrySize)
	end := table
	for i := range slots {
		s, err := b.Slot(i, &Injector{Tid: 100 + i})
		if err != nil {
			t.Fatal(err)
		}
		room := first
		if i > 0 {
			room = rest
		}
		if s.maxCalls != room.Calls {
			t.Errorf("slot %d: room for %d calls, want %d", i, s.maxCalls, room.Calls)
		}
		if s.table != end {
			t.Errorf("slot %d: table at %#x, want %#x (right after the slot before)", i, s.table, end)
		}
		if s.Scratch != s.table+uintptr(room.Calls*batchEntrySize) {
			t.Errorf("slot %d: scratch at %#x, not right after its %d table entries at %#x", i, s.Scratch, room.Calls, s.table)
		}
		end = s.table + uintptr(room.entries()*batchEntrySize)
		if end < s.Scratch+uintptr(room.Scratch) {
			t.Errorf("slot %d: %d scratch bytes at %#x reach past the slot's end %#x", i, room.Scratch, s.Scratch, end)
		}
	}
	if end > addr+size {
		t.Errorf("slots end at %#x, the mapping at %#x", end, addr+size)
	}
	if _, err := b.Slot(slots, &Injector{Tid: 1}); err == nil {
		t.Errorf("slot %d of %d given", slots, slots)
	}
}

// TestBatchFault: a batch whose task faults (here its table is made
// read-only, so the code's store of the first result faults) returns a
// *FaultError naming the signal and the address, instead of suppressing
// the SIGSEGV and resuming the task into the same fault for ever.
func TestBatchFault(t *testing.T) {
	requireRoot(t)
	w := startWorkload(t, "counter")
	w.expect(t, "tick", 5*time.Second)
	tr := stoppedTracer(t, w.pid)
	done := make(chan error, 1)
	var table uintptr
	go func() {
		done <- tr.Do(func() error {
			in, err := NewInjector(w.pid)
			if err != nil {
				return err
			}
			if err := in.Begin(); err != nil {
				return err
			}
			b, err := in.NewBatch(4)
			if err != nil {
				return err
			}
			table = b.table
			if _, err := in.Syscall(unix.SYS_MPROTECT, b.table&^uintptr(os.Getpagesize()-1), uintptr(os.Getpagesize()), unix.PROT_READ); err != nil {
				return err
			}
			return b.Run([]BatchCall{{Nr: unix.SYS_GETPID}})
		})
	}()
	select {
	case err := <-done:
		var fe *FaultError
		if !errors.As(err, &fe) || fe.Sig != int(unix.SIGSEGV) || fe.Tid != w.pid || fe.Addr&^uint64(os.Getpagesize()-1) != uint64(table)&^uint64(os.Getpagesize()-1) {
			t.Fatalf("batch storing into a read-only table: %v, want a SIGSEGV fault in its page %#x", err, table)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("batch in a faulting task did not return within 10 s")
	}
}
