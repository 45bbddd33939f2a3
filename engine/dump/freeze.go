package dump

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/proc"
	"github.com/crtools/crtools/engine/ptrace"
)

// errVanished says that a task ended while the tree was being frozen.
var errVanished = errors.New("exited while the tree was being frozen")

// maxFreezePasses bounds the seize loop: a tree that still grows after
// this many passes (a fork bomb) makes the dump fail cleanly.
const maxFreezePasses = 64

// freezeTree seizes the tree. Preconditions: on the tracer thread, d.mu held.
// On error the caller detaches whatever was seized.
//
// Each pass seizes and interrupts the threads not seized yet of every task
// it knows, reading children as it goes, and only then waits for the new
// threads to stop: they stop at the same time instead of one after the
// other. Children read from a task whose threads were still on their way
// to the stop may miss a fork of that moment; the next pass, which reads
// every task again once all are stopped, finds it. The pass that finds
// nothing new ran with every thread stopped, which proves the tree
// complete.
func (d *Dumper) freezeTree(ctx context.Context) error {
	root := &task{pid: d.opts.Pid}
	d.tasks = []*task{root}
	d.byPid = map[int]*task{root.pid: root}
	for pass := 0; ; pass++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if pass == maxFreezePasses {
			return fmt.Errorf("freeze tree of pid %d: still changing after %d passes", d.opts.Pid, pass)
		}
		changed := false
		var pending []pendingStop
		var vanished []*task
		var firstErr error
		// d.tasks grows while we walk it: new children are visited in
		// the same pass.
		for i := 0; i < len(d.tasks) && firstErr == nil; i++ {
			t := d.tasks[i]
			if t.zombie {
				continue
			}
			seized, err := d.seizeThreads(t, &pending)
			if err == nil {
				changed = changed || seized
				// Threads seized just now may still be on their
				// way to the stop: their children are read again
				// by the next pass, which then proves the tree
				// complete. Early, only the leader's are read (to
				// find the children in this pass, and seize them
				// with the rest); a child of another thread is
				// found by that next pass all the same.
				var c bool
				c, err = d.findChildren(t, seized)
				changed = changed || c
			}
			if errors.Is(err, errVanished) && t.parent != nil {
				vanished = append(vanished, t)
				continue
			}
			firstErr = err
		}
		// Every thread interrupted in this pass must be in its stop
		// before anything else (a thread still running cannot be
		// detached, and a failed freeze detaches everything).
		for _, p := range pending {
			if err := d.finishStop(p.t, p.th); err != nil {
				if errors.Is(err, errVanished) && p.t.parent != nil {
					vanished = append(vanished, p.t)
					continue
				}
				if firstErr == nil {
					firstErr = err
				}
			}
		}
		if firstErr != nil {
			return firstErr
		}
		for _, t := range vanished {
			if d.byPid[t.pid] != t {
				continue // dropped already, with an ancestor
			}
			// A task of a changing tree ended (or is ending): it is
			// no longer part of it. If it left a zombie, the next
			// pass finds it again among its parent's children.
			d.log.Debug().Int("pid", t.pid).Msg("task vanished while freezing")
			d.dropTask(t)
			changed = true
		}
		if !changed {
			return nil
		}
		// Every thread of every task known is stopped now, and their
		// memory maps cannot change before Collect: read the smaps
		// (the costliest read of a task, some 0.5 ms for 50 threads)
		// while the next pass proves the tree complete. Valid only if
		// that pass changes nothing: a task or thread found by it ran
		// meanwhile, and may share a memory map read here.
		d.earlySmaps = nil
		if pass == 0 {
			d.earlySmaps = startSmaps(d.tasks)
		}
	}
}

// pendingStop is a thread seized and interrupted whose stop freezeTree has
// not waited for yet.
type pendingStop struct {
	t  *task
	th *thread
}

// seizeThreads seizes and interrupts every thread of t not yet seized,
// adding them to pending (see finishStop).
func (d *Dumper) seizeThreads(t *task, pending *[]pendingStop) (bool, error) {
	tids, err := proc.ListTasks(t.pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			return false, fmt.Errorf("task %d %w", t.pid, errVanished)
		}
		return false, fmt.Errorf("list threads of pid %d: %w", t.pid, err)
	}
	known := map[int]bool{}
	for _, th := range t.threads {
		known[th.tid] = true
	}
	if t.leaderExited {
		known[t.pid] = true // a zombie: never seized
	}
	changed := false
	for _, tid := range tids {
		if known[tid] {
			continue
		}
		if len(t.threads) == 0 && tid != t.pid {
			// Seize the leader first so that threads[0] is the leader.
			if err := d.seizeOne(t, t.pid, pending); err != nil {
				return false, err
			}
			known[t.pid] = true
			changed = true
			if tid == t.pid {
				continue
			}
		}
		if err := d.seizeOne(t, tid, pending); err != nil {
			if errors.Is(err, unix.ESRCH) && tid != t.pid {
				// The thread exited between listing and seizing.
				continue
			}
			return false, err
		}
		known[tid] = true
		changed = true
	}
	return changed, nil
}

// seizeOne seizes and interrupts tid of t, without waiting for the stop.
func (d *Dumper) seizeOne(t *task, tid int, pending *[]pendingStop) error {
	if tid == t.pid {
		st, err := proc.ReadStat(t.pid)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("task %d %w", t.pid, errVanished)
			}
			return fmt.Errorf("read state of pid %d: %w", t.pid, err)
		}
		if st.IsKernelThread() {
			return fmt.Errorf("pid %d (%s) is a kernel thread; kernel threads cannot be dumped", t.pid, st.Comm)
		}
		if isLeaderExited(t.pid, st.State) {
			// pthread_exit in main: the other threads are the
			// process (leader.go).
			t.leaderExited = true
			return nil
		}
		if st.State != 'Z' && st.IsExiting() {
			// A leader still on its way out (PF_EXITING) while other
			// threads run on: once seized, it would never stop, and
			// the wait for its stop would last as long as they do.
			if err := refuseLeaderExiting(t.pid, st.Comm); err != nil {
				return err
			}
		}
		if st.State == 'Z' {
			t.zombie, t.exitCode = true, st.ExitCode
			t.ppid, t.pgid, t.sid = st.Ppid, st.Pgrp, st.Session
			return nil
		}
	}
	if tid == t.pid && t.pid == unix.Getpid() {
		// Seizing ourselves fails with a bare EPERM; say why. (The
		// leader is always seized first, see seizeThreads.)
		return fmt.Errorf("the tree of pid %d contains crtools itself (pid %d); dump a tree crtools does not run in", d.opts.Pid, t.pid)
	}
	// No PTRACE_O_EXITKILL: if crtools dies mid-dump the tree must carry on.
	if err := ptrace.Seize(tid, 0); err != nil {
		if errors.Is(err, unix.EPERM) && exitedOrExiting(t.pid, tid) {
			// The kernel refuses to attach to a task that has exited
			// (its exit_state is set: a zombie, or a thread being
			// released) with EPERM, not ESRCH: in a tree that forks
			// and exits this is a task that is gone, like ESRCH below.
			err = fmt.Errorf("thread %d has exited: %w", tid, unix.ESRCH)
		}
		if errors.Is(err, unix.EPERM) {
			if s, serr := proc.ReadStatus(tid); serr == nil && s.TracerPid != 0 {
				who := describePid(tid)
				if tid != t.pid {
					who = fmt.Sprintf("thread %d of %s", tid, describePid(t.pid))
				}
				return fmt.Errorf("%s is already traced by %s; detach the tracer first", who, describePid(s.TracerPid))
			}
			return fmt.Errorf("%s may not be traced by crtools: %w", describePid(t.pid), err)
		}
		if errors.Is(err, unix.ESRCH) && tid == t.pid {
			return fmt.Errorf("task %d %w", t.pid, errVanished)
		}
		return fmt.Errorf("seize thread %d of pid %d: %w", tid, t.pid, err)
	}
	th := &thread{tid: tid}
	t.threads = append(t.threads, th)
	if err := ptrace.Interrupt(tid); err != nil {
		// Seized but not interrupted: wait for nothing; the thread can
		// only have gone (ESRCH), which its stop would say too.
		return d.stopFailed(t, th, err)
	}
	*pending = append(*pending, pendingStop{t, th})
	return nil
}

// exitedOrExiting reports whether thread tid of pid is gone, a zombie, or
// inside do_exit (PF_EXITING): a seize refused with EPERM then says that it
// exited, not that crtools may not trace it.
func exitedOrExiting(pid, tid int) bool {
	st, err := proc.ReadTaskStat(pid, tid)
	if err != nil {
		return errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH)
	}
	return st.Exited() || st.IsExiting()
}

// finishStop waits for the stop of a thread seizeOne interrupted.
func (d *Dumper) finishStop(t *task, th *thread) error {
	var stop ptrace.StopInfo
	var err error
	if th.tid == t.pid && len(t.threads) > 1 {
		// A leader that entered do_exit between seizeOne's look at its
		// state and its seize never stops, and its exit is reported
		// only once the other threads, which we stop, are gone: without
		// giving up, this wait would last for ever.
		stop, err = ptrace.WaitInterruptedOr(th.tid, func() error {
			st, err := proc.ReadStat(t.pid)
			if err != nil || !(st.Exited() || st.IsExiting()) {
				return nil // the wait says what became of it
			}
			return refuseLeaderExiting(t.pid, st.Comm)
		})
	} else {
		stop, err = ptrace.WaitInterrupted(th.tid)
	}
	if err != nil {
		return d.stopFailed(t, th, err)
	}
	th.stop = stop
	if stop.GroupStop() {
		t.groupStopped = true
		t.stopSig = stop.Sig
	}
	if d.log.GetLevel() <= zerolog.DebugLevel && zerolog.GlobalLevel() <= zerolog.DebugLevel {
		// Only then: a task's logger is made for each line (two
		// copies of the logger's context a thread).
		tl := d.taskLog(t.pid)
		tl.Debug().Int("tid", th.tid).Str("stop", stop.String()).Msg("seized")
	}
	return nil
}

func (d *Dumper) stopFailed(t *task, th *thread, err error) error {
	var ex *ptrace.ExitedError
	if errors.As(err, &ex) || errors.Is(err, unix.ESRCH) {
		if th.tid == t.pid || t.parent != nil {
			return fmt.Errorf("thread %d of task %d %w", th.tid, t.pid, errVanished)
		}
		return fmt.Errorf("thread %d of pid %d exited while being frozen", th.tid, t.pid)
	}
	return fmt.Errorf("stop thread %d of pid %d: %w", th.tid, t.pid, err)
}

// findChildren adds the children of every thread of t as new tasks, or
// only of its leader when leaderOnly. The children are complete when every
// thread of t is stopped (so none can fork meanwhile).
func (d *Dumper) findChildren(t *task, leaderOnly bool) (bool, error) {
	threads := t.threads
	if leaderOnly && len(threads) > 1 {
		threads = threads[:1]
	}
	kids, errs := readChildren(t.pid, threads)
	changed := false
	for i, th := range threads {
		err := errs[i]
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			return changed, fmt.Errorf("task %d %w", t.pid, errVanished)
		}
		if err != nil {
			return false, fmt.Errorf("read children of thread %d of pid %d: %w", th.tid, t.pid, err)
		}
		for _, k := range kids[i] {
			if _, ok := d.byPid[k]; ok {
				continue
			}
			c := &task{pid: k, parent: t}
			t.children = append(t.children, c)
			d.tasks = append(d.tasks, c)
			d.byPid[k] = c
			changed = true
		}
	}
	return changed, nil
}

// parallelChildren is the number of threads from which readChildren reads
// on two goroutines.
const parallelChildren = 8

// readChildren reads the children of each of threads of pid. Many threads'
// are read half on another goroutine (any thread may read /proc; the tracer
// thread is only needed for ptrace): each read is an open, a read and a
// close of a /proc file (about 17 us here), 50 of them for a 50-thread task
// in the pass that proves the tree complete, with both CPUs idle (the
// tree is stopped).
func readChildren(pid int, threads []*thread) ([][]int, []error) {
	kids := make([][]int, len(threads))
	errs := make([]error, len(threads))
	read := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			kids[i], errs[i] = proc.ReadChildren(pid, threads[i].tid)
		}
	}
	if len(threads) < parallelChildren {
		read(0, len(threads))
		return kids, errs
	}
	half := len(threads) / 2
	done := make(chan struct{})
	go func() {
		read(half, len(threads))
		close(done)
	}()
	read(0, half)
	<-done
	return kids, errs
}

// dropTask removes t and its descendants from the tree, letting go of
// whatever was seized of them. Preconditions: on the tracer thread.
func (d *Dumper) dropTask(t *task) {
	for _, c := range t.children {
		d.dropTask(c)
	}
	for _, th := range t.threads {
		_ = ptrace.Detach(th.tid, 0)
	}
	delete(d.byPid, t.pid)
	for i, x := range d.tasks {
		if x == t {
			d.tasks = append(d.tasks[:i], d.tasks[i+1:]...)
			break
		}
	}
	if p := t.parent; p != nil {
		for i, x := range p.children {
			if x == t {
				p.children = append(p.children[:i], p.children[i+1:]...)
				break
			}
		}
	}
}

// detachAll lets every seized thread go on as before. A thread that was in
// group-stop stays stopped: the kernel re-arms the group stop on detach
// while the group is stopped. Preconditions: on the tracer thread.
func (d *Dumper) detachAll() error {
	var first error
	for _, t := range d.tasks {
		for _, th := range t.threads {
			for _, sig := range th.deferred {
				// Queued again as it was sent to this thread; only
				// the siginfo details of the original are lost.
				_ = unix.Tgkill(t.pid, th.tid, unix.Signal(sig))
			}
			th.deferred = nil
		}
	}
	for _, th := range d.allThreads() {
		if err := ptrace.Detach(th.tid, 0); err != nil && !errors.Is(err, unix.ESRCH) && first == nil {
			first = fmt.Errorf("detach thread %d: %w", th.tid, err)
		}
	}
	return first
}

// detachStopped leaves every task stopped: a SIGSTOP is queued for each
// process while it is still held, so it stops as soon as it is let go.
func (d *Dumper) detachStopped() error {
	var first error
	for _, t := range d.tasks {
		if t.zombie {
			continue
		}
		if err := unix.Kill(t.pid, unix.SIGSTOP); err != nil && first == nil {
			first = fmt.Errorf("stop pid %d: %w", t.pid, err)
		}
	}
	if err := d.detachAll(); err != nil && first == nil {
		first = err
	}
	return first
}

// killAll sends SIGKILL to every task of the tree and returns without
// waiting for them to go. Every thread is held in a ptrace stop, and a
// SIGKILL makes each one leave its stop straight into do_exit: none runs
// another instruction of its own once kill(2) has returned, which is all
// the dump needs. Waiting for the exits cost 55-90 ms for a task of 1 GiB
// (the kernel frees its memory in exit_mm before the thread is reaped),
// about a fifth of such a dump, for nothing the images need.
//
// The tasks are still traced by the tracer thread: their deaths are
// reported to it first. The caller ends the tracer thread right after
// (Finish): the kernel then detaches every tracee (exit_ptrace), a dying
// task reports to its real parent when it is gone, and a traced zombie is
// handed to its real parent at once. The crtools binary exits anyway; in
// a long-lived process (the executor used as a library) that keeps the
// killed tree from staying zombies of a thread nobody waits on. A restore
// that needs a PID still held by a dying task waits for it, bounded
// (engine/restore).
// Preconditions: on the tracer thread.
func (d *Dumper) killAll() error {
	var first error
	d.dieElsewhere()
	for _, t := range d.tasks {
		if t.zombie {
			continue
		}
		if err := unix.Kill(t.pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) && first == nil {
			first = fmt.Errorf("kill pid %d: %w", t.pid, err)
		}
	}
	return first
}

// dieElsewhere keeps the killed tree off the tracer's CPU: it pins the
// tracer thread (the caller, which Finish ends right after) to the first
// CPU of its mask and every thread of the tree to the others. A SIGKILL
// wakes each thread where it last ran, and a woken thread preempted the
// tracer there at once: in an ftrace of a 50-thread dump the tracer was
// back 3.3 ms after the kill, queued behind the exit of the process's last
// thread (the teardown of its address space, 3 ms) while the other CPU was
// idle. The dying threads never run user code again, so their mask is no
// one's concern; only a crtools killed between these calls and the kill
// leaves the tree running on fewer CPUs. Nothing happens with one CPU;
// failure only costs speed.
// Preconditions: on the tracer thread.
func (d *Dumper) dieElsewhere() {
	var mask, own, rest unix.CPUSet
	if unix.SchedGetaffinity(0, &mask) != nil {
		return
	}
	for c := 0; c < len(mask)*64; c++ {
		if !mask.IsSet(c) {
			continue
		}
		if own.Count() == 0 {
			own.Set(c)
		} else {
			rest.Set(c)
		}
	}
	if rest.Count() == 0 || unix.SchedSetaffinity(0, &own) != nil {
		return
	}
	for _, th := range d.allThreads() {
		_ = unix.SchedSetaffinity(th.tid, &rest)
	}
}
