package restore

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/ptrace"
)

// A puppet is a stopped, traced task that crtools drives with injected
// system calls until it is the dumped task (DESIGN.md, "Restore by
// puppets").
//
// Every puppet has the trampoline mapped at the same address: one page of
// code holding `syscall; int3`, followed by a scratch area for the strings
// and structs that syscalls read. An injected call sets RIP to the syscall
// instruction and the arguments in registers, PTRACE_CONTs, and collects
// RAX at the SIGTRAP of the int3: one stop per syscall instead of the two
// syscall-entry/exit stops.
//
// Preconditions for every method: the caller is on the tracer thread that
// traces the puppet, and the puppet is in a ptrace-stop.
type puppet struct {
	pid int // the tid of this thread (== pid for a thread-group leader), in crtools' pid namespace
	// vpid is the tid in the images: the same as pid unless the tree has
	// a pid namespace of its own (engine/restore/ns.go), then it is the
	// tid inside that namespace.
	vpid int
	// vtgid is tgid as the puppets see it: the images' pid of the process.
	vtgid int
	// crtoolsFd is a pidfd of crtools that the puppet inherited, or -1:
	// a puppet in a new pid namespace cannot pidfd_open crtools, which
	// it does not see (ns.go).
	crtoolsFd int64
	tgid      int // the process it belongs to
	tr        *trampoline
	regs      ptrace.Regs // template registers (segment selectors, flags) for injections
	log       zerolog.Logger

	// scratch mirrors the part of the scratch area filled since the last
	// call; it is copied into the puppet with one write before the call.
	scratch []byte
	calls   int // injected syscalls, for the cost log

	noPopulate bool // MADV_POPULATE_WRITE is not there (kernel < 5.14)

	populateTime, readTime time.Duration // memory fill, for the cost log

	// filled, if set, is told every chunk of pages filled (progress).
	filled func(n int64)

	// pending are calls queued by queuef, run as one ptrace.Batch by
	// runPending (one stop for all of them instead of one each).
	pending []pendingCall
	batch   *ptrace.Batch

	// fds is the fd table of the puppet as crtools knows it, or nil when
	// it is not known (fdtable.go): with it, a call that opens a file is
	// queued too, since its result, the lowest free number, is known in
	// advance (and checked when the batch has run).
	fds *fdTable
	// atTrap: the last stop of the puppet was the SIGTRAP of an
	// injection's int3 (dropTrampoline).
	atTrap bool
	// masked: the thread was born with puppetMask blocked
	// (blockForThreads), which beginProc then need not set.
	masked bool
	// creator, until the task exists, is the puppet whose queued clone3
	// creates it (queueClone); born runs that queue.
	creator *puppet
	// started is the batch startPending set going, until finishPending.
	started *startedBatch
	// keepExe, if not 0, is the file id of the task's executable:
	// mapVMAs leaves the fd it opened for it open, in exeFd (noFd:
	// none), for restoreMM.
	keepExe uint64
	exeFd   uint64
	// comm is the task's name (PR_SET_NAME) when crtools set it, or
	// inherited it from the puppet it was cloned from; "" when unknown.
	comm string
	// pdeathKill: parkLane gave the puppet PR_SET_PDEATHSIG(SIGKILL);
	// queueThread sets the dumped one, also when it is none.
	pdeathKill bool
	// bare: the address space holds the trampoline and nothing else
	// (the first puppet once it dropped its exec'ed image, and its
	// clones until RestoreState maps their memory): unmapPuppet has
	// nothing to do.
	bare bool
}

// pendingCall is a queued syscall and what it does (for its error).
type pendingCall struct {
	what    string
	nr      int
	args    [6]uint64
	mayFail bool // its error is ignored (a close on the way out)
	// expect is the result the call must return (a predicted fd
	// number), if hasExpect.
	expect    uint64
	hasExpect bool
	// ret, if set, receives the call's result.
	ret *uint64
	// after, if set, is told the result of the call once it ran
	// (err: its errno), before runPending returns.
	after func(ret uint64, err error) error
}

// born makes sure the puppet's task exists: a task whose clone3 is still
// queued in its creator is created by running that queue.
func (p *puppet) born() error {
	if p.creator == nil {
		return nil
	}
	if err := p.creator.runPending(); err != nil {
		return err
	}
	if p.creator != nil {
		return fmt.Errorf("task %d: its clone3 did not run", p.vpid)
	}
	return nil
}

// trampoline is where the trampoline sits in every puppet of a restore.
type trampoline struct {
	addr        uint64 // start of the mapping; the code is at addr
	size        uint64 // whole mapping
	scratch     uint64 // first byte of the scratch area
	scratchSize uint64

	fillBuf []byte // crtools-side buffer for page copies (fillBuffer)
	// fillOn, if set, is the CPU the first page-copy worker runs on
	// (writeRuns), and fillBack the mask it gets back after: the CPU the
	// tracer and the puppets are not pinned to, when no second lane
	// works there (RestoreState).
	fillOn, fillBack *unix.CPUSet
	xstate           []byte // a puppet's xstate, the base of every thread's (setFinalState)
	xsBuf            []byte // setFinalState's buffer, reused for every thread

	// tableCalls, if not 0, is the room of the batch table after the
	// scratch area, else batchCalls: a slot (threadSlot) is smaller.
	tableCalls int
}

// maxCalls is how many calls the batch table holds.
func (t *trampoline) maxCalls() int {
	if t.tableCalls != 0 {
		return t.tableCalls
	}
	return batchCalls
}

// trampolineCode is `syscall; int3`.
var trampolineCode = []byte{0x0f, 0x05, 0xcc}

const (
	pageSize          = 4096
	trampolineScratch = 64 << 10 // room for 1024 iovecs of a preadv batch, paths and structs
	// After the scratch area: the table of a batch of queued calls
	// (ptrace.Batch, 64 bytes a call); its code sits in the code page
	// after trampolineCode.
	batchCalls     = 256
	batchTableSize = batchCalls * 64
	batchCodeOff   = 64
	trampolineSize = pageSize + trampolineScratch + batchTableSize
)

// put copies b into the scratch area (8-byte aligned) and returns its
// address in the puppet. The bytes reach the puppet at the next call.
func (p *puppet) put(b []byte) (uint64, error) {
	off := (len(p.scratch) + 7) &^ 7
	if uint64(off+len(b)) > p.tr.scratchSize {
		return 0, fmt.Errorf("scratch area of puppet %d full (%d + %d bytes)", p.pid, off, len(b))
	}
	for len(p.scratch) < off {
		p.scratch = append(p.scratch, 0)
	}
	p.scratch = append(p.scratch, b...)
	return p.tr.scratch + uint64(off), nil
}

// putString copies s with a terminating NUL into the scratch area.
func (p *puppet) putString(s string) (uint64, error) {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return p.put(b)
}

func (p *puppet) flush() error {
	if len(p.scratch) == 0 {
		return nil
	}
	// The scratch area is plain read-write memory, so one
	// process_vm_writev does (WriteMem would open /proc/PID/mem each time).
	if err := writePlain(p.pid, p.tr.scratch, p.scratch); err != nil {
		return fmt.Errorf("write scratch area of puppet %d: %w", p.pid, err)
	}
	p.scratch = p.scratch[:0]
	return nil
}

// writePlain writes b (not empty) at addr of pid, plain writable memory,
// with one process_vm_writev; a short write is an error.
func writePlain(pid int, addr uint64, b []byte) error {
	n, err := unix.ProcessVMWritev(pid, []unix.Iovec{{Base: &b[0], Len: uint64(len(b))}},
		[]unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}, 0)
	if err == nil && n != len(b) {
		err = fmt.Errorf("short write: %d of %d bytes", n, len(b))
	}
	return err
}

// prepare sets the registers for an injected syscall nr at the trampoline.
func (p *puppet) prepare(nr int, args []uint64) error {
	if len(args) > 6 {
		return fmt.Errorf("syscall %d: %d arguments, at most 6", nr, len(args))
	}
	if p.started != nil {
		// A bug too: a started batch must be collected first.
		return fmt.Errorf("syscall %d in puppet %d: a batch is still running", nr, p.pid)
	}
	if len(p.pending) > 0 {
		// A bug, not a state of the task: queued calls must run first.
		return fmt.Errorf("syscall %d in puppet %d: %d queued calls not run (%s first)", nr, p.pid, len(p.pending), p.pending[0].what)
	}
	if err := p.born(); err != nil {
		return err
	}
	if err := p.flush(); err != nil {
		return err
	}
	var a [6]uint64
	copy(a[:], args)
	r := p.regs
	r.Rip = p.tr.addr
	r.Rax = uint64(nr)
	// orig_rax = -1: the kernel must never take this for an interrupted
	// syscall and "restart" it.
	r.Orig_rax = ^uint64(0)
	r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	return ptrace.SetRegs(p.pid, &r)
}

// call injects syscall nr and returns its result. A result in [-4095, -1]
// is returned as a syscall.Errno.
func (p *puppet) call(nr int, args ...uint64) (uint64, error) {
	if len(p.pending) > 0 {
		// Queued calls come first, in order.
		if err := p.runPending(); err != nil {
			return 0, err
		}
	}
	if err := p.startCall(nr, args); err != nil {
		return 0, err
	}
	if _, err := p.waitTrap(); err != nil {
		return 0, fmt.Errorf("syscall %d in puppet %d: %w", nr, p.pid, err)
	}
	p.atTrap = true
	ret, err := p.result(nr)
	if p.fds != nil {
		if err != nil {
			// A failed call changes no fd, except a close.
			if nr == unix.SYS_CLOSE {
				p.fds.del(args[0])
			}
		} else {
			var a [6]uint64
			copy(a[:], args)
			p.fds.apply(nr, a, ret)
		}
	}
	return ret, err
}

// startCall sets syscall nr going in the puppet: call up to its waitTrap,
// for a caller that runs a call in several puppets at once (parkLane).
func (p *puppet) startCall(nr int, args []uint64) error {
	if err := p.prepare(nr, args); err != nil {
		return err
	}
	p.atTrap = false
	return ptrace.Cont(p.pid, 0)
}

// waitTrap waits for the int3 stop. Other stops are possible meanwhile: a
// signal sent to the puppet (SIGCHLD from a puppet child) is suppressed, an
// event stop (clone) is returned to the caller that expects it.
func (p *puppet) waitTrap() (ptrace.StopInfo, error) {
	for {
		st, err := ptrace.WaitStopped(p.pid)
		if err != nil {
			return st, err
		}
		if st.Event == 0 && st.Sig == int(unix.SIGTRAP) {
			return st, nil
		}
		if st.Event != 0 {
			return st, nil
		}
		// A fault of its own comes back at once if suppressed.
		if err := ptrace.Fault(p.pid, st.Sig); err != nil {
			return st, err
		}
		p.log.Debug().Int("signal", st.Sig).Msg("signal to puppet suppressed")
		if err := ptrace.Cont(p.pid, 0); err != nil {
			return st, err
		}
	}
}

func (p *puppet) result(nr int) (uint64, error) {
	p.calls++
	ret, err := ptrace.PeekUser(p.pid, offRax)
	if err != nil {
		return 0, err
	}
	if int64(ret) < 0 && int64(ret) >= -4095 {
		return ret, syscall.Errno(-int64(ret))
	}
	return ret, nil
}

// offRax is offsetof(struct user_regs_struct, rax).
const offRax = 10 * 8

// queuef queues syscall nr, whose result nobody needs but its success,
// for runPending, which the caller must call before anything depends on
// it (the functions that queue end with it). Arguments put into the
// scratch area stay there until then. Errors name what.
func (p *puppet) queuef(what string, nr int, args ...uint64) error {
	return p.queue(pendingCall{what: what, nr: nr}, args)
}

// queueIgnore is queuef for a call whose failure does not matter.
func (p *puppet) queueIgnore(nr int, args ...uint64) error {
	return p.queue(pendingCall{what: fmt.Sprintf("syscall %d", nr), nr: nr, mayFail: true}, args)
}

func (p *puppet) queue(c pendingCall, args []uint64) error {
	if len(args) > 6 {
		return fmt.Errorf("%s in task %d: %d arguments, at most 6", c.what, p.pid, len(args))
	}
	copy(c.args[:], args)
	if p.fds != nil {
		if c.hasExpect {
			p.fds.apply(c.nr, c.args, c.expect)
		} else if !p.fds.applyQueued(c.nr, c.args) {
			// It opens a file whose number nobody predicted: the
			// table is unknown from now on.
			p.fds = nil
		}
	}
	p.pending = append(p.pending, c)
	// A full table, or a scratch area half full: the callers put the
	// data of a call just before queueing it, so between calls is the
	// place to make room.
	if len(p.pending) == p.tr.maxCalls() || uint64(len(p.scratch)) > p.tr.scratchSize/2 {
		return p.runPending()
	}
	return nil
}

// openFd runs syscall nr, which returns a new fd at the lowest free number
// (openat, pidfd_open, pidfd_getfd; not F_DUPFD, whose lowest is above its
// argument), and returns that fd. When the fd table is known, the call is
// only queued, with the number it must return, which runPending checks.
func (p *puppet) openFd(what string, nr int, args ...uint64) (uint64, error) {
	if p.fds == nil {
		return p.callf(what, nr, args...)
	}
	fd := p.fds.lowestFree()
	return fd, p.queue(pendingCall{what: what, nr: nr, expect: fd, hasExpect: true}, args)
}

// runPending runs the queued calls in order as one batch; it stops at the
// first that fails and returns its error.
func (p *puppet) runPending() error {
	if err := p.startPending(); err != nil {
		return err
	}
	return p.finishPending()
}

// startedBatch is a batch that startPending set going and finishPending
// has not collected yet.
type startedBatch struct {
	pend  []pendingCall
	calls []ptrace.BatchCall
	err   error // of a call that ran at once (a single call)
	done  bool  // it ran at once
}

// startPending sets the queued calls going as one batch and returns
// without waiting: the tracer may start other puppets' batches (threads
// of the same process with their own slot, threadSlot) before it collects
// each with finishPending. A single queued call runs at once.
func (p *puppet) startPending() error {
	calls, pend, err := p.preparePending()
	if err != nil || calls == nil {
		return err
	}
	err = p.batch.Start(calls)
	p.scratch = p.scratch[:0]
	if err != nil {
		p.fds = nil
		return p.batchError(pend, err)
	}
	p.started = &startedBatch{pend: pend, calls: calls}
	return nil
}

// preparePending is startPending up to the Start of the batch: it returns
// the batch calls of the queued ones, pend, with the scratch data to
// write along (WriteWith), or no calls when there is nothing to start
// (p.started is then set: nothing queued, or a single call that ran at
// once).
func (p *puppet) preparePending() (calls []ptrace.BatchCall, pend []pendingCall, err error) {
	if p.started != nil {
		return nil, nil, fmt.Errorf("puppet %d: a batch is still running", p.pid)
	}
	if len(p.pending) == 0 {
		p.started = &startedBatch{done: true}
		return nil, nil, nil
	}
	if err := p.born(); err != nil {
		return nil, nil, err
	}
	pend = p.pending
	p.pending = nil
	if len(pend) == 1 {
		p.started = &startedBatch{done: true, err: p.runOne(pend[0])}
		return nil, nil, nil
	}
	if p.batch == nil {
		in := &ptrace.Injector{Tid: p.pid}
		// The code is in the trampoline since the first puppet
		// (startFirstPuppet).
		b, err := in.BatchOver(uintptr(p.tr.addr+batchCodeOff), uintptr(p.tr.scratch+p.tr.scratchSize), p.tr.maxCalls())
		if err != nil {
			return nil, nil, fmt.Errorf("prepare batch in puppet %d: %w", p.pid, err)
		}
		// One injection session for the puppet's life, adopted rather
		// than begun: a batch begun and ended per run costs eight more
		// ptrace calls (registers, mask and rseq saved and put back),
		// and nothing of a puppet's registers or mask needs to survive
		// its batches (endProc and finishProc set them).
		if err := in.Adopt(p.regs); err != nil {
			return nil, nil, fmt.Errorf("prepare batch in puppet %d: %w", p.pid, err)
		}
		p.batch = b
	}
	calls = make([]ptrace.BatchCall, len(pend))
	for i, c := range pend {
		calls[i].Nr = uintptr(c.nr)
		calls[i].MayFail = c.mayFail
		calls[i].NoResult = c.ret == nil && c.after == nil && !c.hasExpect
		for j, a := range c.args {
			calls[i].Args[j] = uintptr(a)
		}
	}
	p.atTrap = false
	// The calls' data goes in with the table: one process_vm_writev.
	if len(p.scratch) > 0 {
		p.batch.WriteWith(uintptr(p.tr.scratch), p.scratch)
	}
	return calls, pend, nil
}

// startPendingAll is startPending of every puppet of ths, threads of one
// process each with its own slot of the trampoline (threadSlot): every
// batch table goes in with one write, and every thread is set going once
// all are ready (ptrace.StartAll). The puppets whose batch started
// (p.started set) need finishPending, also when it fails.
func startPendingAll(ths []*puppet) error {
	var bs []*ptrace.Batch
	var calls [][]ptrace.BatchCall
	var pends [][]pendingCall
	var ps []*puppet
	var first error
	for _, p := range ths {
		c, pend, err := p.preparePending()
		if err != nil {
			first = err
			break
		}
		if c == nil {
			continue
		}
		bs, calls, pends, ps = append(bs, p.batch), append(calls, c), append(pends, pend), append(ps, p)
	}
	if first != nil {
		// Nothing was written for the prepared ones: they start
		// nothing, and their calls are dropped with the restore.
		for _, p := range ps {
			p.scratch, p.fds = p.scratch[:0], nil
			p.batch.WriteWith(0, nil)
		}
		return first
	}
	n, err := ptrace.StartAll(bs, calls)
	for i, p := range ps {
		p.scratch = p.scratch[:0]
		if i < n {
			p.started = &startedBatch{pend: pends[i], calls: calls[i]}
			continue
		}
		p.fds = nil
		if i == n && err != nil {
			err = p.batchError(pends[i], err)
		}
	}
	return err
}

// batchError is err, a failure of the batch of pend as a whole (not of
// one of its calls), named by the batch's first call.
func (p *puppet) batchError(pend []pendingCall, err error) error {
	return fmt.Errorf("%s (and %d more calls) in task %d: %w", pend[0].what, len(pend)-1, p.pid, err)
}

// finishPending waits for the batch of startPending and returns what
// runPending would.
func (p *puppet) finishPending() error {
	sb := p.started
	if sb == nil {
		return fmt.Errorf("puppet %d: no batch started", p.pid)
	}
	p.started = nil
	if sb.done {
		return sb.err
	}
	pend, calls := sb.pend, sb.calls
	err := p.batch.Finish()
	p.atTrap = err == nil
	var herr error
	for i, c := range calls {
		if !c.Ran {
			continue
		}
		p.calls++
		if pend[i].ret != nil {
			*pend[i].ret = uint64(c.Ret)
		}
		// Every call that ran, also before a failure: a created
		// task must be known (Kill).
		if pend[i].after != nil {
			if e := pend[i].after(uint64(c.Ret), c.Errno()); e != nil && herr == nil {
				herr = e
			}
		}
	}
	if herr != nil {
		p.fds = nil
		return herr
	}
	var be *ptrace.BatchError
	if errors.As(err, &be) {
		p.fds = nil
		return fmt.Errorf("%s in task %d: %w", pend[be.Index].what, p.pid, be.Errno)
	}
	if err != nil {
		p.fds = nil
		return p.batchError(pend, err)
	}
	for i, c := range calls {
		if pend[i].hasExpect && uint64(c.Ret) != pend[i].expect {
			p.fds = nil
			return fmt.Errorf("%s in task %d: got fd %d, expected %d (crtools' view of the fd table is wrong)", pend[i].what, p.pid, c.Ret, pend[i].expect)
		}
	}
	return nil
}

// runOne runs a single queued call with call, which costs fewer ptrace
// calls than a batch of one.
func (p *puppet) runOne(c pendingCall) error {
	// The fd table already counts this call's effect.
	fds := p.fds
	p.fds = nil
	ret, err := p.callf(c.what, c.nr, c.args[:]...)
	p.fds = fds
	if c.ret != nil {
		*c.ret = ret
	}
	if c.after != nil {
		var errno error
		if e := new(syscall.Errno); errors.As(err, e) {
			errno = *e
		} else if err != nil {
			return err // no result: the call did not run
		}
		if herr := c.after(ret, errno); herr != nil {
			return herr
		}
	}
	if err != nil && c.mayFail {
		return nil
	}
	if err == nil && c.hasExpect && ret != c.expect {
		p.fds = nil
		return fmt.Errorf("%s in task %d: got fd %d, expected %d (crtools' view of the fd table is wrong)", c.what, p.pid, ret, c.expect)
	}
	if err != nil {
		p.fds = nil
	}
	return err
}

// callf is call with the error wrapped with the syscall's name.
func (p *puppet) callf(what string, nr int, args ...uint64) (uint64, error) {
	ret, err := p.call(nr, args...)
	if err != nil {
		return ret, fmt.Errorf("%s in task %d: %w", what, p.pid, err)
	}
	return ret, nil
}

// isErrno tells whether err wraps the errno e.
func isErrno(err error, e syscall.Errno) bool {
	return errors.Is(err, e)
}
