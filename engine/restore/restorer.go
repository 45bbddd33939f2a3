package restore

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/ns"
	"github.com/crtools/crtools/engine/ptrace"
)

func init() {
	engine.NewRestorer = New
}

// New returns a Restorer for opts (engine.NewRestorer).
func New(opts engine.RestoreOptions) (engine.Restorer, error) {
	if opts.ImagesDir == "" {
		return nil, errors.New("restore: no images directory given (-D)")
	}
	return &restorer{opts: opts, log: opts.Log.With().Str("component", "restore").Logger()}, nil
}

// restorer implements engine.Restorer.
type restorer struct {
	opts engine.RestoreOptions
	log  zerolog.Logger
	img  *imageSet

	tr      *ptrace.Tracer
	tramp   *trampoline
	shm     *shmState
	procs   []*proc // in image order; procs[0] is the root
	created []int   // every task created, puppets included, for Kill
	rootPid int
	// firstPid is the first puppet, killed at the end of CreateTasks
	// and not reaped yet (reapFirst), or 0.
	firstPid int

	waitOnce   sync.Once
	waitStatus int
	waitErr    error
	resumed    bool
	killed     bool

	// Injected syscalls are 3-5x cheaper when the tracer and the puppets
	// share one CPU (no cross-CPU wakeups). CreateTasks pins the tracer
	// thread and the first puppet (every puppet inherits it); Resume puts
	// back crtools' own mask, on the tracer and on every restored thread.
	noPin    bool
	origMask *unix.CPUSet

	ns *ns.Root // namespaces of the root task (ns.go)
	// netLinks are the outside ends of veth pairs made for the root's
	// network namespace; Kill deletes them.
	netLinks []string

	// Memory filled so far and in all, for opts.Progress. Both lanes
	// (lanes.go) and their page-copy goroutines add to fillDone.
	fillDone  atomic.Int64
	fillTotal int64

	// initial is what every puppet has when RestoreState starts, read
	// from the first one restored (state.go).
	initial *initialState
	// lane is the second lane of RestoreState, if any (lanes.go).
	lane *lane
}

// addFilled counts n more bytes of memory filled and reports progress.
// Safe for concurrent use; reports may arrive out of order (see
// engine.RestoreOptions.Progress).
func (r *restorer) addFilled(n int64) {
	r.opts.Progress(r.fillDone.Add(n), r.fillTotal)
}

// proc is one restored process: its image and a puppet per thread.
type proc struct {
	t       *taskImage
	threads []*puppet // the leader first
	done    bool      // state restored; only the final registers remain

	// The fd table / fs info is shared with another task (CLONE_FILES /
	// CLONE_FS) that restores it, once (create.go).
	sharedFiles, sharedFS bool
	// noTrampoline: the trampoline is unmapped (dropTrampoline).
	noTrampoline bool
	// sigtrapIgn is the task's SIGTRAP action when it is SIG_IGN, which
	// dropTrampoline installs (sigtrap.go).
	sigtrapIgn *kernelSigaction
	// lane is the second lane when it restores this process (lanes.go):
	// its tracer drives the puppet from then on.
	lane *lane
	// heir, if set, makes this process a heir of its parent: created by
	// fork from it during RestoreState (inherit.go); heirs are the
	// parent's.
	heir      *heir
	heirs     []*proc
	heirPages []byte // the data of this process's pages, for its heirs
	// pagesRead: the data of this heir's pages, read by its parent's
	// lendHeirPages already (the first heir), for restoreHeir.
	pagesRead []byte
	// ownPages: its own pages data while heirPages holds others' for the
	// forks (lendHeirPages).
	ownPages []byte
}

func (r *restorer) Load(ctx context.Context) error {
	img, err := load(r.opts.ImagesDir)
	if err != nil {
		return err
	}
	root := img.tasks[0]
	if r.opts.Pid != 0 && r.opts.Pid != root.pid {
		return fmt.Errorf("restore: -t %d does not match the root of the images (pid %d)", r.opts.Pid, root.pid)
	}
	for _, t := range img.tasks {
		switch st := t.core().GetTc().GetTaskState(); st {
		case taskAlive, taskStopped:
		case taskDead:
			if t.parent == nil {
				return fmt.Errorf("restore task %d: the root of the tree is a zombie", t.pid)
			}
		default:
			return fmt.Errorf("restore task %d: task state %d: %w", t.pid, st, engine.ErrNotSupported)
		}
	}
	if img.special != nil {
		// Established TCP connections need --tcp-established (inet.go).
		img.special.TCPEstablished = r.opts.TCPEstablished
		img.special.FileLocks = r.opts.FileLocks
		if err := img.special.CheckOptions(); err != nil {
			return err
		}
		if err := img.special.CheckLockOwners(func(pid int) bool {
			return slices.ContainsFunc(img.tasks, func(t *taskImage) bool { return t.pid == pid })
		}); err != nil {
			return err
		}
	}
	if err := r.loadNamespaces(img); err != nil { // ns.go
		return err
	}
	// The SysV segments the tree attached must still be in crtools'
	// IPC namespace, or be in the images with the tree's own (sysv.go).
	if err := r.checkSysVSegments(img); err != nil {
		return err
	}
	if img.special != nil {
		img.special.OwnerByTask = r.newPidNS()
	}
	if img.special != nil {
		// Deleted files the tree had open, mapped or ran are made
		// again, opened for the tasks to take, and deleted again.
		if err := img.special.MakeGhosts(); err != nil {
			return err
		}
	}
	r.img = img
	if r.opts.ShellJob && img.special != nil {
		img.special.ShellTTY = shellTTY() // special.go
	}
	if r.opts.ShellJob {
		// -j: the tree's session is crtools' own (crtools(1)): no task
		// of the root's session starts one, and group leaders lead
		// their group inside crtools' session (shelljob.go).
		shellJobSession(img.tasks)
	}
	r.rootPid = root.pid
	r.shm = newShmState()
	return nil
}

func (r *restorer) RootPid() int { return r.rootPid }

func (r *restorer) CreateTasks(ctx context.Context) error {
	if r.img == nil {
		return errors.New("restore: CreateTasks before Load")
	}
	// Every stop of a puppet would otherwise send SIGCHLD to crtools:
	// the runtime's handler then runs on the tracer thread as its wait4
	// returns (or on another thread it wakes), a few to 60 us each, some
	// 150 times for a tree of 50 processes. wait4 sees the stops all
	// the same.
	if err := ptrace.QuietStops(); err != nil {
		r.log.Debug().Err(err).Msg("SIGCHLD stays signalled for puppet stops")
	}
	var pids []int
	for _, t := range r.img.tasks {
		pids = append(pids, t.tids...)
	}
	// In a new pid namespace every PID is free (ns.go).
	if !r.newPidNS() {
		if err := r.waitPidsFree(pids); err != nil {
			return err
		}
	}
	start := time.Now()
	all := make([]*proc, len(r.img.tasks))
	for i, t := range r.img.tasks {
		all[i] = &proc{t: t}
	}
	r.planHeirs(all) // inherit.go
	r.tr = ptrace.NewTracer()
	err := r.tr.Do(func() error {
		r.pin()
		first, err := r.startFirstPuppet()
		if err != nil {
			return err
		}
		if err := r.giveCrtoolsFd(first); err != nil { // ns.go
			return err
		}
		defer r.dropFirst(first.pid, pids)
		// Tasks are known to Kill once they exist (clones are queued
		// and run in batches: clonePuppet).
		created := r.createdFunc()
		for i, t := range r.img.tasks {
			pr := all[i]
			if pr.heir != nil {
				// Forked from its parent in RestoreState (inherit.go).
				r.procs = append(r.procs, pr)
				continue
			}
			var lead *puppet
			if t.parent == nil {
				// CLONE_PARENT makes crtools the root's parent; clone3
				// then wants exit_signal 0 and the child gets SIGCHLD.
				lead, err = first.clone(unix.CLONE_PARENT|r.nsCloneFlags(), 0, t.pid) // ns.go
				if err == nil {
					created(lead)
				}
			} else {
				// From its parent, or from the task it shares its fd
				// table or fs info with (create.go).
				lead, err = r.cloneChild(pr, created)
			}
			if err != nil {
				return err
			}
			pr.threads = append(pr.threads, lead)
			if t.parent == nil {
				// crtools' pid of the root: not the image's in a new
				// pid namespace.
				r.rootPid = lead.pid
				// Before any child is cloned into them (ns.go).
				if err := r.restoreNamespaces(lead); err != nil {
					return err
				}
			}
			// Its name before its threads and children are cloned
			// from it (state.go).
			if err := lead.nameEarly(t.core()); err != nil {
				return err
			}
			// A session leader starts its session before its children
			// exist, so that they are born into it.
			if t.sid == t.pid {
				if err := lead.queuef("create session (setsid)", unix.SYS_SETSID); err != nil {
					return err
				}
				if err := r.sessionTerminal(lead, t.pid, false); err != nil { // special.go
					return err
				}
			}
			// Threads are born with the puppets' mask (state.go), when
			// their leader exists already (a leader whose own clone is
			// still queued is not there to read its mask from).
			var unmask func() error
			if len(t.tids) > 1 && !r.newPidNS() && lead.creator == nil {
				if unmask, err = lead.blockForThreads(); err != nil {
					return err
				}
			}
			for _, tid := range t.tids[1:] {
				th, err := r.clonePuppet(lead, threadCloneFlags, 0, tid, created)
				if err != nil {
					return fmt.Errorf("create thread %d of task %d: %w", tid, t.pid, err)
				}
				th.masked = unmask != nil
				pr.threads = append(pr.threads, th)
			}
			if unmask != nil {
				if err := unmask(); err != nil {
					return err
				}
			}
			r.procs = append(r.procs, pr)
		}
		// Run the queued clones (and setsids), creators first.
		for _, pr := range r.procs {
			for _, th := range pr.threads {
				if err := th.born(); err != nil {
					return err
				}
				if err := th.runPending(); err != nil {
					return err
				}
			}
		}
		if err := r.setProcessGroups(); err != nil {
			return err
		}
		// Zombies exit now, with their status, so their parents can
		// reap them after the restore.
		for _, pr := range r.procs {
			if pr.t.dead() {
				if comm := pr.t.core().GetTc().GetComm(); comm != "" && comm != pr.threads[0].comm {
					a, err := pr.threads[0].putString(comm)
					if err != nil {
						return err
					}
					if _, err := pr.threads[0].callf("set comm", unix.SYS_PRCTL, unix.PR_SET_NAME, a); err != nil {
						return err
					}
				}
				if err := pr.threads[0].exitAs(pr.t.core().GetTc().GetExitCode()); err != nil {
					return fmt.Errorf("make zombie %d: %w", pr.t.pid, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create tasks: %w", err)
	}
	r.log.Debug().Dur("took", time.Since(start)).Int("tasks", len(r.procs)).Msg("puppets created")
	return nil
}

// threadCloneFlags make a thread that shares everything with its process,
// as pthread_create does. The thread starts on its creator's stack pointer,
// which is harmless: it runs nothing but the trampoline (no stack use)
// until it gets its own registers.
const threadCloneFlags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
	unix.CLONE_THREAD | unix.CLONE_SYSVSEM

// setProcessGroups puts every task into its dumped process group: group
// leaders first (a group must exist before others join it), then members.
// A group whose leader is not in the tree is left as inherited (the root's
// group, crtools' own, as for a shell job).
func (r *restorer) setProcessGroups() error {
	inTree := map[int]bool{}
	for _, pr := range r.procs {
		inTree[pr.t.pid] = true
	}
	for pass := 0; pass < 2; pass++ {
		for _, pr := range r.procs {
			if pr.heir != nil {
				continue // in its parent's group (heirOK), created later
			}
			t := pr.t
			leader := t.pgid == t.pid
			if (pass == 0) != leader || t.sid == t.pid {
				continue // session leaders lead their group already
			}
			cur, err := r.pgidOf(pr)
			if err != nil {
				return fmt.Errorf("read process group of %d: %w", t.pid, err)
			}
			if cur == t.pgid {
				continue
			}
			if !leader && !inTree[t.pgid] {
				r.log.Debug().Int("pid", t.pid).Int("pgid", t.pgid).Msg("process group leader not in the tree; group left as inherited")
				continue
			}
			pgid := uint64(t.pgid)
			if leader {
				pgid = 0
			}
			if _, err := pr.threads[0].callf(fmt.Sprintf("join process group %d", t.pgid), unix.SYS_SETPGID, 0, pgid); err != nil {
				return err
			}
		}
	}
	return nil
}

// pin puts the tracer thread (the caller) on one CPU of its mask; the
// first puppet, started next, inherits it. Failure only costs speed.
// Preconditions: on the tracer thread.
func (r *restorer) pin() {
	if r.noPin {
		return
	}
	var orig unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil {
		return
	}
	var one unix.CPUSet
	if c := nthCPU(&orig, 1); c >= 0 { // lanes.go
		one.Set(c)
	}
	if unix.SchedSetaffinity(0, &one) == nil {
		r.origMask = &orig
	}
}

// unpin gives every restored thread and the tracer thread crtools'
// original CPU mask back. Preconditions: on the tracer thread.
func (r *restorer) unpin() error {
	if r.origMask == nil {
		return nil
	}
	for _, pr := range r.procs {
		if pr.t.dead() {
			continue
		}
		for _, th := range liveThreads(pr) {
			if err := unix.SchedSetaffinity(th.pid, r.origMask); err != nil {
				return fmt.Errorf("restore the CPU affinity of task %d: %w", th.pid, err)
			}
		}
	}
	_ = unix.SchedSetaffinity(0, r.origMask)
	r.origMask = nil
	return nil
}

func (r *restorer) procOf(t *taskImage) *proc {
	for _, p := range r.procs {
		if p.t == t {
			return p
		}
	}
	return nil
}

func (r *restorer) RestoreState(ctx context.Context) error {
	if r.opts.Progress != nil {
		r.fillDone.Store(0)
		r.fillTotal = 0
		for _, pr := range r.procs {
			if !pr.t.dead() && pr.t.pagemap != nil {
				r.fillTotal += pr.t.pagemap.PagesSize
			}
		}
	}
	var err error
	if l := r.planLane(); l != nil { // lanes.go
		err = r.restoreWithLane(l)
	} else {
		// The pages are copied on the CPU the tracer is not pinned to
		// (fillElsewhere); a second lane would work there.
		if c := nthCPU(r.origMask, 2); c >= 0 && runtime.GOMAXPROCS(0) >= 2 {
			var other unix.CPUSet
			other.Set(c)
			r.tramp.fillOn, r.tramp.fillBack = &other, r.origMask
		}
		// One hand-over to the tracer thread for all tasks.
		all := &lane{procs: r.procs, shm: r.shm, vdso: map[vdsoPlace]bool{}, tramp: r.tramp}
		err = r.tr.Do(func() error { return r.restoreProcs(all, nil, nil) })
	}
	if err != nil {
		return err
	}
	for _, pr := range r.procs {
		if !pr.t.dead() && !pr.done {
			return fmt.Errorf("restore task %d: its state was not restored (a bug in crtools)", pr.t.pid)
		}
	}
	// Every task holds its own copies of the special files now; crtools
	// lets go of its own (a pipe whose writer was gone reads EOF again).
	if err := r.img.closeSpecial(true); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	// SysV segments that were removed while attached are removed again,
	// now that the tasks have attached them (engine/ns/sysv.go).
	if err := r.ns.RemoveSysV(r.rootPid); err != nil {
		return fmt.Errorf("restore ipc namespace: %w", err)
	}
	return nil
}

// restoreProcs restores the state of l's processes, one after the other.
// The copy of a task's memory (one at a time: they share a buffer)
// overlaps the injections of the next task's beginProc and of its own
// endProc (state.go). failed, if set, is shared with another lane: set on
// failure, and the work stops when it is. afterFirst, if set, is called
// once the first process is done.
// Preconditions: on the tracer thread of l's puppets.
func (r *restorer) restoreProcs(l *lane, failed *atomic.Bool, afterFirst func()) (err error) {
	if failed != nil {
		defer func() {
			if err != nil {
				failed.Store(true)
			}
		}()
	}
	var prev, filling *procState
	// No copy outlives a failure.
	defer func() {
		if filling != nil {
			_ = filling.waitFill()
		}
	}()
	ended := 0
	end := func(st *procState) error {
		filled, err := r.endProc(st)
		if err != nil {
			return fmt.Errorf("restore task %d: %w", st.pr.t.pid, err)
		}
		st.pr.done = true
		calls := 0
		for _, th := range st.pr.threads {
			calls += th.calls
		}
		r.log.Debug().Int("pid", st.pr.t.pid).Dur("took", time.Since(st.start)).Int64("bytes", filled).
			Dur("populate", st.pr.threads[0].populateTime).Dur("read", st.pr.threads[0].readTime).
			Int("syscalls", calls).Bool("second_lane", st.pr.lane != nil).Msg("task state restored")
		if ended++; ended == 1 && afterFirst != nil {
			afterFirst()
		}
		// Its heirs, forked from it during endProc (inherit.go).
		for _, h := range st.pr.heirs {
			start := time.Now()
			filled, err := r.restoreHeir(h, l)
			if err != nil {
				return fmt.Errorf("restore task %d: %w", h.t.pid, err)
			}
			h.done = true
			if r.opts.Progress != nil && h.t.pagemap != nil {
				// All its memory is in place now, inherited or written
				// (filled counts only the pages written): fillTotal
				// counts the whole of it.
				r.addFilled(h.t.pagemap.PagesSize)
			}
			h.threads[0].log.Info().Int("threads", 1).Int64("bytes", filled).Msg("task state restored")
			r.log.Debug().Int("pid", h.t.pid).Dur("took", time.Since(start)).Int64("bytes", filled).
				Int("syscalls", h.threads[0].calls).Bool("heir", true).Msg("task state restored")
		}
		return nil
	}
	own := l.procs
	next := func() (*proc, error) {
		if len(own) > 0 {
			pr := own[0]
			own = own[1:]
			return pr, nil
		}
		if l.pool == nil {
			return nil, nil
		}
		pr := l.pool.take()
		if pr == nil {
			return nil, nil
		}
		return pr, r.adopt(l, pr) // lanes.go
	}
	for {
		pr, err := next()
		if err != nil {
			return err
		}
		if pr == nil {
			break
		}
		if pr.t.dead() || pr.heir != nil {
			continue // a heir comes with its parent (end)
		}
		if failed != nil && failed.Load() {
			return errLaneStopped
		}
		start := time.Now()
		st, err := r.beginProc(pr, l)
		if err != nil {
			return fmt.Errorf("restore task %d: %w", pr.t.pid, err)
		}
		st.start = start
		if prev != nil {
			// The previous copy is done before this one starts.
			if err := prev.waitFill(); err != nil {
				return fmt.Errorf("restore task %d: %w", prev.pr.t.pid, err)
			}
		}
		st.startFill(r)
		filling = st
		if prev != nil {
			// endProc's fillShmem copies through the same buffer.
			if l.shm.unfilled() {
				_ = st.waitFill() // its error comes with end(st)
			}
			if err := end(prev); err != nil {
				return err
			}
		}
		prev = st
	}
	if prev != nil {
		filling = nil
		return end(prev)
	}
	return nil
}

func (r *restorer) Resume(ctx context.Context) error {
	// Every thread of every task gets its registers first; then all are
	// let go together, so no restored task runs while another is still a
	// puppet. The second lane's tasks (lanes.go) on its own tracer, at
	// the same time.
	finish := func(l *lane) error {
		for _, pr := range r.procs {
			if pr.t.dead() || pr.lane != l {
				continue
			}
			if err := r.finishProc(pr); err != nil {
				return fmt.Errorf("resume task %d: %w", pr.t.pid, err)
			}
		}
		return nil
	}
	unpin := func() error {
		if err := r.unpin(); err != nil {
			return err
		}
		r.shellForeground() // shelljob.go
		return nil
	}
	detach := func(l *lane) error {
		for _, pr := range r.procs {
			if pr.t.dead() || pr.lane != l {
				continue
			}
			if err := detachProc(pr); err != nil {
				return err
			}
		}
		return nil
	}
	var err error
	if r.lane == nil {
		// One hand-over to the tracer thread for all three.
		err = r.tr.Do(func() error {
			if err := finish(nil); err != nil {
				return err
			}
			orig, other := r.origMask, nthCPU(r.origMask, 2)
			if err := unpin(); err != nil {
				return err
			}
			// The tracer detaches from the other CPU: each detached
			// thread wakes on the CPU it last ran on, the tracer's
			// until now, and there it preempted the tracer at once,
			// ran to its restarted syscall and gave the CPU back, two
			// context switches per thread (0.7-1 ms of a 50-thread
			// restore). Now the threads run there while the tracer
			// lets go of the next ones. Failure only costs speed.
			if other >= 0 && pinTo(0, other) == nil { // lanes.go
				defer func() { _ = unix.SchedSetaffinity(0, orig) }()
			}
			return detach(nil)
		})
	} else {
		err = r.onLanes(finish)
		if err == nil {
			err = r.tr.Do(unpin)
		}
		if err == nil {
			err = r.onLanes(detach)
		}
	}
	if err != nil {
		return err
	}
	r.waitStopped() // create.go
	r.reapFirst()
	r.resumed = true
	r.log.Info().Int("pid", r.rootPid).Msg("restored")
	return nil
}

// dropFirst kills the first puppet, which only served to clone the root.
// Its exit and reaping took 0.3-0.4 ms here: it dies on the other CPU, if
// there is one, and Resume reaps it (Kill does on failure: it is in
// r.created). Unless pids, the PIDs of the tree's tasks, hold its PID:
// its zombie keeps the PID until reaped, and a task forked after
// CreateTasks (a heir, cloneHeirs) would be refused it (EEXIST).
func (r *restorer) dropFirst(pid int, pids []int) {
	if c := nthCPU(r.origMask, 2); c >= 0 {
		_ = pinTo(pid, c)
	}
	_ = unix.Kill(pid, unix.SIGKILL)
	r.firstPid = pid
	if slices.Contains(pids, pid) {
		r.reapFirst()
	}
}

// reapFirst reaps the first puppet, killed by CreateTasks (dead by now):
// crtools is its parent.
func (r *restorer) reapFirst() {
	if r.firstPid == 0 {
		return
	}
	if _, err := ptrace.Wait(r.firstPid); err != nil {
		r.log.Debug().Err(err).Int("pid", r.firstPid).Msg("reap the first puppet")
	}
	r.firstPid = 0
}

// onLanes runs f(nil) on the main tracer and, with a second lane
// (lanes.go), f(lane) on its tracer at the same time, and waits for both.
func (r *restorer) onLanes(f func(l *lane) error) error {
	l := r.lane
	if l == nil {
		return r.tr.Do(func() error { return f(nil) })
	}
	lerr := make(chan error, 1)
	go func() { lerr <- l.tr.Do(func() error { return f(l) }) }()
	err := r.tr.Do(func() error { return f(nil) })
	return errors.Join(err, <-lerr)
}

// detachProc lets every thread of pr go.
// Preconditions: on the tracer thread of pr's puppets; finishProc ran.
func detachProc(pr *proc) error {
	for i, th := range liveThreads(pr) {
		// A task that was stopped (job control) is let go with its stop
		// signal, which stops it again at once.
		sig := 0
		if i == 0 && pr.t.core().GetTc().GetTaskState() == taskStopped {
			sig = int(unix.SIGSTOP)
			if s := pr.t.core().GetTc().GetStopSigno(); s != 0 {
				sig = int(s)
			}
		}
		if err := ptrace.Detach(th.pid, sig); err != nil {
			return fmt.Errorf("resume task %d: %w", th.pid, err)
		}
	}
	return nil
}

// Kill kills every task created so far: puppets die (they are traced with
// PTRACE_O_EXITKILL as well), and nothing of the tree stays behind.
func (r *restorer) Kill() error {
	if r.killed || r.tr == nil {
		return nil
	}
	r.killed = true
	var errs []error
	err := r.tr.Do(func() error {
		for i := len(r.created) - 1; i >= 0; i-- {
			pid := r.created[i]
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("kill restored task %d: %w", pid, err))
				continue
			}
		}
		// Reap them: crtools is the parent of the first puppet and
		// the root, and the tracer of all (the second lane's on its own
		// thread, lanes.go: wait4 without __WNOTHREAD collects the
		// tracees of every thread of crtools), so wait4 here collects
		// each (ECHILD: already reaped, or detached earlier, as a
		// parked puppet of the second lane).
		for i := len(r.created) - 1; i >= 0; i-- {
			for {
				_, err := unix.Wait4(r.created[i], nil, unix.WALL, nil)
				if !errors.Is(err, unix.EINTR) {
					break
				}
			}
		}
		// The outside ends of the veth pairs made (ns.go): a failed
		// restore leaves no link behind.
		if err := ns.DeleteLinks(r.netLinks); err != nil {
			errs = append(errs, err)
		}
		r.netLinks = nil
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Wait waits for the root task to exit and returns its status as a shell
// would: the exit code, or 128+signal.
func (r *restorer) Wait() (int, error) {
	r.waitOnce.Do(func() {
		if !r.resumed {
			r.waitErr = errors.New("restore: Wait before Resume")
			return
		}
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(r.rootPid, &ws, 0, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				r.waitErr = fmt.Errorf("wait for restored task %d: %w", r.rootPid, err)
				return
			}
			if ws.Exited() {
				r.waitStatus = ws.ExitStatus()
				return
			}
			if ws.Signaled() {
				r.waitStatus = 128 + int(ws.Signal())
				return
			}
		}
	})
	return r.waitStatus, r.waitErr
}

func (r *restorer) Close() error {
	_ = r.img.closeSpecial(false) // after closeSpecial(true) or a failure
	if r.tr != nil {
		// A restored task that is still a puppet must not survive us.
		if !r.resumed && !r.killed {
			_ = r.Kill()
		}
		// Every task is detached or killed and reaped by now: the
		// thread is not waited for (Release).
		r.tr.Release()
		r.tr = nil
	}
	if r.lane != nil {
		r.lane.tr.Release()
	}
	return nil
}
