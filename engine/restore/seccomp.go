package restore

import (
	"errors"
	"fmt"
	"io/fs"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
)

// Seccomp (engine/dump/seccomp.go describes the images). Every thread in
// filter mode installs its chain, the oldest filter first, each with its
// flags, by injected seccomp(SECCOMP_SET_MODE_FILTER); a thread in strict
// mode gets prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) after every filter
// of its process (a TSYNC install fails while another thread is strict).
// A chain with SECCOMP_FILTER_FLAG_TSYNC is installed first: it gives the
// chain to every thread of the process, as one chain.
//
// When: right before the credentials, after everything else an injected
// call does (files, memory, signals, heirs' forks, which must not inherit
// filters installed for the parent only). Every puppet of a tree with
// seccomp is traced with PTRACE_O_SUSPEND_SECCOMP (set on the first puppet,
// inherited by every clone with CLONE_PTRACE, given again by a lane's
// seize): the calls injected after the filters (credentials, the
// trampoline's munmap, a quiet SIGTRAP action) run without them, and the
// credentials may drop CAP_SYS_ADMIN afterwards, which installing a
// filter without no_new_privs needs (the puppet has it, as root; the
// dumped no_new_privs comes with the credentials). The kernel clears the
// option when Resume detaches the threads: from their first instruction
// of their own, the filters are in force.

const (
	// The flags a restore passes on: TSYNC, LOG, SPEC_ALLOW. The others
	// (NEW_LISTENER, TSYNC_ESRCH, WAIT_KILLABLE_RECV) are about a
	// listener, which crtools' dump refuses.
	seccompFlagsKnown = unix.SECCOMP_FILTER_FLAG_TSYNC | unix.SECCOMP_FILTER_FLAG_LOG | unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW
)

// seccompProg is one filter to install.
type seccompProg struct {
	prog  []byte // struct sock_filter instructions
	flags uint32
}

// threadSeccomp is what a thread gets: strict mode, or its filters (the
// oldest first).
type threadSeccomp struct {
	strict  bool
	filters []seccompProg
}

// tsync tells whether the chain is installed with TSYNC (for every thread
// of its process).
func (s *threadSeccomp) tsync() bool {
	for _, f := range s.filters {
		if f.flags&unix.SECCOMP_FILTER_FLAG_TSYNC != 0 {
			return true
		}
	}
	return false
}

// loadSeccomp reads seccomp.img, when there is one, and gives each task
// the seccomp state of its threads (taskImage.seccomp), checking every
// index and program before any task exists. It returns whether any thread
// is under seccomp.
func (img *imageSet) loadSeccomp(rd *imageReader) (bool, error) {
	var filters []*pb.SeccompFilter
	entries, err := rd.readFile(image.Seccomp, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return false, fmt.Errorf("read seccomp filters: %w", err)
	case len(entries) > 0:
		filters = entries[0].Msg.(*pb.SeccompEntry).GetSeccompFilters()
	}
	under := false
	for _, t := range img.tasks {
		if t.dead() {
			continue
		}
		if tc := t.core().GetTc(); tc.GetOldSeccompMode() != pb.SeccompMode_disabled {
			return false, fmt.Errorf("read core of task %d: seccomp mode in the task core (images of a CRIU before 2.8); not supported", t.pid)
		}
		for _, tid := range t.tids {
			s, err := threadSeccompOf(t.cores[tid].GetThreadCore(), filters)
			if err != nil {
				return false, fmt.Errorf("read core of task %d: thread %d: %w", t.pid, tid, err)
			}
			if s == nil {
				continue
			}
			if t.seccomp == nil {
				t.seccomp = map[int]*threadSeccomp{}
			}
			t.seccomp[tid] = s
			under = true
		}
	}
	return under, nil
}

// threadSeccompOf is the seccomp state a thread core gives, nil for none.
func threadSeccompOf(tc *pb.ThreadCoreEntry, filters []*pb.SeccompFilter) (*threadSeccomp, error) {
	switch tc.GetSeccompMode() {
	case pb.SeccompMode_disabled:
		return nil, nil
	case unix.SECCOMP_MODE_STRICT:
		return &threadSeccomp{strict: true}, nil
	case unix.SECCOMP_MODE_FILTER:
	default:
		return nil, fmt.Errorf("seccomp mode %d is unknown", tc.GetSeccompMode())
	}
	if tc.SeccompFilter == nil {
		return nil, fmt.Errorf("seccomp filter mode without a filter")
	}
	s := &threadSeccomp{}
	i := tc.GetSeccompFilter()
	for {
		if int(i) >= len(filters) {
			return nil, fmt.Errorf("seccomp filter %d is not in seccomp.img (%d filters)", i, len(filters))
		}
		if len(s.filters) == len(filters) {
			return nil, fmt.Errorf("the seccomp filters of seccomp.img form a loop")
		}
		f := filters[i]
		n := len(f.GetFilter())
		if n == 0 || n%8 != 0 || n/8 > unix.BPF_MAXINSNS {
			return nil, fmt.Errorf("seccomp filter %d is %d bytes, not 1 to %d BPF instructions", i, n, unix.BPF_MAXINSNS)
		}
		if f.GetFlags()&^seccompFlagsKnown != 0 {
			return nil, fmt.Errorf("seccomp filter %d has flags %#x; crtools installs filters with TSYNC, LOG and SPEC_ALLOW only", i, f.GetFlags())
		}
		s.filters = append(s.filters, seccompProg{prog: f.GetFilter(), flags: f.GetFlags()})
		if f.Prev == nil {
			return s, nil
		}
		i = f.GetPrev()
	}
}

// restoreSeccomp puts every thread of pr under its seccomp mode: TSYNC
// chains first, then the other threads' own chains, strict mode last.
// Preconditions: on the tracer thread; every puppet of pr is stopped,
// traced with PTRACE_O_SUSPEND_SECCOMP, with its credentials not yet
// restored; nothing is queued.
func (r *restorer) restoreSeccomp(pr *proc) error {
	t := pr.t
	if t.seccomp == nil {
		return nil
	}
	for _, pass := range []func(*threadSeccomp) bool{
		func(s *threadSeccomp) bool { return s.tsync() },
		func(s *threadSeccomp) bool { return !s.strict && !s.tsync() },
		func(s *threadSeccomp) bool { return s.strict },
	} {
		for _, th := range pr.threads {
			s := t.seccomp[th.vpid]
			if s == nil || !pass(s) {
				continue
			}
			if err := th.installSeccomp(s); err != nil {
				return err
			}
		}
	}
	return nil
}

// installSeccomp gives the thread p the seccomp state s.
func (p *puppet) installSeccomp(s *threadSeccomp) error {
	if s.strict {
		_, err := p.callf("enter seccomp strict mode", unix.SYS_PRCTL, unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_STRICT)
		return err
	}
	for i, f := range s.filters {
		prog, err := p.put(f.prog)
		if err != nil {
			return err
		}
		// struct sock_fprog: unsigned short len, then the pointer.
		fprog := make([]byte, 16)
		le.PutUint16(fprog, uint16(len(f.prog)/8))
		le.PutUint64(fprog[8:], prog)
		a, err := p.put(fprog)
		if err != nil {
			return err
		}
		what := fmt.Sprintf("install seccomp filter %d of %d (flags %#x)", i+1, len(s.filters), f.flags)
		ret, err := p.callf(what, unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, uint64(f.flags), a)
		if err != nil {
			return err
		}
		if ret != 0 {
			// With TSYNC, the thread that could not take the filter.
			return fmt.Errorf("%s in task %d: thread %d cannot take it", what, p.pid, ret)
		}
	}
	return nil
}
