package ptrace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// batchCode runs a table of syscalls and stops on an int3. Registers on
// entry: rbx = the table, r12 = the number of entries. Each entry is 8
// words: nr (bit 63 set: an error does not stop the batch), six arguments,
// and the result, which the code stores. It stops after the last entry or
// after the first failing one (result in [-4095, -1]) without bit 63. On the
// int3, r12 is the number of entries not run.
//
//	loop:	test r12, r12
//		jz   done
//		mov  r13, [rbx]
//		mov  rax, r13
//		btr  rax, 63
//		mov  rdi, [rbx+8]
//		mov  rsi, [rbx+16]
//		mov  rdx, [rbx+24]
//		mov  r10, [rbx+32]
//		mov  r8, [rbx+40]
//		mov  r9, [rbx+48]
//		syscall
//		mov  [rbx+56], rax
//		add  rbx, 64
//		dec  r12
//		cmp  rax, -4095
//		jb   loop
//		bt   r13, 63
//		jc   loop
//	done:	int3
var batchCode = []byte{
	0x4d, 0x85, 0xe4, // test r12, r12
	0x74, 0x3f, // je done
	0x4c, 0x8b, 0x2b, // mov r13, [rbx]
	0x4c, 0x89, 0xe8, // mov rax, r13
	0x48, 0x0f, 0xba, 0xf0, 0x3f, // btr rax, 63
	0x48, 0x8b, 0x7b, 0x08, // mov rdi, [rbx+8]
	0x48, 0x8b, 0x73, 0x10, // mov rsi, [rbx+16]
	0x48, 0x8b, 0x53, 0x18, // mov rdx, [rbx+24]
	0x4c, 0x8b, 0x53, 0x20, // mov r10, [rbx+32]
	0x4c, 0x8b, 0x43, 0x28, // mov r8, [rbx+40]
	0x4c, 0x8b, 0x4b, 0x30, // mov r9, [rbx+48]
	0x0f, 0x05, // syscall
	0x48, 0x89, 0x43, 0x38, // mov [rbx+56], rax
	0x48, 0x83, 0xc3, 0x40, // add rbx, 64
	0x49, 0xff, 0xcc, // dec r12
	0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, // cmp rax, -4095
	0x72, 0xc3, // jb loop
	0x49, 0x0f, 0xba, 0xe5, 0x3f, // bt r13, 63
	0x72, 0xbc, // jc loop
	0xcc, // done: int3
}

// codeBufs are setup's buffers for the code page and first table.
var codeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// ErrSyscallStops says that a task ignores SIGTRAP, which the batch's int3
// would reset: inject single calls instead.
var ErrSyscallStops = errors.New("the task ignores SIGTRAP, which the batch's int3 would reset; inject single calls")

const (
	batchEntrySize = 64
	batchMayFail   = 1 << 63
)

// BatchCall is one syscall of a Batch.
type BatchCall struct {
	Nr   uintptr
	Args [6]uintptr
	// MayFail: an error result does not stop the batch.
	MayFail bool
	// NoResult: the caller needs no Ret of this call (Ran and the
	// batch's error still tell what ran). When every call of a Run has
	// it, Run does not read the results back from the task.
	NoResult bool
	// Ret and Ran are set by Run.
	Ret uintptr
	Ran bool
}

// Errno returns the error of a call that ran and failed, else nil.
func (c *BatchCall) Errno() error {
	if r := int64(c.Ret); c.Ran && r < 0 && r >= -4095 {
		return unix.Errno(-r)
	}
	return nil
}

// BatchError says which call stopped a batch.
type BatchError struct {
	Index int
	Nr    uintptr
	Errno unix.Errno
}

func (e *BatchError) Error() string {
	return fmt.Sprintf("call %d of the batch (%s): %v", e.Index, syscallLabel(e.Nr), e.Errno)
}
func (e *BatchError) Unwrap() error { return e.Errno }

// Batch runs many syscalls in a task with one PTRACE_CONT and one stop,
// instead of a round trip per call: a page of code (batchCode, read-execute)
// and a table in the task.
type Batch struct {
	in       *Injector
	addr     uintptr // the code
	table    uintptr // the table of calls
	size     int     // of the mapping at addr, when we mapped it
	maxCalls int
	borrowed bool // BatchAt: memory the caller owns
	// running: the calls of a batch Start set going and Finish has not
	// waited for yet.
	running []BatchCall
	// slots, slot0Size, slotSize, slotCalls: StartNewBatchSized's
	// layout: slot 0 (this batch) takes slot0Size bytes of table and
	// scratch, every other slot slotSize, for slotCalls calls.
	slots     int
	slot0Size uintptr
	slotSize  uintptr
	slotCalls int
	// pre are calls that run ahead of the next batch's own, in the table
	// entries just before it (FinishNewBatch's mprotect); npre of the
	// running batch are such.
	pre  []BatchCall
	npre int
	// closing: StartClose started the munmap.
	closing bool
	// needCode: the code is not written yet (FinishNewBatch); setup
	// writes it with the first table.
	needCode bool
	// Scratch is writable memory for out-arguments (StartNewBatchSized),
	// else 0.
	Scratch uintptr
	// with, withAddr: bytes the next setup writes to withAddr together
	// with the table (WriteWith).
	with     []byte
	withAddr uintptr
}

// WriteWith has the next Start or Run write data to addr in the task (plain
// writable memory, like the table) with the same process_vm_writev as the
// table of calls: the caller's argument data for the batch costs no write
// of its own. data must stay untouched until then.
func (b *Batch) WriteWith(addr uintptr, data []byte) {
	b.with, b.withAddr = data, addr
}

// NewBatch maps the batch code and a table for maxCalls calls in the task
// (two injected syscalls). Close unmaps them.
// Preconditions: caller is on the tracer thread; the task is ptrace-stopped.
func (in *Injector) NewBatch(maxCalls int) (*Batch, error) {
	if in.syscallStops {
		return nil, fmt.Errorf("prepare batch in task %d: %w", in.Tid, ErrSyscallStops)
	}
	page := os.Getpagesize()
	size := page + (maxCalls*batchEntrySize+page-1)/page*page
	addr, err := in.Syscall(unix.SYS_MMAP, 0, uintptr(size), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
	if err != nil {
		return nil, fmt.Errorf("prepare batch in task %d: %w", in.Tid, err)
	}
	b := &Batch{in: in, addr: addr, table: addr + uintptr(page), size: size, maxCalls: maxCalls}
	if err := writeMemFast(in.Tid, addr, batchCode, 0, nil); err != nil {
		return nil, errors.Join(fmt.Errorf("prepare batch in task %d: %w", in.Tid, err), b.Close())
	}
	if _, err := in.Syscall(unix.SYS_MPROTECT, addr, uintptr(page), unix.PROT_READ|unix.PROT_EXEC); err != nil {
		return nil, errors.Join(fmt.Errorf("prepare batch in task %d: %w", in.Tid, err), b.Close())
	}
	return b, nil
}

// SlotSize is the room of one slot of StartNewBatchSized: calls and
// scratch bytes (Batch.Scratch, for the calls' out-arguments).
type SlotSize struct{ Calls, Scratch int }

// entries is the number of table entries the slot takes.
func (s SlotSize) entries() int { return s.Calls + (s.Scratch+batchEntrySize-1)/batchEntrySize }

// StartNewBatchSized begins to map room for slots batches, which may run
// at the same time in different threads of the process (Slot), in one
// injected call where NewBatch takes two: it starts the mmap (Start) and
// returns; FinishNewBatch waits for it and returns the Batch of slot 0.
// The memory is mapped read-execute and the code written through
// /proc/PID/mem (which ignores protections); the first batch run makes the
// tables writable itself (an mprotect ahead of its calls). Between the two
// halves the tracer may start the same in other tasks. Only between Begin
// and End.
//
// Slot 0 has room first and every other slot rest: a process's own
// getters need room for many calls, each of its threads' for a few, and
// slots all as large as the first made the memory of a 50-thread task,
// which the tables' writes and the calls' results fault in on both sides,
// several times what the threads use.
// Preconditions: caller is on the tracer thread; the task is ptrace-stopped.
func (in *Injector) StartNewBatchSized(first, rest SlotSize, slots int) error {
	if in.syscallStops {
		return fmt.Errorf("prepare batch in task %d: %w", in.Tid, ErrSyscallStops)
	}
	slots = max(slots, 1)
	// One more entry: the first run's mprotect goes ahead of slot 0's
	// calls.
	entries := 1 + first.entries() + (slots-1)*rest.entries()
	page := os.Getpagesize()
	size := page + (entries*batchEntrySize+page-1)/page*page
	if err := in.Start(unix.SYS_MMAP, 0, uintptr(size), unix.PROT_READ|unix.PROT_EXEC,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0); err != nil {
		return fmt.Errorf("prepare batch in task %d: %w", in.Tid, err)
	}
	in.newBatch = &Batch{in: in, size: size, maxCalls: first.Calls, slots: slots,
		slot0Size: uintptr(first.entries() * batchEntrySize), slotSize: uintptr(rest.entries() * batchEntrySize),
		slotCalls: rest.Calls}
	return nil
}

// FinishNewBatch completes StartNewBatchSized.
func (in *Injector) FinishNewBatch() (*Batch, error) {
	b := in.newBatch
	if b == nil {
		return nil, fmt.Errorf("prepare batch in task %d: not started", in.Tid)
	}
	in.newBatch = nil
	addr, err := in.Finish()
	if err != nil {
		return nil, fmt.Errorf("prepare batch in task %d: %w", in.Tid, err)
	}
	page := uintptr(os.Getpagesize())
	b.addr = addr
	// The first entry of the table is slot 0's mprotect; the slots follow.
	b.table = addr + page + batchEntrySize
	b.Scratch = b.table + uintptr(b.maxCalls*batchEntrySize)
	// The code goes in with the first table, in one write (setup).
	b.needCode = true
	b.pre = []BatchCall{{Nr: unix.SYS_MPROTECT, Args: [6]uintptr{addr + page, uintptr(b.size) - page, unix.PROT_READ | unix.PROT_WRITE}}}
	return b, nil
}

// Leave gives up the batch without unmapping its memory, for a caller
// that unmaps it later (or whose task will not run again): it returns the
// mapping (addr 0 if there is none of ours to unmap), and the batch is
// closed.
func (b *Batch) Leave() (addr uintptr, size int) {
	if b.addr == 0 || b.borrowed {
		b.addr = 0
		return 0, 0
	}
	addr, size = b.addr, b.size
	b.addr = 0
	return addr, size
}

// StartClose begins Close (the munmap) and returns; FinishClose waits for
// it. Between the two the tracer may close batches of other tasks.
func (b *Batch) StartClose() error {
	if b.addr == 0 || b.borrowed {
		b.addr = 0
		return nil
	}
	if err := b.in.Start(unix.SYS_MUNMAP, b.addr, uintptr(b.size)); err != nil {
		return fmt.Errorf("unmap batch of task %d: %w", b.in.Tid, err)
	}
	b.addr = 0
	b.closing = true
	return nil
}

// FinishClose completes StartClose.
func (b *Batch) FinishClose() error {
	if !b.closing {
		return nil
	}
	b.closing = false
	if _, err := b.in.Finish(); err != nil {
		return fmt.Errorf("unmap batch of task %d: %w", b.in.Tid, err)
	}
	return nil
}

// BatchCodeSize is the size of the batch code that BatchAt writes.
const BatchCodeSize = 0x45

// BatchAt makes a Batch in memory the caller already has in the task (a
// puppet's trampoline, say): the code goes to code (it must be executable;
// it is written through /proc/PID/mem, which ignores protections), the
// table of at most maxCalls entries (64 bytes each) to table, which must be
// writable. Close then leaves the memory alone. The Injector needs no
// SyscallAddr for batches: &Injector{Tid: tid} will do.
// Preconditions: caller is on the tracer thread; the task is ptrace-stopped.
func (in *Injector) BatchAt(code, table uintptr, maxCalls int) (*Batch, error) {
	if in.syscallStops {
		return nil, fmt.Errorf("prepare batch in task %d: %w", in.Tid, ErrSyscallStops)
	}
	if _, err := WriteMem(in.Tid, code, batchCode); err != nil {
		return nil, fmt.Errorf("prepare batch in task %d: %w", in.Tid, err)
	}
	return in.BatchOver(code, table, maxCalls)
}

// BatchCode returns the code BatchAt writes, for a caller that puts it in
// place itself (BatchOver).
func BatchCode() []byte { return append([]byte(nil), batchCode...) }

// BatchOver is BatchAt for a task whose memory at code already holds
// BatchCode(): written by the caller with other code in one write, or
// inherited from the task it was cloned from. It writes nothing.
func (in *Injector) BatchOver(code, table uintptr, maxCalls int) (*Batch, error) {
	if in.syscallStops {
		return nil, fmt.Errorf("prepare batch in task %d: %w", in.Tid, ErrSyscallStops)
	}
	return &Batch{in: in, addr: code, table: table, maxCalls: maxCalls, borrowed: true}, nil
}

// Close unmaps the batch's memory from the task (unless the caller lent it,
// see BatchAt).
func (b *Batch) Close() error {
	if b.addr == 0 {
		return nil
	}
	if b.borrowed {
		b.addr = 0
		return nil
	}
	addr := b.addr
	b.addr = 0
	if _, err := b.in.Syscall(unix.SYS_MUNMAP, addr, uintptr(b.size)); err != nil {
		return fmt.Errorf("unmap batch of task %d: %w", b.in.Tid, err)
	}
	return nil
}

// Run runs calls in order and fills in their Ret and Ran. It stops at the
// first failing call that is not MayFail and returns a *BatchError for it
// (errors.Is works with its errno). Signals that arrive meanwhile are held
// back in the Injector's Deferred, event stops noted in its Events.
// Preconditions: caller is on the tracer thread; the task is ptrace-stopped.
func (b *Batch) Run(calls []BatchCall) (err error) {
	in := b.in
	if b.addr == 0 {
		return fmt.Errorf("run batch in task %d: batch closed", in.Tid)
	}
	if len(calls) > b.maxCalls {
		return fmt.Errorf("run batch in task %d: %d calls, room for %d", in.Tid, len(calls), b.maxCalls)
	}
	if len(calls) == 0 {
		return nil
	}
	if in.session == nil {
		if err := in.Begin(); err != nil {
			return fmt.Errorf("run batch in task %d: %w", in.Tid, err)
		}
		defer func() {
			if eerr := in.End(); eerr != nil && err == nil {
				err = fmt.Errorf("run batch in task %d: put registers back: %w", in.Tid, eerr)
			}
		}()
	}
	if err := b.setup(calls); err != nil {
		return err
	}
	return b.wait(calls, false)
}

// Start runs calls like Run, but returns as soon as the task is on its way:
// Finish waits for the results. Between the two the tracer may start
// batches in other tasks (or other threads, with their own table: Slot),
// which then run at the same time. Only between the Injector's Begin and
// End. calls must stay untouched until Finish, which fills them in.
// Preconditions: caller is on the tracer thread; the task is ptrace-stopped.
func (b *Batch) Start(calls []BatchCall) error {
	in := b.in
	if err := b.startable(calls); err != nil {
		return err
	}
	if err := b.setup(calls); err != nil {
		return err
	}
	if len(calls) == 0 {
		b.running = []BatchCall{}
		return nil
	}
	if err := Cont(in.Tid, 0); err != nil {
		return fmt.Errorf("run batch in task %d: %w", in.Tid, err)
	}
	b.running = calls
	return nil
}

// Finish waits for the batch of Start and returns what Run would.
func (b *Batch) Finish() error {
	calls := b.running
	if calls == nil {
		return fmt.Errorf("finish batch in task %d: no batch started", b.in.Tid)
	}
	b.running = nil
	if len(calls) == 0 {
		return nil
	}
	return b.wait(calls, true)
}

// startable says why b cannot start calls now (Start, StartAll), or nil.
func (b *Batch) startable(calls []BatchCall) error {
	in := b.in
	switch {
	case b.addr == 0:
		return fmt.Errorf("run batch in task %d: batch closed", in.Tid)
	case len(calls) > b.maxCalls:
		return fmt.Errorf("run batch in task %d: %d calls, room for %d", in.Tid, len(calls), b.maxCalls)
	case in.session == nil:
		return fmt.Errorf("run batch in task %d: injection not begun", in.Tid)
	case b.running != nil:
		return fmt.Errorf("run batch in task %d: a batch is still running", in.Tid)
	}
	return nil
}

// StartAll is Start of each batch bs[i] with calls[i], for batches in
// threads of one process (Slot, or BatchOver in memory they share): their
// tables and WriteWith data go in with one process_vm_writev instead of one
// each, and every thread is pointed at its batch before the first is set
// going, so that the tracer's requests are not slowed by threads already
// running on the other CPU. It returns how many were started, bs[:n] (each
// needs its Finish), and why the others were not.
// Preconditions: caller is on the tracer thread; every thread is
// ptrace-stopped.
func StartAll(bs []*Batch, calls [][]BatchCall) (int, error) {
	if len(bs) != len(calls) {
		return 0, fmt.Errorf("start batches: %d batches, %d call lists", len(bs), len(calls))
	}
	// Every batch is checked before any is laid out: layout takes each
	// batch's pending writes, which a refusal of a later one must leave.
	for i, b := range bs {
		if err := b.startable(calls[i]); err != nil {
			return 0, err
		}
		if b.needCode {
			// Its code goes in through /proc/PID/mem (setup).
			return 0, fmt.Errorf("run batch in task %d: StartAll with a batch whose code is not written yet", b.in.Tid)
		}
	}
	var writes []memWrite
	laid := make([]int, len(bs)) // the table's calls (with pre), 0: none
	for i, b := range bs {
		var err error
		if writes, laid[i], err = b.layout(calls[i], writes); err != nil {
			return 0, err
		}
	}
	if len(bs) > 0 {
		if err := writeMany(bs[0].in.Tid, writes); err != nil {
			return 0, fmt.Errorf("run batches in task %d: %w", bs[0].in.Tid, err)
		}
	}
	for i, b := range bs {
		if laid[i] == 0 {
			continue
		}
		if err := b.point(laid[i]); err != nil {
			return 0, err
		}
	}
	for i, b := range bs {
		if len(calls[i]) == 0 {
			b.running = []BatchCall{}
			continue
		}
		if err := Cont(b.in.Tid, 0); err != nil {
			return i, fmt.Errorf("run batch in task %d: %w", b.in.Tid, err)
		}
		b.running = calls[i]
	}
	return len(bs), nil
}

// memWrite is one write of writeMany.
type memWrite struct {
	addr uintptr
	data []byte
}

// layout adds the writes of setup for calls (the table, with b's pre
// calls ahead, and WriteWith's data) to writes, for a batch whose code is
// in place. n is the number of table entries, 0 for no calls.
func (b *Batch) layout(calls []BatchCall, writes []memWrite) (_ []memWrite, n int, err error) {
	with, withAddr := b.with, b.withAddr
	b.with, b.withAddr = nil, 0
	if len(with) > 0 {
		writes = append(writes, memWrite{withAddr, with})
	}
	if len(calls) == 0 {
		return writes, 0, nil
	}
	b.npre = len(b.pre)
	if b.npre > 0 {
		calls = append(append([]BatchCall{}, b.pre...), calls...)
	}
	tableAddr := b.table - uintptr(b.npre*batchEntrySize)
	return append(writes, memWrite{tableAddr, BatchTable(calls)}), len(calls), nil
}

// point points the task at the batch code and its table of n entries
// (layout).
func (b *Batch) point(n int) error {
	in := b.in
	r := in.session.regs
	PointAtBatch(&r, b.addr, b.table-uintptr(b.npre*batchEntrySize), n)
	if err := SetRegs(in.Tid, &r); err != nil {
		return fmt.Errorf("run batch in task %d: %w", in.Tid, err)
	}
	in.Events = in.Events[:0]
	in.trapped = true // the batch ends in its int3's SIGTRAP stop
	return nil
}

// writeMany writes every w into pid's memory, with as few
// process_vm_writev as IOV_MAX allows (through /proc/PID/mem, one by one,
// if that fails).
func writeMany(pid int, ws []memWrite) error {
	const iovMax = 1024
	for len(ws) > 0 {
		part := ws[:min(len(ws), iovMax)]
		ws = ws[len(part):]
		local := make([]unix.Iovec, 0, len(part))
		remote := make([]unix.RemoteIovec, 0, len(part))
		total := 0
		for _, w := range part {
			if len(w.data) == 0 {
				continue
			}
			l := unix.Iovec{Base: &w.data[0]}
			l.SetLen(len(w.data))
			local = append(local, l)
			remote = append(remote, unix.RemoteIovec{Base: w.addr, Len: len(w.data)})
			total += len(w.data)
		}
		if total == 0 {
			continue
		}
		var n int
		err := retry(func() (err error) {
			n, err = unix.ProcessVMWritev(pid, local, remote, 0)
			return err
		})
		if err == nil && n == total {
			continue
		}
		for _, w := range part {
			if len(w.data) == 0 {
				continue
			}
			if _, err := WriteMem(pid, w.addr, w.data); err != nil {
				return err
			}
		}
	}
	return nil
}

// setup writes the table of calls (and WriteWith's data) and points the
// task at the code.
func (b *Batch) setup(calls []BatchCall) error {
	in := b.in
	with, withAddr := b.with, b.withAddr
	b.with, b.withAddr = nil, 0
	if len(calls) == 0 {
		if len(with) > 0 {
			return writeMemFast(in.Tid, withAddr, with, 0, nil)
		}
		return nil
	}
	b.npre = len(b.pre)
	tableAddr := b.table - uintptr(b.npre*batchEntrySize)
	if b.npre > 0 {
		calls = append(append([]BatchCall{}, b.pre...), calls...)
	}
	table := BatchTable(calls)
	if b.needCode {
		// The code page and the table after it, read-only for the task
		// until the batch's mprotect: one write through /proc/PID/mem,
		// from a pooled buffer (a dump of a tree writes one per task).
		bp := codeBufs.Get().(*[]byte)
		code := slices.Grow((*bp)[:0], int(tableAddr-b.addr)+len(table))[:int(tableAddr-b.addr)+len(table)]
		clear(code)
		copy(code, batchCode)
		copy(code[tableAddr-b.addr:], table)
		_, err := WriteMem(in.Tid, b.addr, code)
		*bp = code
		codeBufs.Put(bp)
		if err != nil {
			return fmt.Errorf("run batch in task %d: %w", in.Tid, err)
		}
		b.needCode = false
		if len(with) > 0 {
			if err := writeMemFast(in.Tid, withAddr, with, 0, nil); err != nil {
				return fmt.Errorf("run batch in task %d: %w", in.Tid, err)
			}
		}
	} else if err := writeMemFast(in.Tid, tableAddr, table, withAddr, with); err != nil {
		return fmt.Errorf("run batch in task %d: %w", in.Tid, err)
	}
	return b.point(len(calls))
}

// wait drives the batch set up by setup to its int3 and fills in calls.
// started: the task was resumed already (Start).
func (b *Batch) wait(user []BatchCall, started bool) error {
	e, err := b.waitEnd(user, started)
	if err != nil {
		return err
	}
	if e.read {
		if err := b.readResults(e.tableAddr, e.calls[:e.ran]); err != nil {
			return err
		}
	}
	return b.ended(user, e)
}

// batchEnd is where a batch ended (waitEnd), for ended.
type batchEnd struct {
	user      []BatchCall // the caller's calls
	calls     []BatchCall // b's pre calls, then the user's
	npre      int
	tableAddr uintptr
	ran       int
	lastRet   uint64
	read      bool // the results of calls[:ran] are to be read from the table
}

// waitEnd is the first half of wait: it drives the batch to its int3 and
// tells how far it got, without reading the results.
func (b *Batch) waitEnd(user []BatchCall, started bool) (batchEnd, error) {
	in := b.in
	npre := b.npre
	b.npre = 0
	e := batchEnd{user: user, npre: npre, tableAddr: b.table - uintptr(npre*batchEntrySize), calls: user}
	if npre > 0 {
		e.calls = append(append([]BatchCall{}, b.pre...), user...)
	}
	end := uint64(b.addr) + uint64(len(batchCode))
	var left uint64
	for {
		if !started {
			if err := Cont(in.Tid, 0); err != nil {
				return e, fmt.Errorf("run batch in task %d: %w", in.Tid, err)
			}
		}
		started = false
		st, err := WaitStopped(in.Tid)
		if err != nil {
			return e, fmt.Errorf("run batch in task %d: %w", in.Tid, err)
		}
		if st.Event != 0 {
			if err := in.noteEvent(st); err != nil {
				return e, fmt.Errorf("run batch in task %d: %w", in.Tid, err)
			}
			continue
		}
		if st.Sig != int(unix.SIGTRAP) {
			if err := Fault(in.Tid, st.Sig); err != nil {
				return e, fmt.Errorf("run batch in task %d: %w", in.Tid, err)
			}
			in.Deferred = append(in.Deferred, st.Sig)
			continue
		}
		regs, err := GetRegs(in.Tid)
		if err != nil {
			return e, fmt.Errorf("run batch in task %d: %w", in.Tid, err)
		}
		if regs.Rip == end {
			left = regs.R12
			e.lastRet = regs.Rax // the result of the last call that ran
			break
		}
		si, err := GetSiginfo(in.Tid)
		if err != nil {
			return e, fmt.Errorf("run batch in task %d: %w", in.Tid, err)
		}
		if code := int32(binary.LittleEndian.Uint32(si[8:])); code <= 0 {
			in.Deferred = append(in.Deferred, st.Sig)
			continue
		}
		return e, fmt.Errorf("run batch in task %d: unexpected trap at %#x", in.Tid, regs.Rip)
	}
	e.ran = len(e.calls) - int(left)
	if e.ran < 0 || e.ran > len(e.calls) {
		return e, fmt.Errorf("run batch in task %d: %d of %d calls left, corrupt state", in.Tid, left, len(e.calls))
	}
	noResults := true
	for i := range e.ran {
		noResults = noResults && e.calls[i].NoResult
	}
	e.read = e.ran > 0 && !noResults
	return e, nil
}

// ended is the second half of wait, once the results are read (when
// e.read): it fills in user and returns wait's error.
func (b *Batch) ended(user []BatchCall, e batchEnd) error {
	in, calls, ran, npre := b.in, e.calls, e.ran, e.npre
	if ran == 0 {
		return nil
	}
	if !e.read {
		for i := range ran {
			calls[i].Ran = true
		}
		calls[ran-1].Ret = uintptr(e.lastRet)
	}
	last := &calls[ran-1]
	if ran <= npre {
		// The batch's own preparation failed (or the table is
		// corrupt): none of the caller's calls ran.
		if e := last.Errno(); e != nil {
			return fmt.Errorf("run batch in task %d: prepare with %s: %w", in.Tid, syscallLabel(last.Nr), e)
		}
		return fmt.Errorf("run batch in task %d: stopped after %d of its %d preparing calls", in.Tid, ran, npre)
	}
	b.pre = nil
	copy(user, calls[npre:])
	if e := last.Errno(); e != nil && !last.MayFail {
		return &BatchError{Index: ran - 1 - npre, Nr: last.Nr, Errno: e.(unix.Errno)}
	}
	return nil
}

// FinishAll is Finish of each batch of bs, batches of threads of one
// process that StartAll started: it waits for every one, then reads the
// results of all of them with one process_vm_readv instead of one each.
// errs[i] is what bs[i].Finish would have returned.
// Preconditions: caller is on the tracer thread.
func FinishAll(bs []*Batch) (errs []error) {
	errs = make([]error, len(bs))
	ends := make([]batchEnd, len(bs))
	var local []unix.Iovec
	var remote []unix.RemoteIovec
	var at []int // the batch of each iovec
	var bufs [][]byte
	for i, b := range bs {
		calls := b.running
		if calls == nil {
			errs[i] = fmt.Errorf("finish batch in task %d: no batch started", b.in.Tid)
			continue
		}
		b.running = nil
		if len(calls) == 0 {
			continue // ended: nothing ran, nothing to fill in
		}
		if ends[i], errs[i] = b.waitEnd(calls, true); errs[i] != nil || !ends[i].read {
			continue
		}
		buf := make([]byte, ends[i].ran*batchEntrySize)
		l := unix.Iovec{Base: &buf[0]}
		l.SetLen(len(buf))
		local = append(local, l)
		remote = append(remote, unix.RemoteIovec{Base: ends[i].tableAddr, Len: len(buf)})
		at, bufs = append(at, i), append(bufs, buf)
	}
	got := 0
	if len(at) > 0 {
		err := retry(func() (err error) {
			got, err = unix.ProcessVMReadv(bs[at[0]].in.Tid, local, remote, 0)
			return err
		})
		if err != nil {
			got = 0
		}
	}
	for k, i := range at {
		b, e, buf := bs[i], ends[i], bufs[k]
		if got < len(buf) {
			// Not read together (the read stops at the first range
			// it cannot read): alone, with readResults's errors.
			got = 0
			errs[i] = b.readResults(e.tableAddr, e.calls[:e.ran])
			continue
		}
		got -= len(buf)
		fillResults(e.calls[:e.ran], buf)
	}
	for i, b := range bs {
		if errs[i] != nil || len(ends[i].user) == 0 {
			continue
		}
		errs[i] = b.ended(ends[i].user, ends[i])
	}
	return errs
}

// readResults reads the results of the calls that ran from the table at
// tableAddr.
func (b *Batch) readResults(tableAddr uintptr, calls []BatchCall) error {
	in, ran := b.in, len(calls)
	out := make([]byte, ran*batchEntrySize)
	if _, err := ReadMem(in.Tid, tableAddr, out); err != nil {
		return fmt.Errorf("run batch in task %d: read results: %w", in.Tid, err)
	}
	fillResults(calls, out)
	return nil
}

// fillResults fills in calls, which ran, from table, their entries of the
// batch table as the batch code left them (the result in each entry's last
// word).
func fillResults(calls []BatchCall, table []byte) {
	for i := range calls {
		calls[i].Ret = uintptr(binary.LittleEndian.Uint64(table[i*batchEntrySize+56:]))
		calls[i].Ran = true
	}
}

// BatchTable returns calls as the batch code's table (64 bytes a call),
// for a caller that sets a task going through BatchCode itself
// (PointAtBatch).
func BatchTable(calls []BatchCall) []byte {
	table := make([]byte, len(calls)*batchEntrySize)
	for i, c := range calls {
		e := table[i*batchEntrySize:]
		nr := uint64(c.Nr)
		if c.MayFail {
			nr |= batchMayFail
		}
		binary.LittleEndian.PutUint64(e, nr)
		for j, a := range c.Args {
			binary.LittleEndian.PutUint64(e[8+8*j:], uint64(a))
		}
	}
	return table
}

// PointAtBatch sets r to run the batch code at code over the table of n
// calls at table (rip = the code, rbx = the table, r12 = n), with no
// syscall to restart (orig_rax -1) and no single-step.
func PointAtBatch(r *Regs, code, table uintptr, n int) {
	r.Rip = uint64(code)
	r.Rbx = uint64(table)
	r.R12 = uint64(n)
	r.Orig_rax = ^uint64(0)
	r.Eflags &^= 0x100
}

// writeMemFast writes buf to addr, and buf2 (if not empty) to addr2, in
// plain writable memory with one process_vm_writev (no open of
// /proc/PID/mem), falling back to WriteMem.
func writeMemFast(pid int, addr uintptr, buf []byte, addr2 uintptr, buf2 []byte) error {
	local := []unix.Iovec{{Base: &buf[0]}}
	local[0].SetLen(len(buf))
	remote := []unix.RemoteIovec{{Base: addr, Len: len(buf)}}
	total := len(buf)
	if len(buf2) > 0 {
		l := unix.Iovec{Base: &buf2[0]}
		l.SetLen(len(buf2))
		local = append(local, l)
		remote = append(remote, unix.RemoteIovec{Base: addr2, Len: len(buf2)})
		total += len(buf2)
	}
	var n int
	err := retry(func() (err error) {
		n, err = unix.ProcessVMWritev(pid, local, remote, 0)
		return err
	})
	if err == nil && n == total {
		return nil
	}
	if _, err = WriteMem(pid, addr, buf); err != nil || len(buf2) == 0 {
		return err
	}
	_, err = WriteMem(pid, addr2, buf2)
	return err
}

// Slot returns the Batch of slot i (StartNewBatchSized),
// run through th (an injector of a thread of the same process, see
// Injector.ForThread); its Close leaves the memory alone.
func (b *Batch) Slot(i int, th *Injector) (*Batch, error) {
	if i < 0 || i >= b.slots {
		return nil, fmt.Errorf("batch slot %d of task %d: %d slots", i, b.in.Tid, b.slots)
	}
	if b.needCode || b.pre != nil {
		// StartNewBatchSized's memory is made ready by slot 0's first run.
		return nil, fmt.Errorf("batch slot %d of task %d: slot 0 has not run yet", i, b.in.Tid)
	}
	if i == 0 {
		return &Batch{in: th, addr: b.addr, table: b.table, maxCalls: b.maxCalls, Scratch: b.Scratch, borrowed: true}, nil
	}
	table := b.table + b.slot0Size + uintptr(i-1)*b.slotSize
	return &Batch{in: th, addr: b.addr, table: table, maxCalls: b.slotCalls,
		Scratch: table + uintptr(b.slotCalls*batchEntrySize), borrowed: true}, nil
}

// ForThread returns an injector for another thread tid of the same
// process, sharing what NewInjector found for this one (the `syscall`
// instruction, whether SIGTRAP is ignored) and its scratch memory, without
// reading /proc again.
func (in *Injector) ForThread(tid int) *Injector {
	return &Injector{Tid: tid, SyscallAddr: in.SyscallAddr, Scratch: in.Scratch, ScratchSize: in.ScratchSize,
		syscallStops: in.syscallStops, SettleAtEnd: in.SettleAtEnd}
}
