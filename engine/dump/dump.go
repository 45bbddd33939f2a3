// Package dump checkpoints a process tree into CRIU-format images without a
// parasite (DESIGN.md, "The engine without a parasite").
//
// Phases (engine.Dumper):
//
//   - Freeze: PTRACE_SEIZE and PTRACE_INTERRUPT every thread of every task
//     of the tree (children found in /proc/PID/task/TID/children), looping
//     until a pass finds no new task or thread: a stopped thread can neither
//     clone nor fork, so a pass that adds nothing proves the tree complete.
//   - Collect: read the state of every task from outside (/proc, ptrace
//     regsets, PTRACE_PEEKSIGINFO, ...) and, for what has no outside
//     interface (sigactions, sigaltstack, itimers, POSIX timer values, a few
//     prctl getters), inject single syscalls. Memory is only scanned here
//     (PAGEMAP_SCAN): which pages exist. Nothing in the tree changes except
//     for the injection window, during which the batch memory (a code page
//     and its tables) is mapped in the task and every register is put back
//     afterwards; a dump whose tree is killed at the end
//     (DumpOptions.KillAtFinish) unmaps it only if the tree is to run on
//     after all (Resume, another Finish: unmapBatches). It runs in three
//     rounds (collectTasks): /proc and the memory map of every task (the
//     smaps read ahead on another goroutine, started by the freeze once its
//     first pass has stopped every thread), then the tracer thread reads
//     the registers and injects into every task at once (injectAll: each
//     step started in all tasks before waiting for the first) while the
//     dump goroutine reads files, ids, namespaces and limits, then the
//     core entries are put together.
//   - WriteImages: write every image; page contents are copied with
//     process_vm_readv in large batches straight into the pages files, by a
//     reader and a writer goroutine working on alternating buffers.
//   - Finish / Resume: detach every thread (kill, leave stopped, or let run),
//     after unmapping the batch memory of a tree that runs on.
//
// Thread rules: every ptrace call goes through the dumper's Tracer (one
// locked OS thread); /proc reads and process_vm_readv run on any goroutine.
package dump

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/proc"
	"github.com/crtools/crtools/engine/ptrace"
)

func init() {
	engine.NewDumper = func(opts engine.DumpOptions) (engine.Dumper, error) { return New(opts) }
}

// Timings says where the time of a dump went (for the benchmark and logs).
type Timings struct {
	Freeze  time.Duration
	Collect time.Duration // includes the page scan
	Copy    time.Duration // copy of page contents out of the tasks (and into a local pages file)
	Write   time.Duration // WriteImages in total (copy overlaps with it)
	Sync    time.Duration // fsync of the images
	Pages   int64         // bytes of page data written
}

// Dumper implements engine.Dumper.
type Dumper struct {
	opts engine.DumpOptions
	log  zerolog.Logger
	tr   *ptrace.Tracer

	mu       sync.Mutex
	tasks    []*task // parents before children; tasks[0] is the root
	byPid    map[int]*task
	frozen   bool
	finished bool
	state    *dumpState // what Collect found
	// earlySmaps are the smaps reads the freeze started once every
	// thread was stopped (freezeTree), by pid, for Collect; nil if none
	// or if the tree changed after they started.
	earlySmaps map[int]chan smapsRead
	bufs       [][]byte // batch buffers for page copies, reused across tasks
	chunks     [][]byte // readers' chunk buffers (write.go), reused likewise

	Timings Timings
}

type task struct {
	pid, ppid, pgid, sid int
	parent               *task
	children             []*task
	threads              []*thread // threads[0] is the leader (unless leaderExited)
	zombie               bool
	// leaderExited: the main thread has exited (pthread_exit in main)
	// while the others run on. The leader, a zombie, is not seized and
	// not in threads (threads[0] is the first live thread); what the
	// kernel shows of the process it shows through a live thread (kpid).
	leaderExited bool
	exitCode     int
	// groupStopped: the task was stopped (SIGSTOP, ...) before we came;
	// it must stay stopped.
	groupStopped bool
	stopSig      int
	// batch is the injections' batch memory left mapped in the task
	// (injectAll with keepBatch), with the `syscall` instruction that
	// unmaps it (unmapBatches); addr 0 if none.
	batch leftBatch
}

// kpid is the tid through which /proc and syscalls see t as a process:
// its pid, or with leaderExited its first live thread's tid (the zombie
// leader has no memory, files, fs or namespaces left to show).
func (t *task) kpid() int {
	if t.leaderExited && len(t.threads) > 0 {
		return t.threads[0].tid
	}
	return t.pid
}

type leftBatch struct {
	addr, syscall uintptr
	size          int
}

type thread struct {
	tid  int
	stop ptrace.StopInfo
	// deferred are signals that arrived while syscalls were injected
	// and that the injector held back; they are queued again on detach.
	deferred []int
}

// New returns a Dumper for the tree rooted at opts.Pid.
func New(opts engine.DumpOptions) (*Dumper, error) {
	if opts.Pid <= 0 {
		return nil, fmt.Errorf("dump: no pid given")
	}
	return &Dumper{
		opts:  opts,
		log:   opts.Log.With().Str("component", "dump").Int("root", opts.Pid).Logger(),
		byPid: map[int]*task{},
	}, nil
}

// taskLog is the logger for the work on one task: its own file with
// --log-pid (opts.PidLog), else the dump's log.
func (d *Dumper) taskLog(pid int) zerolog.Logger {
	if d.opts.PidLog != nil {
		return d.opts.PidLog(pid).With().Str("component", "dump").Logger()
	}
	return d.log.With().Int("pid", pid).Logger()
}

// Pids lists the tasks of the frozen tree.
func (d *Dumper) Pids() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]int, 0, len(d.tasks))
	for _, t := range d.tasks {
		out = append(out, t.pid)
	}
	return out
}

// checkRoot refuses targets we must not touch, with a one-line reason.
func checkRoot(pid int) error {
	if pid == unix.Getpid() {
		return fmt.Errorf("pid %d is crtools itself", pid)
	}
	st, err := proc.ReadStat(pid)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pid %d does not exist", pid)
		}
		return fmt.Errorf("read state of pid %d: %w", pid, err)
	}
	if st.IsKernelThread() {
		return fmt.Errorf("pid %d (%s) is a kernel thread; kernel threads cannot be dumped", pid, st.Comm)
	}
	if pid == 1 {
		// Checked before any ptrace call: init is not touched at all.
		// Killing it would end its PID namespace, and PID 1 can only be
		// given back by a new namespace.
		return fmt.Errorf("pid 1 (%s) is the init process of crtools' PID namespace; it cannot be dumped from inside that namespace", st.Comm)
	}
	if st.State == 'Z' && !isLeaderExited(pid, st.State) {
		return fmt.Errorf("pid %d (%s) is a zombie; there is nothing to dump", pid, st.Comm)
	}
	status, err := proc.ReadStatus(pid)
	if err != nil {
		return fmt.Errorf("read status of pid %d: %w", pid, err)
	}
	if status.Tgid != pid {
		return fmt.Errorf("pid %d is a thread of process %d; dump the process", pid, status.Tgid)
	}
	if status.TracerPid != 0 {
		return fmt.Errorf("pid %d (%s) is already traced by %s; detach the tracer first", pid, st.Comm, describePid(status.TracerPid))
	}
	return nil
}

// describePid names a process for a message: "pid 123 (strace)".
func describePid(pid int) string {
	if st, err := proc.ReadStat(pid); err == nil {
		return fmt.Sprintf("pid %d (%s)", pid, st.Comm)
	}
	return fmt.Sprintf("pid %d", pid)
}

// Freeze seizes and stops the whole tree.
func (d *Dumper) Freeze(ctx context.Context) error {
	start := time.Now()
	if err := checkRoot(d.opts.Pid); err != nil {
		return err
	}
	if d.tr == nil {
		d.tr = ptrace.NewTracer()
	}
	if err := ptrace.QuietStops(); err != nil {
		d.log.Debug().Err(err).Msg("SIGCHLD stays signalled for tracee stops")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.tr.Do(func() error { return d.freezeTree(ctx) })
	if err != nil {
		if rerr := d.tr.Do(d.detachAll); rerr != nil {
			d.log.Error().Err(rerr).Msg("resume after failed freeze")
		}
		d.tasks, d.byPid, d.earlySmaps = nil, map[int]*task{}, nil
		return err
	}
	d.frozen = true
	d.Timings.Freeze = time.Since(start)
	for _, t := range d.tasks {
		tl := d.taskLog(t.pid)
		tl.Info().Int("threads", len(t.threads)).Bool("zombie", t.zombie).Msg("task frozen")
	}
	d.log.Info().Int("tasks", len(d.tasks)).Dur("took", d.Timings.Freeze).Msg("tree frozen")
	return nil
}

// Resume lets every task carry on exactly as before.
func (d *Dumper) Resume() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.frozen {
		return nil
	}
	var err error
	if d.state != nil && d.state.special != nil {
		// A failed dump takes back the hidden names --link-remap made
		// and takes established TCP sockets out of repair mode (and
		// the network lock off) while the tree is still frozen: a
		// task let go first could write to a socket still in repair
		// mode and get EINVAL.
		err = d.state.special.Rollback()
	}
	err = errors.Join(err, d.tr.Do(func() error { return errors.Join(d.unmapBatches(), d.detachAll()) }))
	d.frozen = false
	d.finished = true
	return err
}

// unmapBatches takes the batch memory injectAll left in the tasks
// (DumpOptions.KillAtFinish) away again from a tree that runs on: a failed
// dump (Resume) or a Finish other than a kill. One injected munmap a task,
// settled as every injection of the dump.
// Preconditions: on the tracer thread; every thread of the tree is
// ptrace-stopped.
func (d *Dumper) unmapBatches() error {
	var errs []error
	for _, t := range d.tasks {
		b := t.batch
		if b.addr == 0 {
			continue
		}
		t.batch = leftBatch{}
		in := &ptrace.Injector{Tid: t.kpid(), SyscallAddr: b.syscall, SettleAtEnd: true}
		_, err := in.Syscall(unix.SYS_MUNMAP, b.addr, uintptr(b.size))
		t.threads[0].deferred = append(t.threads[0].deferred, in.Deferred...)
		if err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("unmap the injection memory of pid %d: %w", t.pid, err))
		}
	}
	return errors.Join(errs...)
}

// Finish kills, leaves stopped or resumes the tree after a good dump.
func (d *Dumper) Finish(mode engine.FinishMode) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.frozen {
		return fmt.Errorf("finish dump: tree is not frozen")
	}
	var err error
	// Established TCP sockets dumped in repair mode (engine/files): a
	// tree that lives on gets them out of repair mode first; a killed
	// one's close silently in it (the network lock stays for restore).
	if d.state != nil && d.state.special != nil && mode != engine.FinishKill {
		err = d.state.special.ReleaseTCP(false)
	}
	switch mode {
	case engine.FinishLeaveRunning:
		err = errors.Join(err, d.tr.Do(func() error { return errors.Join(d.unmapBatches(), d.detachAll()) }))
	case engine.FinishLeaveStopped:
		err = errors.Join(err, d.tr.Do(func() error { return errors.Join(d.unmapBatches(), d.detachStopped()) }))
	case engine.FinishKill:
		err = d.tr.Do(d.killAll)
		// Let go of the killed tree without waiting for it (killAll
		// says why): the tracer thread exits and the kernel detaches
		// its tracees. Nor is the thread waited for (Release).
		d.tr.Release()
		d.tr = nil
		if d.state != nil && d.state.special != nil {
			err = errors.Join(err, d.state.special.ReleaseTCP(true))
		}
	default:
		err = fmt.Errorf("finish dump: unknown mode %d", mode)
	}
	d.frozen = false
	d.finished = true
	return err
}

// Close resumes the tree if neither Finish nor Resume ran, and ends the
// tracer thread.
func (d *Dumper) Close() error {
	var err error
	d.mu.Lock()
	frozen := d.frozen
	d.mu.Unlock()
	if frozen {
		err = d.Resume()
	}
	if d.tr != nil {
		d.tr.Close()
		d.tr = nil
	}
	if d.state != nil {
		d.state.closeShmemFiles()
	}
	return err
}

// allThreads returns every seized thread, tasks in tree order.
func (d *Dumper) allThreads() []*thread {
	var out []*thread
	for _, t := range d.tasks {
		out = append(out, t.threads...)
	}
	return out
}
