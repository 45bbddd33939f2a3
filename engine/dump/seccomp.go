package dump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/ptrace"
)

// Seccomp. A thread is in one of three seccomp modes (/proc status
// "Seccomp:"): none, strict (1: read, write, exit and sigreturn only) or
// filter (2: a chain of classic-BPF programs, each installed on top of
// the ones before; fork and clone copy the chain, SECCOMP_FILTER_FLAG_TSYNC
// gives the caller's chain to every thread of its process).
//
// Dump, on the tracer thread before any injection (readSeccomp): the
// filters of every thread in filter mode (PTRACE_SECCOMP_GET_FILTER, the
// oldest first) and the flags the kernel keeps with each
// (PTRACE_SECCOMP_GET_METADATA: SECCOMP_FILTER_FLAG_LOG). A filter that can
// hand a system call to a user-space listener (SECCOMP_RET_USER_NOTIF, or
// an action computed at run time, BPF_RET|BPF_A, which might be that) is
// refused: the listener is a file of some supervisor, which a restore
// cannot reconnect. Then every thread under seccomp gets
// PTRACE_O_SUSPEND_SECCOMP: the calls the collect step injects (and the
// kill's) run without its filters or strict mode, which could fail them
// or kill the thread. The kernel clears the option with the rest of the
// ptrace state when crtools detaches (or dies), so a tree dumped with -R
// or -s runs under its filters again.
//
// Images, as CRIU 4's (seccomp.img, a single seccomp_entry): each thread
// core's seccomp_mode, and for filter mode seccomp_filter, the index of
// the thread's oldest filter in seccomp_entry.seccomp_filters; each
// filter's prev is the index of the next newer one (none for the newest),
// and flags holds its SECCOMP_FILTER_FLAG_*. A chain is written once
// however many threads have it (threads of other processes forked with
// it share its entries). When every thread of a process has the same
// chain (installed with TSYNC, or before the threads were cloned), the
// chain is written with SECCOMP_FILTER_FLAG_TSYNC on each filter for the
// leader only, and the other threads' cores say no seccomp: installing it
// with TSYNC gives the chain to all threads as one chain again (a later
// TSYNC of the restored program needs that), and CRIU restores such
// images in the same way. Threads whose chains differ get each their own
// chain (a part they shared becomes a copy in each).
const (
	seccompRetActionFull = 0xffff0000 // SECCOMP_RET_ACTION_FULL
	seccompRetUserNotif  = 0x7fc00000 // SECCOMP_RET_USER_NOTIF

	// Classic BPF: instruction class and the return value's source.
	bpfClassMask = 0x07
	bpfRet       = 0x06
	bpfRvalMask  = 0x18
	bpfRvalA     = 0x10
)

// seccompFilter is one installed filter: its program (struct sock_filter
// instructions) and its SECCOMP_FILTER_FLAG_*.
type seccompFilter struct {
	prog  []byte
	flags uint32
}

// threadSeccomp is a thread's seccomp state.
type threadSeccomp struct {
	mode    uint32
	filters []seccompFilter // the oldest first; filter mode only
}

// readSeccomp reads the seccomp state of every thread of c from its status
// (read before) and the kernel's copy of its filters, and refuses filters
// a restore cannot give back; then it suspends seccomp in every thread
// under it for the injections (see above).
// Preconditions: on the tracer thread; every thread of c is stopped and
// c.ts.statuses holds each one's status.
func (c *collecting) readSeccomp() error {
	t := c.ts.t
	if len(c.ts.statuses) != len(t.threads) {
		return fmt.Errorf("pid %d: %d thread statuses for %d threads", t.pid, len(c.ts.statuses), len(t.threads))
	}
	under := false
	for i := range t.threads {
		if c.ts.statuses[i].Seccomp != 0 {
			under = true
		}
	}
	if !under {
		return nil
	}
	c.seccomp = make([]threadSeccomp, len(t.threads))
	for i, th := range t.threads {
		mode := c.ts.statuses[i].Seccomp
		c.seccomp[i].mode = mode
		switch mode {
		case 0, unix.SECCOMP_MODE_STRICT:
		case unix.SECCOMP_MODE_FILTER:
			fs, err := readFilters(t.pid, th.tid)
			if err != nil {
				return err
			}
			c.seccomp[i].filters = fs
		default:
			return fmt.Errorf("pid %d: thread %d is in seccomp mode %d, which crtools does not know", t.pid, th.tid, mode)
		}
	}
	for i, th := range t.threads {
		if c.seccomp[i].mode == 0 {
			continue
		}
		if err := ptrace.SetOptions(th.tid, unix.PTRACE_O_SUSPEND_SECCOMP); err != nil {
			return fmt.Errorf("pid %d: suspend the seccomp filters of thread %d while crtools runs calls in it (PTRACE_O_SUSPEND_SECCOMP): %w; this needs CAP_SYS_ADMIN, and crtools must not run under seccomp itself",
				t.pid, th.tid, err)
		}
	}
	return nil
}

// readFilters reads the filters of thread tid of pid, the oldest first,
// with their flags, and checks each (checkFilter).
func readFilters(pid, tid int) ([]seccompFilter, error) {
	progs, err := ptrace.SeccompFilters(tid)
	if err != nil {
		why := ""
		if errors.Is(err, unix.EACCES) {
			why = " (reading filters needs CAP_SYS_ADMIN, and crtools must not run under seccomp itself)"
		}
		return nil, fmt.Errorf("pid %d: read the seccomp filters of thread %d: %w%s", pid, tid, err, why)
	}
	if len(progs) == 0 {
		return nil, fmt.Errorf("pid %d: thread %d is in seccomp filter mode but the kernel shows no filter", pid, tid)
	}
	out := make([]seccompFilter, len(progs))
	for i, prog := range progs {
		if err := checkFilter(prog); err != nil {
			return nil, fmt.Errorf("pid %d: seccomp filter %d of thread %d (of %d, the oldest first) %w; seccomp filters that hand system calls to a user-space listener (a supervisor's notification fd, SECCOMP_FILTER_FLAG_NEW_LISTENER) cannot be restored and are not supported",
				pid, i, tid, len(progs), err)
		}
		flags, err := ptrace.SeccompFilterFlags(tid, i)
		if err != nil {
			return nil, fmt.Errorf("pid %d: read the flags of seccomp filter %d of thread %d: %w", pid, i, tid, err)
		}
		out[i] = seccompFilter{prog: prog, flags: uint32(flags)}
	}
	return out, nil
}

// checkFilter refuses a program that may return SECCOMP_RET_USER_NOTIF:
// one that returns it as a constant, or returns the accumulator (an
// action computed at run time).
func checkFilter(prog []byte) error {
	if len(prog)%8 != 0 {
		return fmt.Errorf("is %d bytes, not whole BPF instructions", len(prog))
	}
	for off := 0; off < len(prog); off += 8 {
		code := binary.LittleEndian.Uint16(prog[off:])
		if code&bpfClassMask != bpfRet {
			continue
		}
		if code&bpfRvalMask == bpfRvalA {
			return fmt.Errorf("returns an action computed at run time (instruction %d: BPF_RET|BPF_A), which may be SECCOMP_RET_USER_NOTIF", off/8)
		}
		if k := binary.LittleEndian.Uint32(prog[off+4:]); k&seccompRetActionFull == seccompRetUserNotif {
			return fmt.Errorf("returns SECCOMP_RET_USER_NOTIF (instruction %d)", off/8)
		}
	}
	return nil
}

// seccompImage is seccomp.img in the making.
type seccompImage struct {
	entries []*pb.SeccompFilter
	byChain map[string]uint32 // a chain's key → the index of its oldest filter
}

// setThreads sets the seccomp fields of the thread cores of a process
// (cores[i] is thread i's, th[i] its seccomp state; th nil: none is under
// seccomp), adding their chains to si.
func (si *seccompImage) setThreads(cores []*pb.CoreEntry, th []threadSeccomp) {
	if th == nil {
		return
	}
	if sharedChain(th) {
		chain := make([]seccompFilter, len(th[0].filters))
		for i, f := range th[0].filters {
			chain[i] = seccompFilter{prog: f.prog, flags: f.flags | unix.SECCOMP_FILTER_FLAG_TSYNC}
		}
		for i, c := range cores {
			tc := c.GetThreadCore()
			if i == 0 {
				tc.SeccompMode, tc.SeccompFilter = pb.SeccompMode_filter.Enum(), proto.Uint32(si.add(chain))
				continue
			}
			tc.SeccompMode, tc.SeccompFilter = pb.SeccompMode_disabled.Enum(), nil
		}
		return
	}
	for i, c := range cores {
		tc := c.GetThreadCore()
		tc.SeccompMode, tc.SeccompFilter = pb.SeccompMode(th[i].mode).Enum(), nil
		if th[i].mode == unix.SECCOMP_MODE_FILTER {
			tc.SeccompFilter = proto.Uint32(si.add(th[i].filters))
		}
	}
}

// sharedChain tells whether every thread is in filter mode with the same
// chain (programs and flags).
func sharedChain(th []threadSeccomp) bool {
	for _, t := range th {
		if t.mode != unix.SECCOMP_MODE_FILTER || !slices.EqualFunc(t.filters, th[0].filters, func(a, b seccompFilter) bool {
			return a.flags == b.flags && string(a.prog) == string(b.prog)
		}) {
			return false
		}
	}
	return true
}

// add adds chain (the oldest first) unless it is there already, and
// returns the index of its oldest filter. The entries are in CRIU's
// order: the newest first, each one's prev the entry before it.
func (si *seccompImage) add(chain []seccompFilter) uint32 {
	key := chainKey(chain)
	if i, ok := si.byChain[key]; ok {
		return i
	}
	for k := len(chain) - 1; k >= 0; k-- {
		e := &pb.SeccompFilter{Filter: chain[k].prog, Flags: proto.Uint32(chain[k].flags)}
		if k != len(chain)-1 {
			e.Prev = proto.Uint32(uint32(len(si.entries) - 1))
		}
		si.entries = append(si.entries, e)
	}
	i := uint32(len(si.entries) - 1)
	if si.byChain == nil {
		si.byChain = map[string]uint32{}
	}
	si.byChain[key] = i
	return i
}

// chainKey is a chain's programs and flags as one string.
func chainKey(chain []seccompFilter) string {
	var b []byte
	for _, f := range chain {
		b = binary.LittleEndian.AppendUint32(b, f.flags)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(f.prog)))
		b = append(b, f.prog...)
	}
	return string(b)
}
