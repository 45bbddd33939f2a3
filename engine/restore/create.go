package restore

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/kernel"
	procfs "github.com/crtools/crtools/engine/proc"
	"github.com/crtools/crtools/engine/ptrace"
)

// PuppetArg is the argument the first puppet is started with. The puppet is
// crtools' own binary, but it never runs Go code: it stops at its exec
// (PTRACE_TRACEME) and crtools takes it over there. The command line only
// makes it recognisable in ps.
const PuppetArg = "__crtools_puppet"

// puppetOptions are the ptrace options of every puppet: a killed crtools
// takes its half-built tasks with it (EXITKILL). Tasks cloned by a puppet
// become traced puppets too: every clone3 crtools injects has
// CLONE_PTRACE, and the new task starts in a SIGSTOP stop, without an
// event stop of its creator, so that clones can run in a batch.
const puppetOptions = unix.PTRACE_O_EXITKILL | unix.PTRACE_O_TRACESYSGOOD

// puppetOptionsNewPidNS add the clone event stops, whose message is the
// new task's pid in crtools' namespace: in a new pid namespace clone3
// returns the pid inside it (ns.go).
const puppetOptionsNewPidNS = puppetOptions | unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACEFORK |
	unix.PTRACE_O_TRACEVFORK

// puppetOptions are the ptrace options of every puppet.
func (r *restorer) puppetOptions() int {
	opts := puppetOptions
	if r.newPidNS() {
		opts = puppetOptionsNewPidNS
	}
	return opts | r.suspendSeccomp()
}

// suspendSeccomp is PTRACE_O_SUSPEND_SECCOMP when a thread of the tree is
// under seccomp (seccomp.go), else 0: the option needs CAP_SYS_ADMIN and a
// crtools outside seccomp, which a tree without seccomp does not need.
func (r *restorer) suspendSeccomp() int {
	if r.img != nil && r.img.seccomp {
		return unix.PTRACE_O_SUSPEND_SECCOMP
	}
	return 0
}

// PidInUseError says a PID the images need belongs to a live process.
type PidInUseError struct {
	Pid  int
	Comm string
}

func (e *PidInUseError) Error() string {
	return fmt.Sprintf("pid %d is in use by a running process (%s); stop it, or restore on a machine where the PID is free, or dump the tree in a PID namespace of its own (dump -n pid of a tree whose root is PID 1 there), whose restore creates a new PID namespace where the PIDs are free", e.Pid, e.Comm)
}

// zombieWait bounds how long restore waits for a zombie or a dying task
// holding a PID it needs to go (some inits reap slowly, and a dump kills
// the task just before a restore wants its PID).
var zombieWait = 10 * time.Second

// pidHolder is what holds a PID restore needs.
type pidHolder int

const (
	pidFree   pidHolder = iota
	pidZombie           // exited, waits for its parent to reap it
	pidDying            // killed or inside do_exit, not a zombie yet
	pidLive
)

// sigkillBit is SIGKILL in a /proc/PID/status signal mask.
const sigkillBit = 1 << (unix.SIGKILL - 1)

// classifyHolder tells from the task's stat (and its status, read only
// when stat says it runs) what holds a PID. A task that is killed but not
// a zombie yet is dying: a dump's SIGKILL (or a parent-death SIGKILL)
// lands on a task that may be scheduled much later on a loaded host, and
// then spends a while in do_exit (PF_EXITING, shown as R or D) releasing
// its memory and pipes before it is a zombie. A SIGKILL can be neither
// blocked nor ignored, so a task with one pending dies too.
func classifyHolder(st *procfs.Stat, status func() (*procfs.Status, error)) pidHolder {
	switch {
	case st.Exited():
		return pidZombie
	case st.IsExiting():
		return pidDying
	}
	if s, err := status(); err == nil && (s.SigPnd|s.ShdPnd)&sigkillBit != 0 {
		return pidDying
	}
	return pidLive
}

// holderOf reads what holds pid (pidFree if nothing does) and its stat.
func holderOf(pid int) (pidHolder, *procfs.Stat, error) {
	st, err := procfs.ReadStat(pid)
	// ESRCH: the task was released while its stat was read.
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return pidFree, nil, nil
	}
	if err != nil {
		return pidLive, nil, fmt.Errorf("check pid %d: %w", pid, err)
	}
	return classifyHolder(st, func() (*procfs.Status, error) { return procfs.ReadStatus(pid) }), st, nil
}

// waitPidsFree waits (bounded) until none of pids exists. A zombie or a
// dying task is waited for; a live process is an error naming it.
func (r *restorer) waitPidsFree(pids []int) error {
	deadline := time.Now().Add(zombieWait)
	for _, pid := range pids {
		logged := false
		for {
			holder, st, err := holderOf(pid)
			if err != nil {
				return err
			}
			if holder == pidFree {
				break
			}
			if holder == pidLive {
				return &PidInUseError{Pid: pid, Comm: st.Comm}
			}
			if !logged {
				if holder == pidDying {
					r.log.Info().Int("pid", pid).Str("state", string(st.State)).Msgf("waiting for PID %d to be released by a task that was killed and is exiting", pid)
				} else {
					r.log.Info().Int("pid", pid).Msgf("waiting for PID %d to be reaped", pid)
				}
				logged = true
			}
			if time.Now().After(deadline) {
				if holder == pidDying {
					return fmt.Errorf("pid %d is still held by a dying task (%s, state %c) after %v", pid, st.Comm, st.State, zombieWait)
				}
				return fmt.Errorf("pid %d is still held by a zombie (%s) after %v: its parent does not reap it", pid, st.Comm, zombieWait)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

// startFirstPuppet starts the first puppet and gives it the trampoline.
// Preconditions: on the tracer thread.
func (r *restorer) startFirstPuppet() (*puppet, error) {
	// syscall.ForkExec, not os/exec: os/exec's first start in a process
	// checks that pidfds work by cloning a child that exits at once, and
	// opens /dev/null once for each of stdin, stdout and stderr (with
	// fcntls and an epoll registration each), 0.15-0.2 ms here. The
	// puppet gets /dev/null on its fds 0-2 all the same, as before.
	devNull, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("start first puppet: %w", err)
	}
	defer unix.Close(devNull)
	start := func(exe string) (int, error) {
		null := uintptr(devNull)
		pid, err := syscall.ForkExec(exe, []string{exe, PuppetArg}, &syscall.ProcAttr{
			Env:   []string{},
			Files: []uintptr{null, null, null},
			// No Setpgid/Setsid: the root inherits crtools' session
			// and group unless the image says it led its own
			// (restoreSession).
			Sys: &syscall.SysProcAttr{Ptrace: true},
		})
		if err != nil {
			return 0, fmt.Errorf("start first puppet %s: %w", exe, err)
		}
		return pid, nil
	}
	// A one-page static executable (puppetelf.go); crtools' own binary
	// when that fails: /proc/self/exe works even when crtools' file was
	// replaced or removed since it started. The puppet runs neither.
	pid := 0
	fd, err := puppetMemfd()
	if err == nil {
		pid, err = start(fmt.Sprintf("/proc/self/fd/%d", fd))
		unix.Close(fd)
	}
	if err != nil {
		r.log.Debug().Err(err).Msg("first puppet is crtools' own binary")
		if pid, err = start("/proc/self/exe"); err != nil {
			return nil, err
		}
	}
	r.created = append(r.created, pid)
	st, err := ptrace.WaitStopped(pid)
	if err != nil {
		return nil, fmt.Errorf("wait for exec stop of first puppet %d: %w", pid, err)
	}
	if st.Sig != int(unix.SIGTRAP) {
		return nil, fmt.Errorf("first puppet %d stopped by signal %d, want SIGTRAP at exec", pid, st.Sig)
	}
	opts := r.puppetOptions()
	if err := ptrace.SetOptions(pid, opts); err != nil {
		if opts&unix.PTRACE_O_SUSPEND_SECCOMP != 0 {
			return nil, fmt.Errorf("trace first puppet %d with PTRACE_O_SUSPEND_SECCOMP, which restoring seccomp filters needs: %w (it needs CAP_SYS_ADMIN, and crtools must not run under seccomp itself)", pid, err)
		}
		return nil, err
	}
	regs, err := ptrace.GetRegs(pid)
	if err != nil {
		return nil, err
	}
	// Until the trampoline exists, inject at the exec entry point: put a
	// syscall instruction there (/proc/PID/mem writes through the
	// read-only text; the page is copied for this process only).
	if _, err := ptrace.WriteMem(pid, uintptr(regs.Rip), trampolineCode); err != nil {
		return nil, fmt.Errorf("prepare first puppet %d: %w", pid, err)
	}
	p := &puppet{pid: pid, vpid: pid, tgid: pid, vtgid: pid, crtoolsFd: -1, regs: regs, log: r.log, tr: &trampoline{addr: regs.Rip}}
	maps, err := readMaps(pid)
	if err != nil {
		return nil, err
	}
	addr, err := r.pickTrampoline(maps)
	if err != nil {
		return nil, err
	}
	got, err := p.callf("map the trampoline", unix.SYS_MMAP, addr, trampolineSize,
		unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0)
	if err != nil {
		return nil, err
	}
	if got != addr {
		return nil, fmt.Errorf("map the trampoline in puppet %d: got %#x, asked for %#x", pid, got, addr)
	}
	// The batch code too (puppet.go, runPending): every puppet
	// inherits both with the mapping.
	code := make([]byte, batchCodeOff, batchCodeOff+ptrace.BatchCodeSize)
	copy(code, trampolineCode)
	code = append(code, ptrace.BatchCode()...)
	if _, err := ptrace.WriteMem(pid, uintptr(addr), code); err != nil {
		return nil, fmt.Errorf("write the trampoline of puppet %d: %w", pid, err)
	}
	r.tramp = &trampoline{addr: addr, size: trampolineSize, scratch: addr + pageSize, scratchSize: trampolineScratch}
	p.tr = r.tramp
	// Nothing but the trampoline is of use in a puppet: unmapping the
	// exec'ed binary, stack and vDSO here (queued, with the next call)
	// rather than in every task makes each clone copy an almost empty
	// mm, and each task's own unmapPuppet find nothing to tear down;
	// page table work is what costs most in a task's restore here.
	if err := p.unmapPuppet(); err != nil {
		return nil, err
	}
	p.bare = true // from its next call on, which runs the unmaps first
	return p, nil
}

type span struct{ start, end uint64 }

// pickTrampoline finds an address range that is free both in the first
// puppet and in every task of the image, so that the trampoline survives
// the unmapping of the puppet and never collides with a restored VMA.
func (r *restorer) pickTrampoline(puppetMaps []span) (uint64, error) {
	used := append([]span(nil), puppetMaps...)
	for _, t := range r.img.tasks {
		if t.mm == nil {
			continue
		}
		for _, v := range t.mm.GetVmas() {
			used = append(used, span{v.GetStart(), v.GetEnd()})
		}
	}
	sort.Slice(used, func(i, j int) bool { return used[i].start < used[j].start })
	// Start at 1 GiB: far from the classic text/heap region and from
	// mmap_min_addr, low enough to be under any mmap base.
	cand := uint64(1 << 30)
	for _, u := range used {
		if u.end <= cand {
			continue
		}
		if u.start >= cand+trampolineSize {
			break
		}
		cand = (u.end + pageSize - 1) &^ (pageSize - 1)
	}
	if cand+trampolineSize > taskSizeMax {
		return 0, fmt.Errorf("no free address range for the restore trampoline")
	}
	return cand, nil
}

// readMaps returns the address ranges of /proc/PID/maps.
func readMaps(pid int) ([]span, error) {
	path := fmt.Sprintf("/proc/%d/maps", pid)
	b, err := procfs.ReadFile(path)
	if err != nil {
		return nil, err
	}
	maps, err := procfs.ParseMaps(b)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	out := make([]span, len(maps))
	for i, m := range maps {
		out[i] = span{m.Start, m.End}
	}
	return out, nil
}

// clone injects clone3 with set_tid = tid into the puppet and returns the
// new task's puppet, stopped. flags and exitSignal are clone3's.
func (p *puppet) clone(flags, exitSignal uint64, tid int) (*puppet, error) {
	// A PID that was checked free can still be busy for a moment: the
	// last thread of a killed process, a zombie being released. Retry
	// while no live process holds it.
	deadline := time.Now().Add(zombieWait)
	for {
		c, err := p.clone1(flags, exitSignal, tid)
		var inUse *PidInUseError
		if !errors.As(err, &inUse) || time.Now().After(deadline) {
			return c, err
		}
		if h, _, serr := holderOf(tid); serr == nil && h == pidLive {
			return c, err
		}
		time.Sleep(time.Millisecond)
	}
}

func (p *puppet) clone1(flags, exitSignal uint64, tid int) (*puppet, error) {
	if err := p.runPending(); err != nil {
		return nil, err
	}
	flags |= unix.CLONE_PTRACE
	argsAddr, err := p.putCloneArgs(flags, exitSignal, tid)
	if err != nil {
		return nil, err
	}
	if err := p.prepare(unix.SYS_CLONE3, []uint64{argsAddr, cloneArgsSize}); err != nil {
		return nil, err
	}
	if err := ptrace.Cont(p.pid, 0); err != nil {
		return nil, err
	}
	// The new task's pid as crtools sees it: the event message of the
	// clone stop. It differs from tid when the task is in a pid
	// namespace of its own (ns.go).
	real := 0
	for {
		st, err := p.waitTrap()
		if err != nil {
			return nil, fmt.Errorf("clone3 task %d in puppet %d: %w", tid, p.pid, err)
		}
		if st.Event == 0 {
			break
		}
		// The PTRACE_EVENT_CLONE/FORK stop comes before the syscall
		// returns; the child is already auto-attached.
		if msg, err := ptrace.GetEventMsg(p.pid); err == nil && msg != 0 {
			real = int(msg)
		}
		if err := ptrace.Cont(p.pid, 0); err != nil {
			return nil, err
		}
	}
	ret, err := p.result(unix.SYS_CLONE3)
	if err != nil {
		if isErrno(err, unix.EEXIST) {
			var comm string
			if st, serr := procfs.ReadStat(tid); serr == nil {
				comm = st.Comm
			}
			return nil, &PidInUseError{Pid: tid, Comm: comm}
		}
		return nil, kernel.IfMissing("clone3-set_tid", fmt.Errorf("clone3 task %d in puppet %d: %w", tid, p.pid, err))
	}
	newNS := flags&unix.CLONE_NEWPID != 0
	if real == 0 {
		real = int(ret)
	}
	// clone3 returns the pid in the caller's namespace: tid, unless the
	// caller is outside the new pid namespace it creates.
	if (!newNS && int(ret) != tid) || (newNS && int(ret) != real) {
		return nil, fmt.Errorf("clone3 task %d in puppet %d: got pid %d", tid, p.pid, ret)
	}
	// A new traced task first stops with SIGSTOP; the next injection
	// resumes it with signal 0, which discards that SIGSTOP.
	st, err := ptrace.WaitStopped(real)
	if err != nil {
		return nil, fmt.Errorf("wait for new task %d: %w", tid, err)
	}
	if st.Sig != int(unix.SIGSTOP) {
		return nil, fmt.Errorf("new task %d stopped by %v, want SIGSTOP", tid, st)
	}
	tgid, vtgid := real, tid
	if flags&unix.CLONE_THREAD != 0 {
		tgid, vtgid = p.tgid, p.vtgid
	}
	lg := p.log.With().Int("pid", tid).Logger()
	if real != tid {
		lg = p.log.With().Int("pid", tid).Int("real_pid", real).Logger()
	}
	return &puppet{pid: real, vpid: tid, tgid: tgid, vtgid: vtgid, crtoolsFd: p.crtoolsFd, tr: p.tr, regs: p.regs, log: lg, bare: p.bare, comm: p.comm}, nil
}

// putCloneArgs puts the clone_args of a clone3 creating tid (set_tid)
// into the scratch area and returns their address.
func (p *puppet) putCloneArgs(flags, exitSignal uint64, tid int) (uint64, error) {
	setTid := make([]byte, 4)
	le.PutUint32(setTid, uint32(tid))
	tidAddr, err := p.put(setTid)
	if err != nil {
		return 0, err
	}
	ca := cloneArgs{Flags: flags, ExitSignal: exitSignal, SetTid: tidAddr, SetTidSize: 1}
	return p.put(ca.bytes())
}

// queueClone is clone for a task in crtools' pid namespace, queued (a
// batch of clones costs one stop of p instead of one each). The returned
// puppet's task exists once p's queue has run (born); created is told it
// then. A PID still busy for a moment (clone's retry) is retried alone.
func (p *puppet) queueClone(flags, exitSignal uint64, tid int, created func(*puppet)) (*puppet, error) {
	c := &puppet{pid: tid, vpid: tid, tgid: tid, vtgid: tid, crtoolsFd: p.crtoolsFd, tr: p.tr, regs: p.regs, bare: p.bare, comm: p.comm,
		log: p.log.With().Int("pid", tid).Logger(), creator: p}
	if flags&unix.CLONE_THREAD != 0 {
		c.tgid, c.vtgid = p.tgid, p.vtgid
	}
	argsAddr, err := p.putCloneArgs(flags|unix.CLONE_PTRACE, exitSignal, tid)
	if err != nil {
		return nil, err
	}
	after := func(ret uint64, err error) error {
		if isErrno(err, unix.EEXIST) {
			n, err := p.clone(flags, exitSignal, tid)
			if err != nil {
				return err
			}
			*c = *n
			created(c)
			return nil
		}
		if err != nil {
			return kernel.IfMissing("clone3-set_tid", fmt.Errorf("clone3 task %d in puppet %d: %w", tid, p.pid, err))
		}
		if int(ret) != tid {
			return fmt.Errorf("clone3 task %d in puppet %d: got pid %d", tid, p.pid, ret)
		}
		// A new traced task first stops with SIGSTOP; the next
		// injection resumes it with signal 0, which discards it.
		st, err := ptrace.WaitStopped(tid)
		if err != nil {
			return fmt.Errorf("wait for new task %d: %w", tid, err)
		}
		c.creator = nil
		created(c)
		if st.Sig != int(unix.SIGSTOP) {
			return fmt.Errorf("new task %d stopped by %v, want SIGSTOP", tid, st)
		}
		return nil
	}
	// mayFail: a failed clone3 must not stop the clones after it
	// (after deals with it).
	return c, p.queue(pendingCall{what: fmt.Sprintf("clone3 task %d", tid), nr: unix.SYS_CLONE3, mayFail: true, after: after},
		[]uint64{argsAddr, cloneArgsSize})
}

// exitAs makes the puppet exit with a wait status as /proc/PID/stat shows
// it: exit_group(code) for a normal exit, death by the signal otherwise.
// The tracer collects the exit here; the task stays a zombie for its real
// parent.
func (p *puppet) exitAs(status uint32) error {
	sig := int(status & 0x7f)
	nr, args := unix.SYS_EXIT_GROUP, []uint64{uint64(status>>8) & 0xff}
	if sig != 0 {
		// No core file from a zombie's re-enacted death.
		if err := unix.Prlimit(p.pid, unix.RLIMIT_CORE, &unix.Rlimit{}, nil); err != nil {
			return fmt.Errorf("disable core dumps of task %d: %w", p.pid, err)
		}
		if err := ptrace.SetSigmask(p.pid, 0); err != nil {
			return err
		}
		nr, args = unix.SYS_TGKILL, []uint64{uint64(p.vtgid), uint64(p.vpid), uint64(sig)}
	}
	if err := p.prepare(nr, args); err != nil {
		return err
	}
	if err := ptrace.Cont(p.pid, 0); err != nil {
		return err
	}
	for {
		st, err := ptrace.WaitStopped(p.pid)
		var ex *ptrace.ExitedError
		if errors.As(err, &ex) {
			return nil
		}
		if err != nil {
			return err
		}
		// Pass the fatal signal on; drop anything else.
		pass := 0
		if sig != 0 && st.Event == 0 && st.Sig == sig {
			pass = sig
		}
		if err := ptrace.Cont(p.pid, pass); err != nil {
			return err
		}
	}
}

// Fd tables (CLONE_FILES) and fs info (CLONE_FS: cwd, root, umask) shared
// between processes are shared again by creating the later task with
// those flags from the earlier one. clone can only make a task share with
// its creator, and the creator must end up as the parent (plain clone) or
// as a sibling (CLONE_PARENT), so a task may share with its parent or with
// a sibling created before it. The table is restored once, by the task
// that got it first; the fs info once, by the last (cloneChild).

// shareSource is where a task's puppet is cloned from and with which
// sharing flags.
type shareSource struct {
	from    *taskImage // the parent, or a sibling (then CLONE_PARENT)
	flags   uint64     // CLONE_FILES and/or CLONE_FS
	files   bool       // the fd table is the one from already has
	fs      bool       // the fs info is the one from already has
	sibling bool
}

// shareSourceOf decides how to create t (not the root, not a zombie) so
// that it shares what it shared at dump. done is the set of tasks created
// before t, in image order.
func shareSourceOf(t *taskImage, done []*taskImage) (shareSource, error) {
	src := shareSource{from: t.parent}
	if t.ids == nil {
		return src, nil
	}
	// The first earlier live task with the same id: the one t must be
	// cloned from for that resource.
	find := func(get func(*taskImage) uint32) *taskImage {
		id := get(t)
		if id == 0 {
			return nil
		}
		// The parent first: the usual case, and no CLONE_PARENT.
		if p := t.parent; p != nil && p.ids != nil && !p.dead() && get(p) == id {
			return p
		}
		for _, o := range done {
			if o != t && o.ids != nil && !o.dead() && get(o) == id {
				return o
			}
		}
		return nil
	}
	filesOf := find(func(x *taskImage) uint32 { return x.ids.GetFilesId() })
	fsOf := find(func(x *taskImage) uint32 { return x.ids.GetFsId() })
	if filesOf != nil && fsOf != nil && filesOf != fsOf {
		return src, fmt.Errorf("task %d shares its fd table with task %d and its fs info with task %d; crtools can only restore sharing with one task: %w",
			t.pid, filesOf.pid, fsOf.pid, errNotYet)
	}
	with := filesOf
	if with == nil {
		with = fsOf
	}
	if with == nil {
		return src, nil
	}
	what := "fd table"
	if filesOf == nil {
		what = "fs info (cwd, root, umask)"
	}
	switch {
	case with == t.parent:
	case with.parent == t.parent:
		src.sibling = true
	default:
		return src, fmt.Errorf("task %d shares its %s with task %d, which is neither its parent nor a sibling; crtools cannot create such a task: %w",
			t.pid, what, with.pid, errNotYet)
	}
	src.from = with
	if filesOf != nil {
		src.files, src.flags = true, src.flags|unix.CLONE_FILES
	}
	if fsOf != nil {
		src.fs, src.flags = true, src.flags|unix.CLONE_FS
	}
	// What the source has but t did not share is copied by the clone
	// (no flag) and restored by t itself.
	return src, nil
}

// cloneChild creates the puppet of t (not the root) from its parent, or
// from the task it shares its fd table or fs info with (shareSourceOf).
// Preconditions: on the tracer thread; every task before t is created.
func (r *restorer) cloneChild(pr *proc, created func(*puppet)) (*puppet, error) {
	t := pr.t
	var done []*taskImage
	for _, p := range r.procs {
		done = append(done, p.t)
	}
	src := shareSource{from: t.parent}
	if !t.dead() {
		var err error
		if src, err = shareSourceOf(t, done); err != nil {
			return nil, err
		}
	}
	from := r.procOf(src.from)
	if from == nil {
		return nil, fmt.Errorf("create task %d: task %d it is cloned from is not created", t.pid, src.from.pid)
	}
	pr.sharedFiles = src.files
	if src.fs {
		// The fs info is restored by the group's last task instead of
		// its first: a chroot there would make every path a later task
		// of the group opens while being restored resolve inside the
		// new root. All of them dumped the same cwd, root and umask.
		from.sharedFS = true
	}
	flags, exitSignal := src.flags, uint64(unix.SIGCHLD)
	if src.sibling {
		// CLONE_PARENT: the sibling's parent becomes t's; clone3 wants
		// exit_signal 0 then, and t inherits the sibling's (SIGCHLD).
		flags, exitSignal = flags|unix.CLONE_PARENT, 0
	}
	return r.clonePuppet(from.threads[0], flags, exitSignal, t.pid, created)
}

// clonePuppet creates a task from p: queued (queueClone) in crtools' pid
// namespace, at once in a new one, where the pid crtools knows it by comes
// from the clone event (clone).
func (r *restorer) clonePuppet(p *puppet, flags, exitSignal uint64, tid int, created func(*puppet)) (*puppet, error) {
	if !r.newPidNS() {
		return p.queueClone(flags, exitSignal, tid, created)
	}
	c, err := p.clone(flags, exitSignal, tid)
	if err != nil {
		return nil, err
	}
	created(c)
	return c, nil
}

// stopWait bounds how long Resume waits for a task restored stopped to be
// in the stopped state.
var stopWait = 2 * time.Second

// waitStopped waits (bounded) until every task that was dumped stopped is
// stopped again. Detaching with the stop signal only queues it: the task
// stops when it next runs, which on a busy machine can be after crtools
// said "restored" and someone looked at it (seen as state R in tests).
// Not stopping in time is no error: the signal is queued and will act.
func (r *restorer) waitStopped() {
	deadline := time.Now().Add(stopWait)
	for _, pr := range r.procs {
		if pr.t.dead() || pr.t.core().GetTc().GetTaskState() != taskStopped {
			continue
		}
		for {
			// The pid in crtools' namespace (the image pid differs
			// when restoring into a new pid namespace), of a live
			// thread (liveThreads: the leader may have exited).
			st, err := procfs.ReadStat(liveThreads(pr)[0].pid)
			if err != nil || st.State == 'T' || time.Now().After(deadline) {
				if err == nil && st.State != 'T' {
					r.log.Debug().Int("pid", liveThreads(pr)[0].pid).Str("state", string(st.State)).Msg("restored stopped task not stopped yet")
				}
				break
			}
			time.Sleep(500 * time.Microsecond)
		}
	}
}
