package ptrace

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Injector runs system calls inside a ptrace-stopped task (see the package
// documentation for how). All its methods must run on the tracer thread
// that traces Tid, while Tid is in a ptrace-stop.
type Injector struct {
	Tid int
	// SyscallAddr is the address of a `syscall` instruction (0f 05) in the
	// task.
	SyscallAddr uintptr
	// Scratch is the start of memory in the task the injector may use for
	// syscall arguments (strings, structs); 0 if none. ScratchSize is its
	// size in bytes.
	Scratch     uintptr
	ScratchSize int
	scratchUsed int

	// Deferred lists the signals that arrived (signal-delivery-stops) during
	// injections and were held back so that no handler ran with injected
	// registers. The caller passes them on: Detach(tid, Deferred[0]) or
	// Cont(tid, sig).
	Deferred []int
	// Events lists the ptrace event stops seen during the last Syscall
	// (for example PTRACE_EVENT_CLONE of an injected clone3, whose Msg is
	// the new tid).
	Events []InjectEvent

	// syscallStops drives the syscall through two syscall-stops instead of
	// a single-step, for tasks that ignore SIGTRAP (see package doc).
	syscallStops bool

	// SettleAtEnd: End leaves the task in a PTRACE_EVENT_STOP (as
	// PTRACE_INTERRUPT does), reached with PTRACE_CONT, instead of the
	// SIGTRAP signal-delivery-stop of the last injection, reached with
	// PTRACE_SINGLESTEP (or the batch's int3). It is for a tracer that may
	// die without detaching (a dump has no PTRACE_O_EXITKILL: its tree
	// must survive a crtools killed mid-dump). On the tracer's death the
	// kernel detaches its tracees (exit_ptrace) but, unlike PTRACE_DETACH,
	// does not clear the single-step state a PTRACE_SINGLESTEP set (only
	// PTRACE_DETACH and a resume without stepping do): the task would
	// trap at the first instruction it runs, untraced, and die of that
	// SIGTRAP; a task stopped by job control does so once SIGCONT wakes
	// it (TestSettledTracerDeath). The SIGTRAP stop itself is harmless
	// once waited for (wait4 clears the code a dying tracer's detach
	// would deliver). From the PTRACE_EVENT_STOP the detached task goes
	// on with its own code, or back into its group-stop (the kernel sets
	// JOBCTL_STOP_PENDING again on detach while the group is stopped).
	// Not covered: a tracer killed during the injections themselves. From
	// Begin to End the task's registers are the injection's, which it
	// would run on from, and a stop not yet waited for hands its SIGTRAP
	// to the task on detach (measured: of SIGKILLs of crtools that landed
	// in the injections of a dump's collect step, about half killed the
	// task, with SIGTRAP or SIGSEGV; none that landed after them).
	SettleAtEnd bool
	// trapped: the task is in the SIGTRAP stop of an injection.
	trapped bool
	// started: Start set the task going, Finish has not waited yet.
	started bool
	// settling: StartEnd set the task going towards its settled stop;
	// endMask is the mask FinishEnd puts back.
	settling bool
	endMask  *uint64
	// newBatch: StartNewBatchSized started its mmap.
	newBatch *Batch

	session *injectSession
}

// InjectEvent is a ptrace event stop seen during an injected syscall.
type InjectEvent struct {
	Event int
	Msg   uint
}

type injectSession struct {
	regs Regs
	mask uint64
	// rseqCs is the rseq_cs word of the thread's struct rseq at Begin, at
	// rseqCsAddr, when non-zero (see saveRseqCs).
	rseqCsAddr uintptr
	rseqCs     uint64
}

// rseqCsOffset is offsetof(struct rseq, rseq_cs).
const rseqCsOffset = 8

// saveRseqCs reads the rseq_cs word of tid's registered struct rseq. A task
// stopped inside an rseq critical section must still see it aborted when it
// resumes; but the first resume for an injection runs at an address outside
// the section, and there the kernel merely clears rseq_cs. End writes the
// word back so that the kernel's fixup on the final resume sees the section
// and aborts it (as it would have without us).
func saveRseqCs(tid int, cfg RseqConfig, s *injectSession) error {
	if cfg.RseqAbiPointer == 0 {
		// No rseq registered (or a kernel without the request).
		return nil
	}
	var b [8]byte
	addr := uintptr(cfg.RseqAbiPointer) + rseqCsOffset
	if _, err := ReadMem(tid, addr, b[:]); err != nil {
		return fmt.Errorf("read rseq_cs of task %d: %w", tid, err)
	}
	if v := binary.LittleEndian.Uint64(b[:]); v != 0 {
		s.rseqCsAddr, s.rseqCs = addr, v
	}
	return nil
}

// injectMask is the signal mask during injections: everything blocked
// (SIGKILL and SIGSTOP cannot be) except SIGTRAP, which the single-step
// trap forces; were it blocked, the kernel would reset its handler.
const injectMask = ^uint64(0) &^ (1 << (unix.SIGTRAP - 1))

// ErrNoSyscallInsn says that no `syscall` instruction was found in the task.
var ErrNoSyscallInsn = errors.New("no syscall instruction found in the task's vDSO or code")

// NewInjector prepares injections into tid without writing to it: it finds a
// `syscall` instruction in the task's [vdso] (or, failing that, in its
// executable mappings) and picks no scratch memory (Scratch = 0; see
// WithScratch). tid need not be stopped yet.
func NewInjector(tid int) (*Injector, error) {
	maps, err := readMaps(tid)
	if err != nil {
		return nil, err
	}
	in := &Injector{Tid: tid}
	in.syscallStops, err = ignoresSIGTRAP(tid)
	if err != nil {
		return nil, err
	}
	// The vDSO first: every task has it, it is small, and its clock
	// fallbacks contain `syscall`.
	var exec []mapping
	for _, m := range maps {
		if m.name == "[vdso]" {
			exec = append([]mapping{m}, exec...)
		} else if m.perms[2] == 'x' && m.name != "[vsyscall]" {
			exec = append(exec, m)
		}
	}
	for _, m := range exec {
		addr, err := findSyscallInsn(tid, m)
		if err != nil {
			return nil, err
		}
		if addr != 0 {
			in.SyscallAddr = addr
			return in, nil
		}
	}
	return nil, fmt.Errorf("prepare injection into task %d: %w", tid, ErrNoSyscallInsn)
}

// vdsoSyscall remembers where NewInjectorAt found a `syscall` instruction
// in a [vdso] of a given size: every process of a boot has the same vDSO
// image, mapped at its own address.
var vdsoSyscall struct {
	sync.Mutex
	size, off uintptr
}

// NewInjectorAt is NewInjector for a caller that already read the task's
// memory map and status: vdsoStart and vdsoEnd are its [vdso] mapping (0, 0
// if it has none), sigIgn the SigIgn mask of its status. The offset of the
// `syscall` instruction in the vDSO is found once per process of crtools
// and only checked (two bytes) for further tasks.
func NewInjectorAt(tid int, vdsoStart, vdsoEnd uintptr, sigIgn uint64) (*Injector, error) {
	if vdsoEnd <= vdsoStart {
		return NewInjector(tid)
	}
	in := &Injector{Tid: tid, syscallStops: sigIgn&(1<<(unix.SIGTRAP-1)) != 0}
	size := vdsoEnd - vdsoStart
	vdsoSyscall.Lock()
	cached, off := vdsoSyscall.size == size, vdsoSyscall.off
	vdsoSyscall.Unlock()
	if cached {
		var b [2]byte
		if n, err := ReadMem(tid, vdsoStart+off, b[:]); err == nil && n == 2 && b == [2]byte{0x0f, 0x05} {
			in.SyscallAddr = vdsoStart + off
			return in, nil
		}
	}
	addr, err := findSyscallInsn(tid, mapping{start: vdsoStart, end: vdsoEnd, perms: "r-xp", name: "[vdso]"})
	if err != nil || addr == 0 {
		return NewInjector(tid)
	}
	vdsoSyscall.Lock()
	vdsoSyscall.size, vdsoSyscall.off = size, addr-vdsoStart
	vdsoSyscall.Unlock()
	in.SyscallAddr = addr
	return in, nil
}

// findSyscallInsn scans up to 1 MiB of m for 0f 05 and returns its address,
// 0 if absent.
func findSyscallInsn(tid int, m mapping) (uintptr, error) {
	size := m.end - m.start
	if size > 1<<20 {
		size = 1 << 20
	}
	buf := make([]byte, size)
	n, err := ReadMem(tid, m.start, buf)
	if err != nil && n == 0 {
		return 0, fmt.Errorf("find syscall instruction in %s of task %d: %w", m.name, tid, err)
	}
	if i := bytes.Index(buf[:n], []byte{0x0f, 0x05}); i >= 0 {
		return m.start + uintptr(i), nil
	}
	return 0, nil
}

type mapping struct {
	start, end uintptr
	perms      string
	name       string
}

func readMaps(tid int) ([]mapping, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(tid) + "/maps")
	if err != nil {
		return nil, fmt.Errorf("read maps of task %d: %w", tid, err)
	}
	defer f.Close()
	var out []mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode [name]; the name may hold spaces.
		fields := strings.SplitN(sc.Text(), " ", 6)
		if len(fields) < 5 || len(fields[1]) < 4 {
			continue
		}
		start, end, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		s, err1 := strconv.ParseUint(start, 16, 64)
		e, err2 := strconv.ParseUint(end, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		m := mapping{start: uintptr(s), end: uintptr(e), perms: fields[1]}
		if len(fields) == 6 {
			m.name = strings.TrimLeft(fields[5], " ")
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read maps of task %d: %w", tid, err)
	}
	return out, nil
}

// ignoresSIGTRAP reads SigIgn of /proc/TID/status.
func ignoresSIGTRAP(tid int) (bool, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return false, fmt.Errorf("read status of task %d: %w", tid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigIgn:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false, fmt.Errorf("parse SigIgn of task %d: %w", tid, err)
			}
			return mask&(1<<(unix.SIGTRAP-1)) != 0, nil
		}
	}
	return false, fmt.Errorf("no SigIgn in status of task %d", tid)
}

// Begin saves the task's registers and signal mask and blocks its signals
// for a series of Syscall calls; End puts both back. Syscall outside
// Begin/End does the same for itself alone (4 more ptrace requests per call).
// Preconditions: caller is on the tracer thread; Tid is ptrace-stopped.
func (in *Injector) Begin() error {
	if in.session != nil {
		return fmt.Errorf("begin injection into task %d: already begun", in.Tid)
	}
	regs, err := GetRegs(in.Tid)
	if err != nil {
		return err
	}
	mask, err := GetSigmask(in.Tid)
	if err != nil {
		return err
	}
	cfg, err := GetRseqConfig(in.Tid)
	if err != nil {
		cfg = RseqConfig{} // a kernel without the request: no rseq to mind
	}
	return in.BeginWith(regs, mask, cfg)
}

// BeginWith is Begin for a caller that has just read the task's registers,
// signal mask and rseq configuration (PTRACE_GETREGS, PTRACE_GETSIGMASK,
// PTRACE_GET_RSEQ_CONFIGURATION) while it was stopped as it is now: the
// same session without reading them again.
func (in *Injector) BeginWith(regs Regs, mask uint64, rseq RseqConfig) error {
	if in.session != nil {
		return fmt.Errorf("begin injection into task %d: already begun", in.Tid)
	}
	s := &injectSession{regs: regs, mask: mask}
	if err := saveRseqCs(in.Tid, rseq, s); err != nil {
		return err
	}
	if err := SetSigmask(in.Tid, injectMask); err != nil {
		return err
	}
	in.session = s
	return nil
}

// BeginAllWith is BeginWith of each of ins, threads of one process, with
// regs[i], masks[i] and rseqs[i]: the rseq_cs words of all of them are read
// with one process_vm_readv instead of one each (they share their memory).
// It returns how many were begun, ins[:n] (each needs its End), and why the
// others were not.
// Preconditions: caller is on the tracer thread; every thread is
// ptrace-stopped.
func BeginAllWith(ins []*Injector, regs []Regs, masks []uint64, rseqs []RseqConfig) (int, error) {
	if len(regs) != len(ins) || len(masks) != len(ins) || len(rseqs) != len(ins) {
		return 0, fmt.Errorf("begin injections: %d injectors, %d registers, %d masks, %d rseqs", len(ins), len(regs), len(masks), len(rseqs))
	}
	ss := make([]*injectSession, len(ins))
	var local []unix.Iovec
	var remote []unix.RemoteIovec
	var at []int // the session of each iovec
	words := make([]byte, 8*len(ins))
	for i, in := range ins {
		if in.session != nil {
			return 0, fmt.Errorf("begin injection into task %d: already begun", in.Tid)
		}
		ss[i] = &injectSession{regs: regs[i], mask: masks[i]}
		if rseqs[i].RseqAbiPointer == 0 {
			continue
		}
		l := unix.Iovec{Base: &words[8*i]}
		l.SetLen(8)
		local = append(local, l)
		remote = append(remote, unix.RemoteIovec{Base: uintptr(rseqs[i].RseqAbiPointer) + rseqCsOffset, Len: 8})
		at = append(at, i)
	}
	if len(at) > 0 {
		var n int
		err := retry(func() (err error) {
			n, err = unix.ProcessVMReadv(ins[0].Tid, local, remote, 0)
			return err
		})
		if err != nil {
			n = 0
		}
		for k, i := range at {
			if k >= n/8 {
				// Not read together: alone, with saveRseqCs's errors.
				if err := saveRseqCs(ins[i].Tid, rseqs[i], ss[i]); err != nil {
					return 0, err
				}
				continue
			}
			if v := binary.LittleEndian.Uint64(words[8*i:]); v != 0 {
				ss[i].rseqCsAddr, ss[i].rseqCs = uintptr(rseqs[i].RseqAbiPointer)+rseqCsOffset, v
			}
		}
	}
	for i, in := range ins {
		if err := SetSigmask(in.Tid, injectMask); err != nil {
			return i, err
		}
		in.session = ss[i]
	}
	return len(ins), nil
}

// Adopt starts an injection session without reading or changing anything
// of the task (Begin costs four ptrace calls): regs are what batches start
// from (segment selectors, flags). End must not be called. It is for a
// task whose registers and signal mask the caller sets itself before the
// task runs code of its own (a restore puppet); any other task needs Begin.
func (in *Injector) Adopt(regs Regs) error {
	if in.session != nil {
		return fmt.Errorf("adopt task %d for injection: already begun", in.Tid)
	}
	in.session = &injectSession{regs: regs}
	return nil
}

// End puts back the registers and mask saved by Begin.
func (in *Injector) End() error {
	if err := in.StartEnd(); err != nil {
		return err
	}
	return in.FinishEnd()
}

// StartEnd is the first half of End: it puts the registers back and, when
// the task must be settled (SettleAtEnd), sets it going towards its
// PTRACE_EVENT_STOP without waiting; FinishEnd waits for it and puts the
// signal mask back. Between the two the tracer may end injections into
// other tasks, which then settle at the same time.
func (in *Injector) StartEnd() error {
	s := in.session
	if s == nil {
		return fmt.Errorf("end injection into task %d: not begun", in.Tid)
	}
	in.session = nil
	if err := SetRegs(in.Tid, &s.regs); err != nil {
		return err
	}
	if s.rseqCsAddr != 0 {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], s.rseqCs)
		if err := writeMemFast(in.Tid, s.rseqCsAddr, b[:], 0, nil); err != nil {
			return fmt.Errorf("restore rseq_cs of task %d: %w", in.Tid, err)
		}
	}
	in.endMask = &s.mask
	// Settle while every signal but SIGTRAP is still blocked.
	if in.SettleAtEnd && in.trapped {
		if err := Interrupt(in.Tid); err != nil {
			return fmt.Errorf("settle task %d: %w", in.Tid, err)
		}
		if err := Cont(in.Tid, 0); err != nil {
			return fmt.Errorf("settle task %d: %w", in.Tid, err)
		}
		in.settling = true
		return nil
	}
	return in.FinishEnd()
}

// FinishEnd completes StartEnd (see there).
func (in *Injector) FinishEnd() error {
	if in.endMask == nil {
		return nil
	}
	if in.settling {
		in.settling = false
		if err := in.settle(); err != nil {
			in.endMask = nil
			return err
		}
	}
	mask := *in.endMask
	in.endMask = nil
	return SetSigmask(in.Tid, mask)
}

// settle completes the move of the task from the SIGTRAP
// signal-delivery-stop of the last injection into a PTRACE_EVENT_STOP,
// which StartEnd began: PTRACE_INTERRUPT, then resume with the SIGTRAP
// suppressed; the kernel handles the pending interrupt trap before
// anything else on the way back to user space, so the task runs no
// instruction of its own. It waits for that stop; a signal-delivery-stop
// seen first (not expected) is held back in Deferred like those of the
// injections, and the task resumed again.
func (in *Injector) settle() error {
	for {
		st, err := WaitStopped(in.Tid)
		if err != nil {
			return fmt.Errorf("settle task %d: %w", in.Tid, err)
		}
		if st.Event == unix.PTRACE_EVENT_STOP {
			in.trapped = false
			return nil
		}
		if st.SignalDelivery() && st.Sig != int(unix.SIGTRAP) {
			in.Deferred = append(in.Deferred, st.Sig)
		}
		if err := Cont(in.Tid, 0); err != nil {
			return fmt.Errorf("settle task %d: %w", in.Tid, err)
		}
	}
}

// IgnoresSIGTRAP tells whether the task ignores SIGTRAP: injections then
// go through syscall-stops, and batches cannot be used (ErrSyscallStops).
func (in *Injector) IgnoresSIGTRAP() bool { return in.syscallStops }

// SavedRegs returns the registers saved by Begin (the task's own).
func (in *Injector) SavedRegs() (Regs, bool) {
	if in.session == nil {
		return Regs{}, false
	}
	return in.session.regs, true
}

// Abandon forgets the state saved by Begin without putting it back, for a
// caller that sets the task's final registers and mask itself.
func (in *Injector) Abandon() { in.session = nil }

// Syscall runs syscall nr with up to six arguments in the task and returns
// its raw return value. A return value in [-4095, -1] comes with the
// matching unix.Errno as error. Other errors (the task died, a ptrace
// request failed) are wrapped with context.
// Preconditions: caller is on the tracer thread; Tid is ptrace-stopped.
func (in *Injector) Syscall(nr uintptr, args ...uintptr) (ret uintptr, err error) {
	if len(args) > 6 {
		return 0, fmt.Errorf("inject %s into task %d: %d arguments, at most 6", syscallLabel(nr), in.Tid, len(args))
	}
	if in.session == nil {
		if err := in.Begin(); err != nil {
			return 0, fmt.Errorf("inject %s into task %d: %w", syscallLabel(nr), in.Tid, err)
		}
		defer func() {
			if in.session == nil {
				return
			}
			if eerr := in.End(); eerr != nil && err == nil {
				err = fmt.Errorf("inject %s into task %d: put registers back: %w", syscallLabel(nr), in.Tid, eerr)
			}
		}()
	}
	ret, err = in.run(nr, args)
	if err != nil {
		return ret, fmt.Errorf("inject %s into task %d: %w", syscallLabel(nr), in.Tid, err)
	}
	if r := int64(ret); r < 0 && r >= -4095 {
		return ret, unix.Errno(-r)
	}
	return ret, nil
}

func syscallLabel(nr uintptr) string {
	if name := SyscallName(int(nr)); name != "" {
		return name
	}
	return "syscall " + strconv.FormatUint(uint64(nr), 10)
}

func (in *Injector) run(nr uintptr, args []uintptr) (uintptr, error) {
	in.Events = in.Events[:0]
	// rt_sigprocmask must see and change the task's own mask, not ours.
	ownMask := nr == unix.SYS_RT_SIGPROCMASK
	if ownMask {
		if err := SetSigmask(in.Tid, in.session.mask); err != nil {
			return 0, err
		}
	}
	if err := in.setSyscallRegs(nr, args); err != nil {
		return 0, err
	}
	ret, err := in.wait(false)
	if err == nil && ownMask {
		m, gerr := GetSigmask(in.Tid)
		if gerr != nil {
			return ret, gerr
		}
		in.session.mask = m
		err = SetSigmask(in.Tid, injectMask)
	}
	return ret, err
}

// setSyscallRegs points the task at its `syscall` instruction with nr and
// args in place.
func (in *Injector) setSyscallRegs(nr uintptr, args []uintptr) error {
	r := in.session.regs
	r.Rip = uint64(in.SyscallAddr)
	r.Rax = uint64(nr)
	// orig_rax = -1: not in a syscall, so that neither the stop we resume
	// from nor the one we end in rewinds RIP to "restart" something.
	r.Orig_rax = ^uint64(0)
	var a [6]uint64
	for i, v := range args {
		a[i] = uint64(v)
	}
	r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	r.Eflags &^= 0x100 // TF: the kernel manages single-stepping
	return SetRegs(in.Tid, &r)
}

// wait drives the syscall set up by setSyscallRegs to its end and returns
// rax. started: the task was resumed already (Start).
func (in *Injector) wait(started bool) (uintptr, error) {
	if in.syscallStops {
		return in.runSyscallStops(started)
	}
	ret, err := in.runSingleStep(started)
	in.trapped = true
	return ret, err
}

// Start runs syscall nr in the task like Syscall, but returns as soon as
// the task is on its way: Finish waits for the result. Between the two the
// tracer may start calls in other tasks, which then run at the same time
// (a dump injects into every task of a tree in a few round trips in all,
// instead of a few per task). Only between Begin and End; not for
// rt_sigprocmask.
// Preconditions: caller is on the tracer thread; Tid is ptrace-stopped.
func (in *Injector) Start(nr uintptr, args ...uintptr) error {
	switch {
	case len(args) > 6:
		return fmt.Errorf("inject %s into task %d: %d arguments, at most 6", syscallLabel(nr), in.Tid, len(args))
	case in.session == nil:
		return fmt.Errorf("inject %s into task %d: injection not begun", syscallLabel(nr), in.Tid)
	case in.started:
		return fmt.Errorf("inject %s into task %d: a call is still running", syscallLabel(nr), in.Tid)
	case nr == unix.SYS_RT_SIGPROCMASK:
		return fmt.Errorf("inject %s into task %d: use Syscall", syscallLabel(nr), in.Tid)
	}
	in.Events = in.Events[:0]
	if err := in.setSyscallRegs(nr, args); err != nil {
		return fmt.Errorf("inject %s into task %d: %w", syscallLabel(nr), in.Tid, err)
	}
	var err error
	if in.syscallStops {
		err = Syscall(in.Tid, 0)
	} else {
		err = SingleStep(in.Tid, 0)
	}
	if err != nil {
		return fmt.Errorf("inject %s into task %d: %w", syscallLabel(nr), in.Tid, err)
	}
	in.started = true
	return nil
}

// Finish waits for the call of Start and returns what Syscall would.
func (in *Injector) Finish() (uintptr, error) {
	if !in.started {
		return 0, fmt.Errorf("finish injection into task %d: no call started", in.Tid)
	}
	in.started = false
	ret, err := in.wait(true)
	if err != nil {
		return ret, fmt.Errorf("inject into task %d: %w", in.Tid, err)
	}
	if r := int64(ret); r < 0 && r >= -4095 {
		return ret, unix.Errno(-r)
	}
	return ret, nil
}

// after is the RIP after the `syscall` instruction.
func (in *Injector) after() uint64 { return uint64(in.SyscallAddr) + 2 }

func (in *Injector) runSingleStep(started bool) (uintptr, error) {
	for {
		if !started {
			if err := SingleStep(in.Tid, 0); err != nil {
				return 0, err
			}
		}
		started = false
		st, err := WaitStopped(in.Tid)
		if err != nil {
			return 0, err
		}
		done, rax, err := in.classify(st)
		if err != nil {
			return 0, err
		}
		if done {
			return rax, nil
		}
	}
}

// classify handles a stop during a single-stepped injection and reports
// whether it is the trap right after our syscall, with rax then.
func (in *Injector) classify(st StopInfo) (bool, uintptr, error) {
	if st.Event != 0 {
		return false, 0, in.noteEvent(st)
	}
	if st.Sig != int(unix.SIGTRAP) {
		in.Deferred = append(in.Deferred, st.Sig)
		return false, 0, nil
	}
	regs, err := GetRegs(in.Tid)
	if err != nil {
		return false, 0, err
	}
	if regs.Rip == in.after() {
		return true, uintptr(regs.Rax), nil
	}
	// A SIGTRAP elsewhere: the task's own (sent by kill, pending before
	// we came) if it was sent from user space, or the trap after a
	// syscall that does not return to the next instruction (rt_sigreturn).
	si, err := GetSiginfo(in.Tid)
	if err != nil {
		return false, 0, err
	}
	if code := int32(binary.LittleEndian.Uint32(si[8:])); code <= 0 {
		in.Deferred = append(in.Deferred, st.Sig)
		return false, 0, nil
	}
	return true, uintptr(regs.Rax), nil
}

func (in *Injector) noteEvent(st StopInfo) error {
	if st.Event == unix.PTRACE_EVENT_STOP {
		// A group-stop or interrupt trap; step on.
		return nil
	}
	msg, err := GetEventMsg(in.Tid)
	if err != nil {
		return err
	}
	in.Events = append(in.Events, InjectEvent{Event: st.Event, Msg: msg})
	return nil
}

func (in *Injector) runSyscallStops(started bool) (uintptr, error) {
	stops := 0
	for {
		if !started {
			if err := Syscall(in.Tid, 0); err != nil {
				return 0, err
			}
		}
		started = false
		st, err := WaitStopped(in.Tid)
		if err != nil {
			return 0, err
		}
		if st.Event != 0 {
			if err := in.noteEvent(st); err != nil {
				return 0, err
			}
			continue
		}
		if st.Sig&0x7f != int(unix.SIGTRAP) {
			in.Deferred = append(in.Deferred, st.Sig)
			continue
		}
		if st.Sig == int(unix.SIGTRAP) {
			// Without PTRACE_O_TRACESYSGOOD a syscall-stop looks like a
			// SIGTRAP; its siginfo tells (si_code SIGTRAP or 0x85).
			si, err := GetSiginfo(in.Tid)
			if err != nil {
				return 0, err
			}
			if code := binary.LittleEndian.Uint32(si[8:]); code != uint32(unix.SIGTRAP) && code != uint32(unix.SIGTRAP)|0x80 {
				in.Deferred = append(in.Deferred, st.Sig)
				continue
			}
		}
		stops++
		if stops == 2 {
			regs, err := GetRegs(in.Tid)
			if err != nil {
				return 0, err
			}
			return uintptr(regs.Rax), nil
		}
	}
}

// WithScratch maps size bytes (rounded up to pages) of private anonymous
// read-write memory in the task for syscall arguments and sets Scratch. The
// cleanup unmaps it again.
// Preconditions: caller is on the tracer thread; Tid is ptrace-stopped.
func (in *Injector) WithScratch(size int) (cleanup func() error, err error) {
	if in.Scratch != 0 {
		return nil, fmt.Errorf("map scratch memory in task %d: already at %#x", in.Tid, in.Scratch)
	}
	page := os.Getpagesize()
	size = (size + page - 1) / page * page
	addr, err := in.Syscall(unix.SYS_MMAP, 0, uintptr(size), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
	if err != nil {
		return nil, fmt.Errorf("map scratch memory in task %d: %w", in.Tid, err)
	}
	in.Scratch, in.ScratchSize, in.scratchUsed = addr, size, 0
	return func() error {
		if in.Scratch != addr {
			return nil
		}
		in.Scratch, in.ScratchSize, in.scratchUsed = 0, 0, 0
		if _, err := in.Syscall(unix.SYS_MUNMAP, addr, uintptr(size)); err != nil {
			return fmt.Errorf("unmap scratch memory in task %d: %w", in.Tid, err)
		}
		return nil
	}, nil
}

// PutBytes copies b into the scratch area (16-byte aligned, after what was
// put before) and returns its address in the task.
func (in *Injector) PutBytes(b []byte) (uintptr, error) {
	if in.Scratch == 0 {
		return 0, fmt.Errorf("copy %d bytes into task %d: no scratch memory", len(b), in.Tid)
	}
	off := (in.scratchUsed + 15) &^ 15
	if off+len(b) > in.ScratchSize {
		return 0, fmt.Errorf("copy %d bytes into task %d: scratch area of %d bytes is full", len(b), in.Tid, in.ScratchSize)
	}
	addr := in.Scratch + uintptr(off)
	if _, err := WriteMem(in.Tid, addr, b); err != nil {
		return 0, err
	}
	in.scratchUsed = off + len(b)
	return addr, nil
}

// ResetScratch forgets what PutBytes placed, so the area can be reused.
func (in *Injector) ResetScratch() { in.scratchUsed = 0 }
