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

// injectQueries runs the getters that have no /proc or ptrace interface.
// It maps one scratch page in the task for the syscalls' out-arguments and
// unmaps it before returning; every register and the signal mask of every
// thread are put back (ptrace.Injector Begin/End).
//
// Signals that arrive during injections are held back by the injector;
// they are kept in thread.deferred and queued again when the task is let go.
//
// Preconditions: on the tracer thread; every thread of t is ptrace-stopped.
func injectQueries(t *task, status *proc.Status, timers []proc.PosixTimer) (res *injected, err error) {
	res = &injected{sigactions: map[int]*pb.SaEntry{}, perThread: map[int]*injectedThread{}}
	leader, err := ptrace.NewInjector(t.pid)
	if err != nil {
		return nil, err
	}
	if err := leader.Begin(); err != nil {
		return nil, fmt.Errorf("begin injection into pid %d: %w", t.pid, err)
	}
	defer func() {
		if eerr := leader.End(); eerr != nil && err == nil {
			err = fmt.Errorf("put registers of pid %d back: %w", t.pid, eerr)
		}
		t.threads[0].deferred = append(t.threads[0].deferred, leader.Deferred...)
	}()
	cleanup, err := leader.WithScratch(4096)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := cleanup(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	scratch := leader.Scratch
	buf := make([]byte, 64)
	read := func(n int) ([]byte, error) {
		if _, err := ptrace.ReadMem(t.pid, scratch, buf[:n]); err != nil {
			return nil, fmt.Errorf("read injected result from pid %d: %w", t.pid, err)
		}
		return buf[:n], nil
	}
	le := binary.LittleEndian

	// Signal handlers. Only signals that are caught (SigCgt) or ignored
	// (SigIgn) need asking: every other one is SIG_DFL, and a restored
	// task starts with SIG_DFL everywhere, so asking for them would cost
	// 50-odd injections (tens of microseconds each) to learn nothing.
	// (A SIG_DFL handler installed with flags or a mask is the one thing
	// lost; those flags have no effect while the handler is SIG_DFL.)
	for sig := 1; sig <= 64; sig++ {
		bit := uint64(1) << (sig - 1)
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) || (status.SigCgt|status.SigIgn)&bit == 0 {
			continue
		}
		if _, err := leader.Syscall(unix.SYS_RT_SIGACTION, uintptr(sig), 0, scratch, 8); err != nil {
			return nil, fmt.Errorf("read handler of signal %d of pid %d: %w", sig, t.pid, err)
		}
		b, err := read(32)
		if err != nil {
			return nil, err
		}
		res.sigactions[sig] = &pb.SaEntry{
			Sigaction: proto.Uint64(le.Uint64(b[0:])),
			Flags:     proto.Uint64(le.Uint64(b[8:])),
			Restorer:  proto.Uint64(le.Uint64(b[16:])),
			Mask:      proto.Uint64(le.Uint64(b[24:])),
		}
	}

	// Interval timers: ITIMER_REAL, VIRTUAL, PROF.
	for which := 0; which < 3; which++ {
		if _, err := leader.Syscall(unix.SYS_GETITIMER, uintptr(which), scratch); err != nil {
			return nil, fmt.Errorf("read itimer %d of pid %d: %w", which, t.pid, err)
		}
		b, err := read(32)
		if err != nil {
			return nil, err
		}
		for i := 0; i < 4; i++ {
			res.itimers[which][i] = le.Uint64(b[i*8:])
		}
	}

	// POSIX timers: the list comes from /proc/PID/timers, the values
	// only from the task itself.
	for _, pt := range timers {
		if _, err := leader.Syscall(unix.SYS_TIMER_GETTIME, uintptr(pt.ID), scratch); err != nil {
			return nil, fmt.Errorf("read POSIX timer %d of pid %d: %w", pt.ID, t.pid, err)
		}
		b, err := read(32)
		if err != nil {
			return nil, err
		}
		over, err := leader.Syscall(unix.SYS_TIMER_GETOVERRUN, uintptr(pt.ID))
		if err != nil {
			return nil, fmt.Errorf("read overrun of POSIX timer %d of pid %d: %w", pt.ID, t.pid, err)
		}
		e := &pb.PosixTimerEntry{
			ItId: proto.Uint32(uint32(pt.ID)), ClockId: proto.Uint32(uint32(pt.ClockID)),
			SiSigno: proto.Uint32(uint32(pt.Signo)), ItSigevNotify: proto.Uint32(uint32(pt.Notify)),
			SivalPtr: proto.Uint64(pt.SivalPtr), Overrun: proto.Uint32(uint32(over)),
			Isec: proto.Uint64(le.Uint64(b[0:])), Insec: proto.Uint64(le.Uint64(b[8:])),
			Vsec: proto.Uint64(le.Uint64(b[16:])), Vnsec: proto.Uint64(le.Uint64(b[24:])),
		}
		if pt.Notify == proc.SigevThreadID {
			e.NotifyThreadId = proto.Int32(int32(pt.NotifyID))
		}
		res.posix = append(res.posix, e)
	}

	// Process-wide prctl getters that return their value directly.
	v, err := leader.Syscall(unix.SYS_PRCTL, prGetSecurebits)
	if err != nil {
		return nil, fmt.Errorf("read securebits of pid %d: %w", t.pid, err)
	}
	res.securebits = uint32(v)
	if v, err = leader.Syscall(unix.SYS_PRCTL, prGetDumpable); err != nil {
		return nil, fmt.Errorf("read dumpable of pid %d: %w", t.pid, err)
	}
	res.dumpable = int32(v)
	if v, err = leader.Syscall(unix.SYS_PRCTL, prGetTHPDisable); err != nil {
		return nil, fmt.Errorf("read THP-disable of pid %d: %w", t.pid, err)
	}
	res.thpDisabled = v != 0
	if _, err := leader.Syscall(unix.SYS_PRCTL, prGetChildSubreaper, scratch); err != nil {
		return nil, fmt.Errorf("read child-subreaper of pid %d: %w", t.pid, err)
	}
	b, err := read(4)
	if err != nil {
		return nil, err
	}
	res.subreaper = le.Uint32(b) != 0

	// Per-thread state, each thread asked in its own context.
	for _, th := range t.threads {
		in := leader
		if th.tid != t.pid {
			if in, err = ptrace.NewInjector(th.tid); err != nil {
				return nil, err
			}
			in.Scratch, in.ScratchSize = leader.Scratch, leader.ScratchSize
			if err := in.Begin(); err != nil {
				return nil, fmt.Errorf("begin injection into thread %d: %w", th.tid, err)
			}
		}
		it, qerr := threadQueries(in, th.tid, read)
		if in != leader {
			if eerr := in.End(); eerr != nil && qerr == nil {
				qerr = fmt.Errorf("put registers of thread %d back: %w", th.tid, eerr)
			}
			th.deferred = append(th.deferred, in.Deferred...)
		}
		if qerr != nil {
			return nil, qerr
		}
		res.perThread[th.tid] = it
	}
	return res, nil
}

func threadQueries(in *ptrace.Injector, tid int, read func(int) ([]byte, error)) (*injectedThread, error) {
	le := binary.LittleEndian
	it := &injectedThread{}
	if _, err := in.Syscall(unix.SYS_SIGALTSTACK, 0, in.Scratch); err != nil {
		return nil, fmt.Errorf("read sigaltstack of thread %d: %w", tid, err)
	}
	b, err := read(24)
	if err != nil {
		return nil, err
	}
	// stack_t: ss_sp, ss_flags (int, padded), ss_size.
	it.sas = &pb.ThreadSasEntry{SsSp: proto.Uint64(le.Uint64(b[0:])), SsFlags: proto.Uint32(le.Uint32(b[8:])),
		SsSize: proto.Uint64(le.Uint64(b[16:]))}
	if _, err := in.Syscall(unix.SYS_PRCTL, prGetTidAddress, in.Scratch); err != nil {
		if !errors.Is(err, unix.EINVAL) {
			return nil, fmt.Errorf("read clear_child_tid of thread %d: %w", tid, err)
		}
	} else {
		if b, err = read(8); err != nil {
			return nil, err
		}
		it.clearTidAddr = le.Uint64(b)
	}
	if _, err := in.Syscall(unix.SYS_PRCTL, prGetPdeathsig, in.Scratch); err != nil {
		return nil, fmt.Errorf("read parent-death signal of thread %d: %w", tid, err)
	}
	if b, err = read(4); err != nil {
		return nil, err
	}
	it.pdeathSig = le.Uint32(b)
	return it, nil
}
