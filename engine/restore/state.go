package restore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/kernel"
	procfs "github.com/crtools/crtools/engine/proc"
	"github.com/crtools/crtools/engine/ptrace"
)

// A process's state is restored in two halves around the copy of its
// memory (procState): beginProc maps its memory, the copy runs on another
// goroutine (so on the other CPU, the tracer thread and the puppets
// sharing one), and endProc does the rest. RestoreState overlaps the copy
// of each task with the injections of the next task's beginProc and of
// its own endProc: both are mostly kernel work, about half a millisecond
// each per task here.
type procState struct {
	pr    *proc
	vmas  []*pb.VmaEntry
	plans []vmaPlan
	shm   *shmState // of the process's lane

	fillDone chan struct{}
	filled   int64
	fillErr  error
	start    time.Time // for the cost log
}

// startFill starts the copy of the task's pages.
func (st *procState) startFill(r *restorer) {
	lead := st.pr.threads[0]
	if r.opts.Progress != nil {
		lead.filled = r.addFilled
	}
	st.fillDone = make(chan struct{})
	fill := func() {
		defer close(st.fillDone)
		st.filled, st.fillErr = lead.fillPages(r.img.dir, st.pr.t.pagemap)
	}
	if fillByPreadv {
		fill() // injected preadv: the tracer thread only
		return
	}
	go fill()
}

// waitFill waits for the copy (if it was started) and returns its error.
func (st *procState) waitFill() error {
	if st.fillDone == nil {
		return nil
	}
	<-st.fillDone
	st.pr.threads[0].filled = nil
	return st.fillErr
}

// beginProc readies the puppets of one process for its memory: signals
// blocked, crtools' files closed, every mapping made.
// Preconditions: on the tracer thread; every puppet of pr is stopped.
func (r *restorer) beginProc(pr *proc, l *lane) (*procState, error) {
	t := pr.t
	lead := pr.threads[0]
	lead.log = r.taskLog(t.pid)

	// Signals stay blocked while the puppet is driven: a signal would
	// only cause a stop we must suppress. The dumped mask is set at the
	// very end. SIGTRAP stays unblocked: the int3 of every injection
	// forces one, and a forced signal that is blocked resets its handler
	// to SIG_DFL (a Go program's SIGTRAP handler was lost that way).
	for _, th := range pr.threads {
		if th.masked {
			continue // born with it (blockForThreads)
		}
		if err := ptrace.SetSigmask(th.pid, puppetMask); err != nil {
			return nil, err
		}
	}
	// Zombie children were made at CreateTasks; the SIGCHLD each sent is
	// not the restored task's (it got those before the dump; a pending
	// one is in the images), so drop it.
	for _, c := range t.children {
		if c.dead() {
			set, err := lead.put(u64Bytes([]uint64{1 << (unix.SIGCHLD - 1)}))
			if err != nil {
				return nil, err
			}
			ts, err := lead.put(make([]byte, 16))
			if err != nil {
				return nil, err
			}
			if _, err := lead.call(unix.SYS_RT_SIGTIMEDWAIT, set, 0, ts, 8); err != nil && !isErrno(err, unix.EAGAIN) {
				return nil, fmt.Errorf("drop SIGCHLD of zombie children in task %d: %w", t.pid, err)
			}
			break
		}
	}
	// The puppet inherited crtools' files; a table shared with a task
	// restored before holds that task's restored files instead.
	// From here on most calls are queued and run in a few batches (one
	// stop each): the first runs with the mappings (mapVMAs), the second
	// after the page fill, the last at the end.
	if !pr.sharedFiles {
		if err := lead.closeInherited(); err != nil { // ns.go
			lead.fds = nil
			return nil, kernel.IfMissing("close_range", err)
		}
	}

	// The first task (the root, on the main lane; the second lane starts
	// after it) reads the puppets' initial state before anything of it
	// changes.
	if r.initial == nil {
		var err error
		if r.initial, err = readInitialState(lead.pid); err != nil {
			lead.fds = nil
			return nil, err
		}
	}

	// Memory.
	st := &procState{pr: pr, vmas: t.mm.GetVmas(), shm: l.shm}
	err := func() error {
		// THP-disable first, in the batch of the mappings: set after the
		// fill, memory filled before could be backed by huge pages in a
		// process that had them disabled. Fork copies the flag, which is
		// per mm, to heirs (heirOK compares it).
		if t.mm.ThpDisabled != nil && t.mm.GetThpDisabled() != r.initial.thpDisabled {
			if err := lead.queuef("set THP disable", unix.SYS_PRCTL, unix.PR_SET_THP_DISABLE, boolU64(t.mm.GetThpDisabled())); err != nil {
				return err
			}
		}
		if err := lead.unmapPuppet(); err != nil {
			return err
		}
		lead.bare = false // threads share it: one lead, one mm
		checkVdso, err := lead.mapVdso(st.vmas, l.vdso)
		if err != nil {
			return err
		}
		// Only in an fd table no other task has: another's calls in
		// between (endProc of the task before) would find the fd taken.
		if r.tableOfOne(t) {
			lead.keepExe = uint64(t.mm.GetExeFileId())
		}
		if st.plans, err = lead.mapVMAs(r.img, l.shm, st.vmas, t.pagemap); err != nil {
			return err
		}
		return checkVdso()
	}()
	if err != nil {
		lead.fds = nil
		return nil, err
	}
	return st, nil
}

// tableOfOne tells whether no other task of the images shares t's fd
// table.
func (r *restorer) tableOfOne(t *taskImage) bool {
	if t.ids == nil {
		return false
	}
	for _, o := range r.img.tasks {
		if o != t && o.ids != nil && o.ids.GetFilesId() == t.ids.GetFilesId() {
			return false
		}
	}
	return true
}

// endProc turns the puppets of one process into its dumped task, all but
// the final registers (finishProc), once its memory is copied. It returns
// how many bytes of memory were filled.
// Preconditions: on the tracer thread; every puppet of pr is stopped.
func (r *restorer) endProc(st *procState) (int64, error) {
	pr := st.pr
	t := pr.t
	lead := pr.threads[0]
	// Whatever happens, the fd table is not tracked past this task.
	defer func() { lead.fds = nil }()
	// The other threads' own state needs nothing of the memory's
	// contents (the kernel refreshes the rseq area's cpu fields when the
	// task next returns to user space): their batches run while the
	// pages are copied, which a 50-thread process otherwise waits for.
	if err := restoreOtherThreads(pr); err != nil {
		_ = st.waitFill()
		return 0, err
	}
	err := st.waitFill()
	filled := st.filled
	if err != nil {
		return filled, err
	}
	vmas, plans := st.vmas, st.plans
	n, err := lead.fillShmem(r.img, st.shm, vmas)
	filled += n
	if err != nil {
		return filled, err
	}
	if err := lead.protectVMAs(plans); err != nil {
		return filled, err
	}
	if err := lead.lockVMAs(vmas); err != nil {
		return filled, err
	}
	if err := lead.restoreMM(r.img, t.mm); err != nil {
		return filled, err
	}

	// Files, then the things that refer to files (cwd, root).
	// A shared fd table or fs info is restored by one task of those that
	// share it (create.go).
	if !pr.sharedFiles {
		if err := lead.restoreFiles(r.img, t.fds); err != nil {
			return filled, err
		}
	}
	if !pr.sharedFS {
		if err := lead.restoreFS(r.img, t.fs); err != nil {
			return filled, err
		}
	}
	if err := r.restoreSessionTerminal(pr); err != nil { // special.go
		return filled, err
	}
	// Last user of crtools' pidfd in this task (takeFile, inside a new
	// pid namespace) is restoreSessionTerminal: drop it only now.
	if !pr.sharedFiles {
		if err := lead.dropCrtoolsFd(); err != nil { // ns.go
			return filled, err
		}
	}

	// Process-wide state.
	tc := t.core().GetTc()
	if pr.sigtrapIgn, err = lead.restoreSigactions(tc.GetSigactions()); err != nil {
		return filled, err
	}
	if err := lead.restoreItimers(tc.GetTimers()); err != nil {
		return filled, err
	}
	if err := lead.restorePosixTimers(tc.GetTimers().GetPosix()); err != nil {
		return filled, err
	}
	if err := lead.restoreRlimits(tc.GetRlimits(), r.initial.rlimits); err != nil {
		return filled, err
	}
	// A puppet starts with personality 0 and dumpable 1 (crtools runs
	// them with no exec of a setuid file): skip what is already so.
	if tc.GetPersonality() != 0 {
		if err := lead.queuef("set personality", unix.SYS_PERSONALITY, uint64(tc.GetPersonality())); err != nil {
			return filled, err
		}
	}
	if tc.GetChildSubreaper() {
		if err := lead.queuef("set child subreaper", unix.SYS_PRCTL, unix.PR_SET_CHILD_SUBREAPER, 1); err != nil {
			return filled, err
		}
	}
	if t.mm.Dumpable != nil && t.mm.GetDumpable() != 1 {
		if err := lead.queuef("set dumpable", unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, uint64(t.mm.GetDumpable())); err != nil {
			return filled, err
		}
	}
	// THP-disable was set in beginProc, before the mappings.
	if tc.OomScoreAdj != nil && tc.GetOomScoreAdj() != r.initial.oomScoreAdj {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", lead.pid), []byte(fmt.Sprint(tc.GetOomScoreAdj())), 0); err != nil {
			r.log.Warn().Err(err).Int("pid", t.pid).Msg("cannot restore oom_score_adj")
		}
	}

	// Heirs are forked now, with what fork copies in place and nothing
	// of what it would copy wrongly (inherit.go); the clones run with
	// the leader's batch, before its calls.
	if err := r.cloneHeirs(pr, r.createdFunc()); err != nil {
		return filled, err
	}
	// Per thread: the leader's state (the others' ran before the fill),
	// and every thread's pending signals, once the actions are in place.
	if err := lead.restoreLeader(t.cores[lead.vpid]); err != nil {
		return filled, err
	}
	for _, th := range pr.threads[1:] {
		if err := th.queueSignals(t.cores[th.vpid].GetThreadCore().GetSignalsP(), false); err != nil {
			return filled, err
		}
	}
	// Pending signals of the process (the shared queue), while all are
	// still blocked: they stay queued until the task runs.
	if err := lead.queueSignals(tc.GetSignalsS(), true); err != nil {
		return filled, err
	}
	if err := lead.runPending(); err != nil {
		return filled, err
	}
	// Every file is in place: crtools' view of the fd table must be
	// the kernel's.
	if err := lead.checkFds(); err != nil {
		return filled, err
	}
	// Seccomp (seccomp.go), then credentials last: lowering them may
	// take away what the steps above needed.
	if err := r.restoreSeccomp(pr); err != nil {
		return filled, err
	}
	changed := false
	for _, th := range pr.threads {
		c := t.cores[th.vpid].GetThreadCore().GetCreds()
		changed = changed || credsChange(c, r.initial.creds)
		if err := th.restoreCreds(c, r.initial.creds); err != nil {
			return filled, err
		}
	}
	if err := lead.dumpableAfterCreds(t.mm, changed); err != nil {
		return filled, err
	}
	// Last, the trampoline goes (regs.go).
	if err := r.dropTrampoline(pr); err != nil {
		return filled, err
	}
	lead.log.Info().Int("threads", len(pr.threads)).Int64("bytes", filled).Msg("task state restored")
	return filled, nil
}

// taskLog is the logger for the work on one task: its own file with
// --log-pid (opts.PidLog), else the restore's log.
func (r *restorer) taskLog(pid int) zerolog.Logger {
	if r.opts.PidLog != nil {
		return r.opts.PidLog(pid).With().Str("component", "restore").Logger()
	}
	return r.log.With().Int("pid", pid).Logger()
}

// restoreMM sets the mm fields with one PR_SET_MM_MAP: code/data/brk/stack
// bounds, arg and env areas, the saved auxv, and the exe file (which the
// kernel only accepts once the old executable is unmapped).
func (p *puppet) restoreMM(img *imageSet, mm *pb.MmEntry) error {
	return p.setMMMap(img, mm, false)
}

// dumpableAfterCreds sets the dumped dumpable flag again once the
// credentials of the task's threads are restored, when they changed any
// (changed): a change of uid, gid, fsuid or fsgid, or a loss of
// capabilities, makes the kernel reset it (commit_creds, to
// fs.suid_dumpable: 0 by default), and a dumpable process of a non-root
// user came back with its /proc files owned by root, out of its user's
// reach (ptrace, core dumps). prctl takes 0 and 1 only.
func (p *puppet) dumpableAfterCreds(mm *pb.MmEntry, changed bool) error {
	if !changed || mm.Dumpable == nil || mm.GetDumpable() > 1 {
		return nil
	}
	_, err := p.callf("set dumpable again after the credentials", unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, uint64(mm.GetDumpable()))
	return err
}

// credsChange tells whether restoreCreds(c, cur) changes anything.
func credsChange(c *pb.CredsEntry, cur creds) bool {
	return c != nil && !credsFromImage(c).equal(cur)
}

// restoreMMNoExe is restoreMM for a heir (inherit.go), whose executable
// fork copied: the kernel refuses to replace it while it is mapped.
func (p *puppet) restoreMMNoExe(img *imageSet, mm *pb.MmEntry) error {
	return p.setMMMap(img, mm, true)
}

func (p *puppet) setMMMap(img *imageSet, mm *pb.MmEntry, keepExe bool) error {
	m := prctlMMMap{
		StartCode: mm.GetMmStartCode(), EndCode: mm.GetMmEndCode(),
		StartData: mm.GetMmStartData(), EndData: mm.GetMmEndData(),
		StartBrk: mm.GetMmStartBrk(), Brk: mm.GetMmBrk(), StartStack: mm.GetMmStartStack(),
		ArgStart: mm.GetMmArgStart(), ArgEnd: mm.GetMmArgEnd(),
		EnvStart: mm.GetMmEnvStart(), EnvEnd: mm.GetMmEnvEnd(),
		ExeFd: ^uint32(0),
	}
	if auxv := mm.GetMmSavedAuxv(); len(auxv) > 0 {
		b := make([]byte, 8*len(auxv))
		for i, v := range auxv {
			le.PutUint64(b[8*i:], v)
		}
		addr, err := p.put(b)
		if err != nil {
			return err
		}
		m.Auxv, m.AuxvSize = addr, uint32(len(b))
	}
	exeFd := ^uint64(0)
	if fe := img.files[mm.GetExeFileId()]; fe != nil && fe.GetReg() != nil && !keepExe {
		fd := p.exeFd
		if p.keepExe != uint64(mm.GetExeFileId()) || fd == noFd {
			var err error
			if img.special != nil && img.special.Handles(mm.GetExeFileId()) {
				// Deleted before the dump (see openMapFile).
				fd, err = p.takeSpecial(img, mm.GetExeFileId())
			} else {
				fd, err = p.openat(fe.GetReg().GetName(), unix.O_RDONLY|unix.O_CLOEXEC)
			}
			if err != nil {
				return fmt.Errorf("open executable %q of task %d: %w", fe.GetReg().GetName(), p.pid, err)
			}
		}
		exeFd = fd
		m.ExeFd = uint32(fd)
	}
	p.keepExe, p.exeFd = 0, noFd
	addr, err := p.put(m.bytes())
	if err != nil {
		return err
	}
	if err := p.queuef("set the mm map (PR_SET_MM_MAP)", unix.SYS_PRCTL, unix.PR_SET_MM, unix.PR_SET_MM_MAP, addr, prctlMMMapSize, 0); err != nil {
		return err
	}
	if exeFd != ^uint64(0) {
		return p.queueIgnore(unix.SYS_CLOSE, exeFd)
	}
	return nil
}

// restoreFS sets cwd, root and umask.
func (p *puppet) restoreFS(img *imageSet, fs *pb.FsEntry) error {
	if fs == nil {
		return nil
	}
	if fe := img.files[fs.GetRootId()]; fe != nil && fe.GetReg() != nil && fe.GetReg().GetName() != "/" {
		a, err := p.putString(fe.GetReg().GetName())
		if err != nil {
			return err
		}
		if err := p.queuef(fmt.Sprintf("chroot to %q", fe.GetReg().GetName()), unix.SYS_CHROOT, a); err != nil {
			return err
		}
	}
	if fe := img.files[fs.GetCwdId()]; fe != nil && fe.GetReg() != nil {
		a, err := p.putString(fe.GetReg().GetName())
		if err != nil {
			return err
		}
		if err := p.queuef(fmt.Sprintf("chdir to %q", fe.GetReg().GetName()), unix.SYS_CHDIR, a); err != nil {
			return err
		}
	}
	if fs.Umask != nil {
		if err := p.queuef("set umask", unix.SYS_UMASK, uint64(fs.GetUmask())); err != nil {
			return err
		}
	}
	return nil
}

// restoreSigactions installs the handlers that are not in the default
// state (SIG_DFL with no flags and no mask): most of the 64 are, and each
// skipped one saves an injected syscall. An ignored SIGTRAP is not
// installed but returned: the traps that drive the puppet would reset it
// (sigtrap.go), dropTrampoline installs it last.
func (p *puppet) restoreSigactions(sas []*pb.SaEntry) (sigtrapIgn *kernelSigaction, err error) {
	// CRIU's layout: one entry per signal 1..64 except SIGKILL and
	// SIGSTOP, in signal order.
	sig := 0
	for _, sa := range sas {
		sig++
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			sig++
		}
		if sa.GetSigaction() == 0 && sa.GetFlags() == 0 && sa.GetMask() == 0 && sa.GetRestorer() == 0 {
			continue
		}
		ks := kernelSigaction{Handler: sa.GetSigaction(), Flags: sa.GetFlags(), Restorer: sa.GetRestorer(), Mask: sa.GetMask()}
		if sig == int(unix.SIGTRAP) && ks.Handler == sigIgn {
			sigtrapIgn = &ks
			continue
		}
		a, err := p.put(ks.bytes())
		if err != nil {
			return nil, err
		}
		if err := p.queuef(fmt.Sprintf("set the action of signal %d", sig), unix.SYS_RT_SIGACTION, uint64(sig), a, 0, 8); err != nil {
			return nil, err
		}
	}
	return sigtrapIgn, nil // queued: the caller's next batch
}

// restoreItimers sets ITIMER_REAL/VIRTUAL/PROF where they were armed.
func (p *puppet) restoreItimers(tm *pb.TaskTimersEntry) error {
	if tm == nil {
		return nil
	}
	for which, it := range []*pb.ItimerEntry{tm.GetReal(), tm.GetVirt(), tm.GetProf()} {
		if it == nil || (it.GetIsec() == 0 && it.GetIusec() == 0 && it.GetVsec() == 0 && it.GetVusec() == 0) {
			continue
		}
		v := itimerval{IntervalSec: int64(it.GetIsec()), IntervalUsec: int64(it.GetIusec()),
			ValueSec: int64(it.GetVsec()), ValueUsec: int64(it.GetVusec())}
		if v.ValueSec == 0 && v.ValueUsec == 0 {
			// Armed with 0 would disarm it; the timer was about to
			// fire, so fire it as soon as possible.
			v.ValueUsec = 1
		}
		a, err := p.put(v.bytes())
		if err != nil {
			return err
		}
		if err := p.queuef(fmt.Sprintf("set itimer %d", which), unix.SYS_SETITIMER, uint64(which), a, 0); err != nil {
			return err
		}
	}
	return nil
}

// restorePosixTimers recreates POSIX timers with their ids. The kernel
// hands out ids in increasing order from 0 in a fresh process, so timers
// are created in id order, and placeholder timers fill the gaps and are
// deleted afterwards.
func (p *puppet) restorePosixTimers(timers []*pb.PosixTimerEntry) error {
	if len(timers) == 0 {
		return nil
	}
	want := map[uint32]*pb.PosixTimerEntry{}
	maxID := uint32(0)
	for _, t := range timers {
		want[t.GetItId()] = t
		maxID = max(maxID, t.GetItId())
	}
	if maxID > 4096 {
		return fmt.Errorf("restore POSIX timers of task %d: timer id %d is too large to reach", p.pid, maxID)
	}
	idAddr, err := p.put(make([]byte, 4))
	if err != nil {
		return err
	}
	var placeholders []uint32
	for id := uint32(0); id <= maxID; id++ {
		t := want[id]
		se := sigevent{Signo: int32(unix.SIGALRM), Notify: 1 /* SIGEV_NONE */}
		clock := uint64(unix.CLOCK_MONOTONIC)
		if t != nil {
			se = sigevent{Value: t.GetSivalPtr(), Signo: int32(t.GetSiSigno()), Notify: int32(t.GetItSigevNotify()), Tid: t.GetNotifyThreadId()}
			clock = uint64(t.GetClockId())
		}
		seAddr, err := p.put(se.bytes())
		if err != nil {
			return err
		}
		if _, err := p.callf(fmt.Sprintf("create POSIX timer %d", id), unix.SYS_TIMER_CREATE, clock, seAddr, idAddr); err != nil {
			return err
		}
		got := make([]byte, 4)
		if _, err := ptrace.ReadMem(p.pid, uintptr(idAddr), got); err != nil {
			return err
		}
		if gid := le.Uint32(got); gid != id {
			return fmt.Errorf("restore POSIX timer %d of task %d: the kernel gave id %d", id, p.pid, gid)
		}
		if t == nil {
			placeholders = append(placeholders, id)
			continue
		}
		if t.GetVsec() == 0 && t.GetVnsec() == 0 {
			continue // disarmed
		}
		ts := itimerspec{IntervalSec: int64(t.GetIsec()), IntervalNsec: int64(t.GetInsec()),
			ValueSec: int64(t.GetVsec()), ValueNsec: int64(t.GetVnsec())}
		tsAddr, err := p.put(ts.bytes())
		if err != nil {
			return err
		}
		if _, err := p.callf(fmt.Sprintf("arm POSIX timer %d", id), unix.SYS_TIMER_SETTIME, uint64(id), 0, tsAddr, 0); err != nil {
			return err
		}
	}
	for _, id := range placeholders {
		if _, err := p.callf(fmt.Sprintf("delete placeholder timer %d", id), unix.SYS_TIMER_DELETE, uint64(id)); err != nil {
			return err
		}
	}
	return nil
}

// initialState is what every puppet has when RestoreState starts:
// credentials, limits and oom_score_adj are inherited from the first
// puppet by every clone, no namespace crtools creates changes how they
// read, and only RestoreState changes them, after every clone. Reading
// them once instead of per task saves about 20 syscalls and a
// /proc/PID/status parse per task.
type initialState struct {
	creds       creds
	rlimits     map[int]unix.Rlimit
	oomScoreAdj int32
	thpDisabled bool // PR_SET_THP_DISABLE, kept across exec from crtools
	// sched is the scheduling of every puppet until finishProc sets the
	// dumped one (heirs too: their parent is a puppet when they are
	// forked); nil when it could not be read.
	sched *unix.SchedAttr
}

func readInitialState(pid int) (*initialState, error) {
	// One read of the status for the credentials and the THP flag.
	status, err := procfs.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, fmt.Errorf("read status of task %d: %w", pid, err)
	}
	parsed, err := procfs.ParseStatus(status)
	if err != nil {
		return nil, fmt.Errorf("read status of task %d: %w", pid, err)
	}
	st := &initialState{creds: credsFromStatus(parsed), rlimits: map[int]unix.Rlimit{}}
	for res := 0; res < procfs.NLimits; res++ {
		var cur unix.Rlimit
		if err := unix.Prlimit(pid, res, nil, &cur); err != nil {
			return nil, fmt.Errorf("read rlimit %d of task %d: %w", res, pid, err)
		}
		st.rlimits[res] = cur
	}
	v, err := procfs.ReadInt(fmt.Sprintf("/proc/%d/oom_score_adj", pid))
	if err != nil {
		return nil, fmt.Errorf("read oom_score_adj of task %d: %w", pid, err)
	}
	st.oomScoreAdj = int32(v)
	st.thpDisabled = bytes.Contains(status, []byte("\nTHP_enabled:\t0\n"))
	st.sched, _ = unix.SchedGetAttr(pid, 0) // only speed depends on it
	return st, nil
}

// restoreRlimits sets the limits from outside with prlimit. A hard limit
// above crtools' own cannot be raised without CAP_SYS_RESOURCE: that is
// an error naming the resource, lowering always works. Limits that
// change wait for the calls queued before (a lower RLIMIT_NOFILE would
// refuse the dup3 of a high fd). initial are the puppet's limits now.
func (p *puppet) restoreRlimits(rl *pb.TaskRlimitsEntry, initial map[int]unix.Rlimit) error {
	pid := p.pid
	ran := false
	for res, e := range rl.GetRlimits() {
		cur, ok := initial[res]
		if !ok {
			if err := unix.Prlimit(pid, res, nil, &cur); err != nil {
				return fmt.Errorf("read rlimit %d of task %d: %w", res, pid, err)
			}
		}
		want := unix.Rlimit{Cur: e.GetCur(), Max: e.GetMax()}
		if want == cur {
			continue
		}
		if !ran {
			if err := p.runPending(); err != nil {
				return err
			}
			ran = true
		}
		if err := unix.Prlimit(pid, res, &want, nil); err != nil {
			return fmt.Errorf("set rlimit %d of task %d to %d/%d (now %d/%d): %w", res, pid, want.Cur, want.Max, cur.Cur, cur.Max, err)
		}
	}
	return nil
}

// puppetMask is the signal mask of a puppet from beginProc on: every
// signal blocked but SIGTRAP (see there).
const puppetMask = ^uint64(0) &^ (1 << (unix.SIGTRAP - 1))

// blockForThreads queues, ahead of the clones of p's threads, the calls
// that make them be born with puppetMask blocked (a clone inherits its
// creator's mask), so that beginProc need not set it in each with a
// PTRACE_SETSIGMASK of its own: p's mask is puppetMask while they are
// cloned, and the mask p had before (read once) right after them (unmask,
// which the caller queues after the last clone). A thread cloned by a
// clone retried outside the queue (queueClone) is a new puppet, not
// masked: beginProc sets its mask as before.
// Preconditions: on the tracer thread; p is stopped.
func (p *puppet) blockForThreads() (unmask func() error, err error) {
	old, err := ptrace.GetSigmask(p.pid)
	if err != nil {
		return nil, fmt.Errorf("read signal mask of task %d: %w", p.pid, err)
	}
	setMask := func(what string, m uint64) error {
		a, err := p.put(u64Bytes([]uint64{m}))
		if err != nil {
			return err
		}
		return p.queuef(what, unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, a, 0, 8)
	}
	if err := setMask("block signals for the threads' clones", puppetMask); err != nil {
		return nil, err
	}
	return func() error { return setMask("unblock signals after the threads' clones", old) }, nil
}

// restoreOtherThreads restores what is per thread (queueThread) in every
// thread of pr but the leader, whose calls join its own batches. Each
// thread has a batch of its own, and all of them run at the same time
// (threadSlot): a round trip per thread, one after the other, cost about
// 4 ms for 50 threads here. Pending signals are not queued here.
func restoreOtherThreads(pr *proc) error {
	t := pr.t
	others := pr.threads[1:]
	if len(others) == 1 {
		th := others[0]
		if err := th.queueThread(t.cores[th.vpid], false); err != nil {
			return err
		}
		return th.runPending()
	}
	tr := pr.threads[0].tr
	for len(others) > 0 {
		n := min(len(others), threadSlots(tr))
		round := others[:n]
		others = others[n:]
		var started []*puppet
		// Whatever fails, every started batch is collected and every
		// thread gets the whole trampoline back.
		finish := func() error {
			var first error
			for _, th := range started {
				if err := th.finishPending(); err != nil && first == nil {
					first = err
				}
				th.tr, th.batch = tr, nil
			}
			started = nil
			return first
		}
		// Every thread's calls queued, then all batches set going at
		// once: one write for every table (startPendingAll).
		var queued []*puppet
		unqueue := func() {
			for _, th := range queued {
				th.tr, th.batch, th.pending, th.scratch = tr, nil, nil, th.scratch[:0]
			}
		}
		for i, th := range round {
			if len(th.pending) > 0 || len(th.scratch) > 0 || th.started != nil {
				unqueue()
				return fmt.Errorf("restore thread %d: calls queued before its own (a bug in crtools)", th.pid)
			}
			th.tr, th.batch = threadSlot(tr, i), nil
			queued = append(queued, th)
			if err := th.queueThread(t.cores[th.vpid], false); err != nil {
				unqueue()
				return err
			}
		}
		serr := startPendingAll(round)
		for _, th := range round {
			if th.started != nil {
				started = append(started, th)
			} else {
				th.tr, th.batch = tr, nil
			}
		}
		if err := finish(); err != nil || serr != nil {
			return errors.Join(serr, err)
		}
	}
	return nil
}

// Thread slots: restoreOtherThreads gives each thread its own part of the
// trampoline's scratch and batch areas, threadSlotSize bytes with the
// table of threadSlotCalls calls at its end (queueThread queues at most
// six calls, and little data: a stack_t and a comm).
const (
	threadSlotCalls = 8
	threadSlotSize  = 1024
)

// threadSlots is how many thread slots the trampoline holds.
func threadSlots(tr *trampoline) int {
	return int((tr.scratchSize + batchTableSize) / threadSlotSize)
}

// threadSlot is the view of slot i of the trampoline tr. It has no page
// copy buffer: a thread's slot never fills pages, and tr.fillBuf belongs
// to the goroutine that copies the process's pages meanwhile (startFill),
// which may be replacing it (a data race, go build -race).
func threadSlot(tr *trampoline, i int) *trampoline {
	return &trampoline{addr: tr.addr, size: tr.size, scratch: tr.scratch + uint64(i)*threadSlotSize,
		scratchSize: threadSlotSize - threadSlotCalls*64, tableCalls: threadSlotCalls,
		xstate: tr.xstate}
}

// restoreLeader restores what is per thread in the leader, except the
// registers, the blocked mask and the credentials (the other threads':
// restoreOtherThreads).
func (p *puppet) restoreLeader(core *pb.CoreEntry) error {
	if err := p.queueThread(core, true); err != nil {
		return err
	}
	// The calls queued run as one batch.
	if err := p.runPending(); err != nil {
		return err
	}
	// Pending signals of this thread.
	return p.queueSignals(core.GetThreadCore().GetSignalsP(), false)
}

// queueThread queues the calls of restoreLeader and restoreOtherThreads.
func (p *puppet) queueThread(core *pb.CoreEntry, leader bool) error {
	tc := core.GetThreadCore()
	// A puppet has no alternate stack (exec and clone with CLONE_VM
	// disable it, fork copies that): the disabled state the kernel
	// reports for it (SS_DISABLE, no stack) needs no call.
	if sas := tc.GetSas(); sas != nil && (sas.GetSsSp() != 0 || sas.GetSsSize() != 0 || sas.GetSsFlags()&^ssDisable != 0) {
		flags := int32(sas.GetSsFlags())
		// SS_ONSTACK is a state, not a flag sigaltstack accepts; only
		// SS_DISABLE and SS_AUTODISARM may be given.
		flags &^= 1 // SS_ONSTACK
		st := stackT{Sp: sas.GetSsSp(), Flags: flags, Size: sas.GetSsSize()}
		a, err := p.put(st.bytes())
		if err != nil {
			return err
		}
		if err := p.queuef("set sigaltstack", unix.SYS_SIGALTSTACK, a, 0); err != nil {
			return err
		}
	}
	if rs := tc.GetRseqEntry(); rs != nil && rs.GetRseqAbiPointer() != 0 {
		if err := p.queuef("register rseq", unix.SYS_RSEQ, rs.GetRseqAbiPointer(), uint64(rs.GetRseqAbiSize()), 0, uint64(rs.GetSignature())); err != nil {
			return err
		}
	}
	if head := tc.GetFutexRla(); head != 0 {
		if err := p.queuef("set robust list", unix.SYS_SET_ROBUST_LIST, head, uint64(tc.GetFutexRlaLen())); err != nil {
			return err
		}
	}
	if ct := core.GetThreadInfo().GetClearTidAddr(); ct != 0 {
		if err := p.queuef("set clear_child_tid", unix.SYS_SET_TID_ADDRESS, ct); err != nil {
			return err
		}
	}
	if comm := threadComm(core, leader); comm != "" && comm != p.comm {
		a, err := p.putString(comm)
		if err != nil {
			return err
		}
		if err := p.queuef("set comm", unix.SYS_PRCTL, unix.PR_SET_NAME, a); err != nil {
			return err
		}
	}
	if sig := tc.GetPdeathSig(); sig != 0 || p.pdeathKill {
		if err := p.queuef("set parent-death signal", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uint64(sig)); err != nil {
			return err
		}
	}
	return nil
}

// ssDisable is SS_DISABLE of sigaltstack.
const ssDisable = 2

// threadComm is the name of the thread with core: its own, or for a
// leader whose thread core has none, the task's.
func threadComm(core *pb.CoreEntry, leader bool) string {
	comm := core.GetThreadCore().GetComm()
	if comm == "" && leader {
		comm = core.GetTc().GetComm()
	}
	return comm
}

// nameEarly gives a new task's leader its dumped name before anything is
// cloned from it: its threads and children, which mostly have the same
// name, are born with it, and queueThread skips theirs.
func (p *puppet) nameEarly(core *pb.CoreEntry) error {
	comm := threadComm(core, true)
	if comm == "" || comm == p.comm {
		return nil
	}
	a, err := p.putString(comm)
	if err != nil {
		return err
	}
	if err := p.queuef("set comm", unix.SYS_PRCTL, unix.PR_SET_NAME, a); err != nil {
		return err
	}
	p.comm = comm
	return nil
}

// queueSignals queues saved siginfos again: rt_tgsigqueueinfo for a
// thread's own queue, rt_sigqueueinfo for the process queue. The puppet
// sends them to itself, which the kernel allows with any si_code.
func (p *puppet) queueSignals(q *pb.SignalQueueEntry, shared bool) error {
	for _, s := range q.GetSignals() {
		si := s.GetSiginfo()
		if len(si) < 12 {
			return fmt.Errorf("queue signal in task %d: siginfo of %d bytes", p.pid, len(si))
		}
		sig := uint64(le.Uint32(si[0:]))
		a, err := p.put(si)
		if err != nil {
			return err
		}
		if shared {
			_, err = p.callf(fmt.Sprintf("queue signal %d", sig), unix.SYS_RT_SIGQUEUEINFO, uint64(p.pid), sig, a)
		} else {
			_, err = p.callf(fmt.Sprintf("queue signal %d", sig), unix.SYS_RT_TGSIGQUEUEINFO, uint64(p.tgid), uint64(p.pid), sig, a)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
