package dump

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/proc"
	"github.com/crtools/crtools/engine/ptrace"
)

// prctl options used as getters (linux/prctl.h).
const (
	prGetPdeathsig      = 2
	prGetDumpable       = 3
	prGetSecurebits     = 27
	prGetChildSubreaper = 37
	prGetTidAddress     = 40
	prGetTHPDisable     = 42
)

// injected is what only injected syscalls can tell about a task.
type injected struct {
	sigactions  map[int]*pb.SaEntry // signal -> handler, for non-default ones
	itimers     [3][4]uint64        // per ITIMER_*: interval sec/usec, value sec/usec
	posix       []*pb.PosixTimerEntry
	securebits  uint32
	dumpable    int32
	subreaper   bool
	thpDisabled bool
	perThread   map[int]*injectedThread
}

type injectedThread struct {
	sas          *pb.ThreadSasEntry
	clearTidAddr uint64
	pdeathSig    uint32
}

// query is one getter syscall of injectAll: outArg is the index of
// the argument that points at its out-buffer (outSize bytes, at most
// queryOut), or -1; done takes the result (err is the call's errno).
type query struct {
	nr      uintptr
	args    [6]uintptr
	outArg  int
	outSize int
	done    func(ret uintptr, out []byte, err error) error
}

// queryOut is the out-buffer room of each query (the largest out-argument:
// struct sigaction, itimerval, itimerspec).
const queryOut = 32

// injectQueries runs the getters that have no /proc or ptrace interface
// in a task that ignores SIGTRAP (injectAll runs every other task's as
// batches, whose int3 such a task would reset): one at a time, each
// thread's in its own context. Every register and the signal mask of
// every thread are put back (ptrace.Injector Begin/End).
//
// Signals that arrive during injections are held back by the injector;
// they are kept in thread.deferred and queued again when the task is let go.
//
// leader is t's injector (ptrace.NewInjectorAt).
//
// Preconditions: on the tracer thread; every thread of t is ptrace-stopped.
func injectQueries(t *task, leader *ptrace.Injector, status *proc.Status, timers []proc.PosixTimer) (res *injected, err error) {
	res = &injected{sigactions: map[int]*pb.SaEntry{}, perThread: map[int]*injectedThread{}}
	// No PTRACE_O_EXITKILL at dump: a crtools killed mid-dump must leave
	// the tree alive, running or stopped by job control as it was. Every
	// task's injections end settled (threads inherit this through
	// ForThread): a dying tracer leaves a PTRACE_SINGLESTEP's step flag
	// set and the task would die of SIGTRAP at its next instruction (see
	// ptrace.Injector.SettleAtEnd), a group-stopped one once continued.
	// The settle costs a group-stopped task no run of its own: it goes
	// from the PTRACE_EVENT_STOP back into its group-stop when let go
	// (TestIssue4Tree, TestDumpCrashKeepsStoppedTask). Here, with
	// syscall-stops and no step, it is never needed; set all the same.
	leader.SettleAtEnd = true
	if err := leader.Begin(); err != nil {
		return nil, fmt.Errorf("begin injection into pid %d: %w", t.pid, err)
	}
	defer func() {
		if eerr := leader.End(); eerr != nil && err == nil {
			err = fmt.Errorf("put registers of pid %d back: %w", t.pid, eerr)
		}
		t.threads[0].deferred = append(t.threads[0].deferred, leader.Deferred...)
	}()
	procQs := processQueries(t, status, timers, res)
	threadQs := make([][]query, len(t.threads))
	for i, th := range t.threads {
		threadQs[i] = threadQueries(th.tid, res)
	}
	if len(threadQs) > 0 {
		// The leader's own getters run with the process-wide ones.
		procQs = append(procQs, threadQs[0]...)
	}
	return res, injectOneByOne(t, leader, procQs, threadQs)
}

// injectOneByOne runs the queries as single injections (tasks that ignore
// SIGTRAP), with one scratch page for the out-arguments.
func injectOneByOne(t *task, leader *ptrace.Injector, procQs []query, threadQs [][]query) (err error) {
	cleanup, err := leader.WithScratch(4096)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := cleanup(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	run := func(in *ptrace.Injector, qs []query) error {
		buf := make([]byte, queryOut)
		for _, q := range qs {
			args := q.args
			if q.outArg >= 0 {
				args[q.outArg] = leader.Scratch
			}
			ret, serr := in.Syscall(q.nr, args[:]...)
			var errno unix.Errno
			if serr != nil && !errors.As(serr, &errno) {
				return fmt.Errorf("inject %s into thread %d: %w", ptrace.SyscallName(int(q.nr)), in.Tid, serr)
			}
			var qerr error
			if errno != 0 {
				qerr = errno
			}
			if q.outSize > 0 && qerr == nil {
				if _, err := ptrace.ReadMem(in.Tid, leader.Scratch, buf[:q.outSize]); err != nil {
					return fmt.Errorf("read injected result from thread %d: %w", in.Tid, err)
				}
			}
			if err := q.done(ret, buf[:q.outSize], qerr); err != nil {
				return err
			}
		}
		return nil
	}
	if err := run(leader, procQs); err != nil {
		return err
	}
	for i, th := range t.threads {
		if i == 0 {
			continue
		}
		in := leader.ForThread(th.tid)
		if err := in.Begin(); err != nil {
			return fmt.Errorf("begin injection into thread %d: %w", th.tid, err)
		}
		qerr := run(in, threadQs[i])
		if eerr := in.End(); eerr != nil && qerr == nil {
			qerr = fmt.Errorf("put registers of thread %d back: %w", th.tid, eerr)
		}
		th.deferred = append(th.deferred, in.Deferred...)
		if qerr != nil {
			return qerr
		}
	}
	return nil
}

// processQueries are the process-wide getters of t; their results go
// into res.
func processQueries(t *task, status *proc.Status, timers []proc.PosixTimer, res *injected) []query {
	le := binary.LittleEndian
	var qs []query
	// Signal handlers. Only signals that are caught (SigCgt) or ignored
	// (SigIgn) need asking: every other one is SIG_DFL, and a restored
	// task starts with SIG_DFL everywhere. (A SIG_DFL handler installed
	// with flags or a mask is the one thing lost; those flags have no
	// effect while the handler is SIG_DFL.)
	for sig := 1; sig <= 64; sig++ {
		bit := uint64(1) << (sig - 1)
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) || (status.SigCgt|status.SigIgn)&bit == 0 {
			continue
		}
		qs = append(qs, query{nr: unix.SYS_RT_SIGACTION, args: [6]uintptr{uintptr(sig), 0, 0, 8}, outArg: 2, outSize: 32,
			done: func(_ uintptr, b []byte, err error) error {
				if err != nil {
					return fmt.Errorf("read handler of signal %d of pid %d: %w", sig, t.pid, err)
				}
				res.sigactions[sig] = &pb.SaEntry{
					Sigaction: proto.Uint64(le.Uint64(b[0:])),
					Flags:     proto.Uint64(le.Uint64(b[8:])),
					Restorer:  proto.Uint64(le.Uint64(b[16:])),
					Mask:      proto.Uint64(le.Uint64(b[24:])),
				}
				return nil
			}})
	}

	// Interval timers: ITIMER_REAL, VIRTUAL, PROF.
	for which := 0; which < 3; which++ {
		qs = append(qs, query{nr: unix.SYS_GETITIMER, args: [6]uintptr{uintptr(which)}, outArg: 1, outSize: 32,
			done: func(_ uintptr, b []byte, err error) error {
				if err != nil {
					return fmt.Errorf("read itimer %d of pid %d: %w", which, t.pid, err)
				}
				for i := 0; i < 4; i++ {
					res.itimers[which][i] = le.Uint64(b[i*8:])
				}
				return nil
			}})
	}

	// POSIX timers: the list comes from /proc/PID/timers, the values
	// only from the task itself.
	for _, pt := range timers {
		e := &pb.PosixTimerEntry{
			ItId: proto.Uint32(uint32(pt.ID)), ClockId: proto.Uint32(uint32(pt.ClockID)),
			SiSigno: proto.Uint32(uint32(pt.Signo)), ItSigevNotify: proto.Uint32(uint32(pt.Notify)),
			SivalPtr: proto.Uint64(pt.SivalPtr),
		}
		if pt.Notify == proc.SigevThreadID {
			e.NotifyThreadId = proto.Int32(int32(pt.NotifyID))
		}
		res.posix = append(res.posix, e)
		qs = append(qs, query{nr: unix.SYS_TIMER_GETTIME, args: [6]uintptr{uintptr(pt.ID)}, outArg: 1, outSize: 32,
			done: func(_ uintptr, b []byte, err error) error {
				if err != nil {
					return fmt.Errorf("read POSIX timer %d of pid %d: %w", pt.ID, t.pid, err)
				}
				e.Isec, e.Insec = proto.Uint64(le.Uint64(b[0:])), proto.Uint64(le.Uint64(b[8:]))
				e.Vsec, e.Vnsec = proto.Uint64(le.Uint64(b[16:])), proto.Uint64(le.Uint64(b[24:]))
				return nil
			}}, query{nr: unix.SYS_TIMER_GETOVERRUN, args: [6]uintptr{uintptr(pt.ID)}, outArg: -1,
			done: func(over uintptr, _ []byte, err error) error {
				if err != nil {
					return fmt.Errorf("read overrun of POSIX timer %d of pid %d: %w", pt.ID, t.pid, err)
				}
				e.Overrun = proto.Uint32(uint32(over))
				return nil
			}})
	}

	// Process-wide prctl getters; most return their value directly.
	direct := func(opt uintptr, what string, set func(uintptr)) query {
		return query{nr: unix.SYS_PRCTL, args: [6]uintptr{opt}, outArg: -1,
			done: func(v uintptr, _ []byte, err error) error {
				if err != nil {
					return fmt.Errorf("read %s of pid %d: %w", what, t.pid, err)
				}
				set(v)
				return nil
			}}
	}
	qs = append(qs,
		direct(prGetSecurebits, "securebits", func(v uintptr) { res.securebits = uint32(v) }),
		direct(prGetDumpable, "dumpable", func(v uintptr) { res.dumpable = int32(v) }),
		direct(prGetTHPDisable, "THP-disable", func(v uintptr) { res.thpDisabled = v != 0 }),
		query{nr: unix.SYS_PRCTL, args: [6]uintptr{prGetChildSubreaper}, outArg: 1, outSize: 4,
			done: func(_ uintptr, b []byte, err error) error {
				if err != nil {
					return fmt.Errorf("read child-subreaper of pid %d: %w", t.pid, err)
				}
				res.subreaper = le.Uint32(b) != 0
				return nil
			}})
	return qs
}

// threadQueries are the getters of thread tid, asked in its own context.
func threadQueries(tid int, res *injected) []query {
	le := binary.LittleEndian
	it := &injectedThread{}
	res.perThread[tid] = it
	return []query{
		{nr: unix.SYS_SIGALTSTACK, outArg: 1, outSize: 24,
			done: func(_ uintptr, b []byte, err error) error {
				if err != nil {
					return fmt.Errorf("read sigaltstack of thread %d: %w", tid, err)
				}
				// stack_t: ss_sp, ss_flags (int, padded), ss_size.
				it.sas = &pb.ThreadSasEntry{SsSp: proto.Uint64(le.Uint64(b[0:])), SsFlags: proto.Uint32(le.Uint32(b[8:])),
					SsSize: proto.Uint64(le.Uint64(b[16:]))}
				return nil
			}},
		{nr: unix.SYS_PRCTL, args: [6]uintptr{prGetTidAddress}, outArg: 1, outSize: 8,
			done: func(_ uintptr, b []byte, err error) error {
				if errors.Is(err, unix.EINVAL) {
					return nil // kernels without CONFIG_CHECKPOINT_RESTORE
				}
				if err != nil {
					return fmt.Errorf("read clear_child_tid of thread %d: %w", tid, err)
				}
				it.clearTidAddr = le.Uint64(b)
				return nil
			}},
		{nr: unix.SYS_PRCTL, args: [6]uintptr{prGetPdeathsig}, outArg: 1, outSize: 4,
			done: func(_ uintptr, b []byte, err error) error {
				if err != nil {
					return fmt.Errorf("read parent-death signal of thread %d: %w", tid, err)
				}
				it.pdeathSig = le.Uint32(b)
				return nil
			}},
	}
}

// injectJob is the getters of one task for injectAll.
type injectJob struct {
	t                  *task
	status             *proc.Status
	timers             []proc.PosixTimer
	vdsoStart, vdsoEnd uintptr
	// regs are the threads' registers, masks and rseq just read
	// (collecting.readRegs), threads[0] first: the injections begin
	// from them without reading them again.
	regs []threadRegs
	res  *injected // the results, once err is nil at the end
	err  error

	leader   *ptrace.Injector
	batch    *ptrace.Batch
	procQs   []query
	threadQs [][]query
	calls    []ptrace.BatchCall // of the leader's batch
	// Per thread but the leader (index i-1 for threads[i]).
	ths      []*ptrace.Injector
	thBatch  []*ptrace.Batch
	thCalls  [][]ptrace.BatchCall
	thBegun  []bool // injection into the thread begun, End not yet started
	thRun    []bool // batch started, not finished
	thEnding []bool // StartEnd done, FinishEnd not
	// leader state
	begun, mapping, running, closing, ending bool
}

// injectAll runs the getters that have no /proc or ptrace interface in
// many tasks at once, each task's as batches (ptrace.Batch: one stop for
// the lot instead of a round trip per call): each step (map the
// batch memory, run the leader's getters, run every other thread's getters,
// unmap, settle) is started in every task before the tracer waits for the
// first, so the tasks run their part at the same time and a tree costs a
// few round trips of the tracer in all instead of a few per task and
// thread. A task that ignores SIGTRAP gets injectQueries (one call at a
// time). Each job's res or err is set; a job that fails is put back as it
// was (registers, mask, no batch memory) as far as possible, and the others
// carry on to the end.
//
// keepBatch (a dump whose tree will be killed: DumpOptions.KillAtFinish)
// leaves each task's batch memory mapped, recorded in its task for
// unmapBatches, which Resume and a Finish that lets the tree run call: the
// munmap is one more round trip of every task in the frozen window, for a
// mapping that dies with the task. Were crtools itself killed before the
// end of the dump, the tree would run on with that one small mapping more
// (code and table pages of the batch; no state of the task lives there).
// Preconditions: on the tracer thread; every thread of every task is
// ptrace-stopped.
func injectAll(jobs []*injectJob, keepBatch bool) {
	var live []*injectJob
	for _, j := range jobs {
		j.res = &injected{sigactions: map[int]*pb.SaEntry{}, perThread: map[int]*injectedThread{}}
		if len(j.t.threads) == 0 {
			// Not reached today: freeze seizes a live task's leader
			// first (threads[0]) and a zombie gets no job. Checked
			// because everything below takes threads[0] for the
			// leader, and a task without one would panic the dump.
			j.err = fmt.Errorf("inject getters into pid %d: no stopped thread of it to inject into", j.t.pid)
			continue
		}
		leader, err := ptrace.NewInjectorAt(j.t.kpid(), j.vdsoStart, j.vdsoEnd, j.status.SigIgn)
		if err != nil {
			j.err = err
			continue
		}
		if leader.IgnoresSIGTRAP() {
			j.res, j.err = injectQueries(j.t, leader, j.status, j.timers)
			continue
		}
		j.leader = leader
		// See injectQueries for why SettleAtEnd.
		leader.SettleAtEnd = true
		if err := j.begin(leader, 0); err != nil {
			j.err = fmt.Errorf("begin injection into pid %d: %w", j.t.pid, err)
			continue
		}
		j.begun = true
		j.procQs = processQueries(j.t, j.status, j.timers, j.res)
		j.threadQs = make([][]query, len(j.t.threads))
		for i, th := range j.t.threads {
			j.threadQs[i] = threadQueries(th.tid, j.res)
		}
		j.procQs = append(j.procQs, j.threadQs[0]...)
		// The leader's slot holds the process-wide getters, every other
		// thread's only its own few.
		most := 0
		for _, qs := range j.threadQs[1:] {
			most = max(most, len(qs))
		}
		first := ptrace.SlotSize{Calls: len(j.procQs), Scratch: len(j.procQs) * queryOut}
		rest := ptrace.SlotSize{Calls: most, Scratch: most * queryOut}
		if err := leader.StartNewBatchSized(first, rest, len(j.t.threads)); err != nil {
			j.fail(err)
			continue
		}
		j.mapping = true
		live = append(live, j)
	}
	// The batch memory is mapped; run the leader's getters (with the
	// process-wide ones).
	live = eachJob(live, func(j *injectJob) error {
		j.mapping = false
		b, err := j.leader.FinishNewBatch()
		if err != nil {
			return err
		}
		j.batch = b
		j.calls = queryCalls(b, j.procQs)
		if err := b.Start(j.calls); err != nil {
			return fmt.Errorf("inject getters into pid %d: %w", j.t.pid, err)
		}
		j.running = true
		return nil
	})
	// Every other thread's getters, all threads of all tasks at once, each
	// in its own slot of its process's batch memory.
	live = eachJob(live, func(j *injectJob) error {
		j.running = false
		if err := j.batch.Finish(); err != nil {
			return fmt.Errorf("inject getters into pid %d: %w", j.t.pid, err)
		}
		if err := queryResults(j.t.kpid(), j.batch, j.procQs, j.calls); err != nil {
			return err
		}
		n := len(j.t.threads) - 1
		j.ths, j.thBatch, j.thCalls = make([]*ptrace.Injector, n), make([]*ptrace.Batch, n), make([][]ptrace.BatchCall, n)
		j.thBegun, j.thRun, j.thEnding = make([]bool, n), make([]bool, n), make([]bool, n)
		if err := j.beginThreads(); err != nil {
			return err
		}
		for i := range j.t.threads[1:] {
			b, err := j.batch.Slot(i+1, j.ths[i])
			if err != nil {
				return err
			}
			j.thBatch[i] = b
			j.thCalls[i] = queryCalls(b, j.threadQs[i+1])
		}
		// Every table in one write, every thread pointed at its batch,
		// then all set going.
		started, err := ptrace.StartAll(j.thBatch, j.thCalls)
		for i := range started {
			j.thRun[i] = true
		}
		if err != nil {
			return fmt.Errorf("inject getters into the threads of pid %d: %w", j.t.pid, err)
		}
		return nil
	})
	// Their results; the threads settle.
	live = eachJob(live, func(j *injectJob) error {
		var first error
		// Every thread's batch waited for, then the results of all
		// in one read (ptrace.FinishAll).
		errs := ptrace.FinishAll(j.thBatch)
		for i, th := range j.t.threads[1:] {
			j.thRun[i] = false
			err := errs[i]
			if err != nil {
				err = fmt.Errorf("inject getters into thread %d: %w", th.tid, err)
			}
			j.thBegun[i] = false
			if eerr := j.ths[i].StartEnd(); eerr != nil && err == nil {
				err = fmt.Errorf("put registers of thread %d back: %w", th.tid, eerr)
			} else if eerr == nil {
				j.thEnding[i] = true
			}
			if first == nil {
				first = err
			}
		}
		if first != nil || len(j.thBatch) == 0 {
			return first
		}
		// The out-arguments of every thread's slot, in one read: the
		// slots follow each other in the batch memory.
		lo := j.thBatch[0].Scratch
		hi := j.thBatch[len(j.thBatch)-1].Scratch + uintptr(len(j.threadQs[len(j.threadQs)-1])*queryOut)
		mem := make([]byte, hi-lo)
		if _, err := ptrace.ReadMem(j.t.kpid(), lo, mem); err != nil {
			return fmt.Errorf("read injected results from pid %d: %w", j.t.pid, err)
		}
		for i, th := range j.t.threads[1:] {
			off := j.thBatch[i].Scratch - lo
			qs := j.threadQs[i+1]
			if err := queryDone(th.tid, qs, j.thCalls[i], mem[off:off+uintptr(len(qs)*queryOut)]); err != nil {
				return err
			}
		}
		return nil
	})
	// Threads settled; unmap the batch memory.
	live = eachJob(live, func(j *injectJob) error {
		var first error
		for i, th := range j.t.threads[1:] {
			j.thEnding[i] = false
			if err := j.ths[i].FinishEnd(); err != nil && first == nil {
				first = fmt.Errorf("put registers of thread %d back: %w", th.tid, err)
			}
			th.deferred = append(th.deferred, j.ths[i].Deferred...)
		}
		if first != nil {
			return first
		}
		if keepBatch {
			addr, size := j.batch.Leave()
			j.t.batch = leftBatch{addr: addr, syscall: j.leader.SyscallAddr, size: size}
			return nil
		}
		j.closing = true
		if err := j.batch.StartClose(); err != nil {
			j.closing = false
			return err
		}
		return nil
	})
	// Unmapped (or left); the leaders settle.
	live = eachJob(live, func(j *injectJob) error {
		if j.closing {
			j.closing = false
			if err := j.batch.FinishClose(); err != nil {
				return err
			}
		}
		j.begun = false
		if err := j.leader.StartEnd(); err != nil {
			return fmt.Errorf("put registers of pid %d back: %w", j.t.pid, err)
		}
		j.ending = true
		return nil
	})
	eachJob(live, func(j *injectJob) error {
		j.ending = false
		err := j.leader.FinishEnd()
		j.t.threads[0].deferred = append(j.t.threads[0].deferred, j.leader.Deferred...)
		if err != nil {
			return fmt.Errorf("put registers of pid %d back: %w", j.t.pid, err)
		}
		return nil
	})
	for _, j := range jobs {
		if j.err != nil {
			j.res = nil
		}
	}
}

// begin begins the injection into thread i of the job's task, from the
// registers read just before when there are (Begin otherwise).
func (j *injectJob) begin(in *ptrace.Injector, i int) error {
	if i < len(j.regs) {
		r := &j.regs[i]
		return in.BeginWith(r.regs, r.sigmask, r.rseq)
	}
	return in.Begin()
}

// beginThreads begins the injection into every thread of the job's task
// but the leader (j.ths), from the registers read just before
// (ptrace.BeginAllWith: their rseq_cs words in one read), or one by one
// with Begin when there are none.
func (j *injectJob) beginThreads() error {
	ths := j.t.threads[1:]
	for i, th := range ths {
		j.ths[i] = j.leader.ForThread(th.tid)
	}
	if len(j.regs) < len(j.t.threads) {
		for i, th := range ths {
			if err := j.ths[i].Begin(); err != nil {
				return fmt.Errorf("begin injection into thread %d: %w", th.tid, err)
			}
			j.thBegun[i] = true
		}
		return nil
	}
	regs, masks, rseqs := make([]ptrace.Regs, len(ths)), make([]uint64, len(ths)), make([]ptrace.RseqConfig, len(ths))
	for i := range ths {
		r := &j.regs[i+1]
		regs[i], masks[i], rseqs[i] = r.regs, r.sigmask, r.rseq
	}
	n, err := ptrace.BeginAllWith(j.ths, regs, masks, rseqs)
	for i := range n {
		j.thBegun[i] = true
	}
	if err != nil {
		return fmt.Errorf("begin injection into the threads of pid %d: %w", j.t.pid, err)
	}
	return nil
}

// eachJob runs step on every job and returns those that are still fine;
// a job whose step fails is put back (fail).
func eachJob(jobs []*injectJob, step func(*injectJob) error) []*injectJob {
	out := jobs[:0]
	for _, j := range jobs {
		if err := step(j); err != nil {
			j.fail(err)
			continue
		}
		out = append(out, j)
	}
	return out
}

// fail records err and puts the task back as well as it can, one call at
// a time: waits for whatever it had started, ends the threads' injections,
// unmaps the batch memory and ends the leader's injection.
func (j *injectJob) fail(err error) {
	j.err = err
	var errs []error
	for i := range j.ths {
		in := j.ths[i]
		if j.thRun[i] {
			_ = j.thBatch[i].Finish()
			j.thRun[i] = false
		}
		if j.thEnding[i] {
			errs = append(errs, in.FinishEnd())
			j.thEnding[i] = false
		} else if j.thBegun[i] {
			errs = append(errs, in.End())
			j.thBegun[i] = false
		}
		j.t.threads[i+1].deferred = append(j.t.threads[i+1].deferred, in.Deferred...)
	}
	if j.leader != nil {
		if j.mapping {
			if b, err := j.leader.FinishNewBatch(); err == nil {
				j.batch = b
			}
			j.mapping = false
		}
		if j.running {
			_ = j.batch.Finish()
			j.running = false
		}
		if j.closing {
			errs = append(errs, j.batch.FinishClose())
			j.closing = false
		} else if j.batch != nil && j.begun {
			errs = append(errs, j.batch.Close())
		}
		if j.ending {
			errs = append(errs, j.leader.FinishEnd())
			j.ending = false
		} else if j.begun {
			errs = append(errs, j.leader.End())
			j.begun = false
		}
		j.t.threads[0].deferred = append(j.t.threads[0].deferred, j.leader.Deferred...)
		j.leader.Deferred = nil
	}
	if cerr := errors.Join(errs...); cerr != nil {
		j.err = fmt.Errorf("%w (and putting pid %d back: %v)", err, j.t.pid, cerr)
	}
}

// queryCalls are the batch calls of qs, their out-arguments in b's scratch.
func queryCalls(b *ptrace.Batch, qs []query) []ptrace.BatchCall {
	calls := make([]ptrace.BatchCall, len(qs))
	for i, q := range qs {
		calls[i] = ptrace.BatchCall{Nr: q.nr, Args: q.args, MayFail: true}
		if q.outArg >= 0 {
			calls[i].Args[q.outArg] = b.Scratch + uintptr(i*queryOut)
		}
	}
	return calls
}

// queryResults reads the out-arguments of the batch calls of qs, which
// ran in tid, and hands each query its result.
func queryResults(tid int, b *ptrace.Batch, qs []query, calls []ptrace.BatchCall) error {
	if len(qs) == 0 {
		return nil
	}
	out := make([]byte, len(qs)*queryOut)
	if _, err := ptrace.ReadMem(tid, b.Scratch, out); err != nil {
		return fmt.Errorf("read injected results from thread %d: %w", tid, err)
	}
	return queryDone(tid, qs, calls, out)
}

// queryDone hands each query of qs, run in tid as calls, its result; out
// holds their out-arguments (queryOut bytes each).
func queryDone(tid int, qs []query, calls []ptrace.BatchCall, out []byte) error {
	for i, q := range qs {
		if !calls[i].Ran {
			return fmt.Errorf("inject getters into thread %d: call %d (%s) did not run", tid, i, ptrace.SyscallName(int(q.nr)))
		}
		var qerr error
		if e := calls[i].Errno(); e != nil {
			qerr = e
		}
		o := out[i*queryOut : i*queryOut+q.outSize]
		if err := q.done(calls[i].Ret, o, qerr); err != nil {
			return err
		}
	}
	return nil
}
