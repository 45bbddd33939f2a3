package restore

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/ptrace"
)

// Lanes: RestoreState can restore the processes of a tree on two tracer
// threads at once, each pinned to a CPU of its own with its puppets. Most
// of a process's restore is kernel work in its puppet (mmap, open, the
// trampoline's munmap: about 1 ms per process here, under shadow paging),
// which one tracer and its puppets, sharing a CPU, do one process after the
// other; a second tracer does another process's on the other CPU.
//
// ptrace ties a tracee to the thread that attached it, and every clone
// with CLONE_PTRACE is traced by its creator's tracer, so every puppet is
// created on the main tracer (CreateTasks, as always). The second lane's
// puppets are then handed over: the main tracer parks each in pause()
// with every signal blocked (registers at the trampoline's syscall) and
// detaches it, the second tracer seizes and interrupts it, which stops it
// inside pause before it returns to user space. Between the two a parked
// puppet is traced by nobody: a crtools killed in that window (some
// hundred microseconds per process) leaves it asleep in pause, with no
// EXITKILL to end it; Kill, which runs on any failure, kills it as every
// other task.
//
// Only processes whose restore touches nothing another lane writes go to
// the second lane (laneOK): single-threaded, not the root, no session
// leader, nothing shared with another task (memory, fd table, fs info,
// signal handlers), no shared anonymous memory or memfd, no special file
// (and no file lock in the images at all), and every open file either its own or also held
// by the root, which the main lane restores first: the second lane starts
// once the root is done (its files are then in fdOwners, and
// r.initial is read). Each lane has its own page copy buffer, shmem state
// and vDSO placements; fdOwners has a lock.
type lane struct {
	tr    *ptrace.Tracer // nil: the main tracer (r.tr)
	procs []*proc
	tramp *trampoline // the lane's copy (its own fill buffer)
	shm   *shmState
	vdso  map[vdsoPlace]bool
	cpu   int // the CPU the tracer and its puppets run on
}

// minLaneProcs is the fewest processes worth a second lane: handing a
// puppet over costs a few ptrace calls and a wakeup.
const minLaneProcs = 4

// planLane picks the processes of the second lane, or returns nil when
// there is none: fewer than two CPUs, progress reports (one counter),
// namespaces, file locks. Loggers are safe for concurrent use (crtools'
// are zerolog.SyncWriter's, per-pid ones made under a lock).
func (r *restorer) planLane() *lane {
	if r.noLanes || r.origMask == nil || runtime.GOMAXPROCS(0) < 2 || r.opts.Progress != nil ||
		r.opts.ShellJob || r.nsCloneFlags() != 0 || r.anyLocks() {
		return nil
	}
	// The second CPU of crtools' mask (pin took the first).
	cpu, n := -1, 0
	for c := 0; c < 1024; c++ {
		if r.origMask.IsSet(c) {
			if n++; n == 2 {
				cpu = c
				break
			}
		}
	}
	if cpu < 0 {
		return nil
	}
	alive := 0
	for _, pr := range r.procs {
		if !pr.t.dead() {
			alive++
		}
	}
	holders := r.fileHolders()
	var ok []*proc
	for _, pr := range r.procs {
		if r.laneOK(pr, holders) {
			ok = append(ok, pr)
		}
	}
	// Half of the work, from the end of the image order: the main lane
	// starts at the root.
	k := min(len(ok), alive/2)
	if k < minLaneProcs {
		return nil
	}
	l := &lane{procs: ok[len(ok)-k:], shm: newShmState(), vdso: map[vdsoPlace]bool{}, cpu: cpu}
	t := *r.tramp
	t.fillBuf, t.xstate = nil, nil
	l.tramp = &t
	return l
}

// anyLocks tells whether the images hold file locks, which the tasks take
// from engine/files' Restorer (special.go), shared state.
func (r *restorer) anyLocks() bool {
	if r.img.special == nil {
		return false
	}
	for _, t := range r.img.tasks {
		for _, fi := range t.fds {
			if r.img.special.HasLocks(t.pid, int(fi.GetFd())) {
				return true
			}
		}
	}
	return false
}

// fileHolders maps each open file id to the processes that have it.
func (r *restorer) fileHolders() map[uint32][]*taskImage {
	m := map[uint32][]*taskImage{}
	for _, t := range r.img.tasks {
		for _, fi := range t.fds {
			id := fi.GetId()
			if h := m[id]; len(h) == 0 || h[len(h)-1] != t {
				m[id] = append(m[id], t)
			}
		}
	}
	return m
}

// laneOK tells whether pr may be restored on the second lane (see lane).
func (r *restorer) laneOK(pr *proc, holders map[uint32][]*taskImage) bool {
	t := pr.t
	root := r.img.tasks[0]
	if t.dead() || t == root || len(pr.threads) != 1 || t.sid == t.pid || pr.sharedFiles || pr.sharedFS ||
		t.core().GetTc().GetTaskState() != taskAlive || t.ids == nil || t.mm == nil || pr.threads[0].crtoolsFd >= 0 {
		return false
	}
	for _, o := range r.img.tasks {
		if o == t || o.ids == nil {
			continue
		}
		if o.ids.GetVmId() == t.ids.GetVmId() || o.ids.GetFilesId() == t.ids.GetFilesId() ||
			o.ids.GetFsId() == t.ids.GetFsId() || o.ids.GetSighandId() == t.ids.GetSighandId() {
			return false
		}
	}
	for _, v := range t.mm.GetVmas() {
		if v.GetStatus()&vmaAnonShared != 0 {
			return false
		}
		if v.GetStatus()&(vmaFilePrivate|vmaFileShared) != 0 {
			if fe := r.img.files[uint32(v.GetShmid())]; fe == nil || fe.GetReg() == nil {
				return false // a memfd (memfd.go) or unknown
			}
		}
	}
	for _, fi := range t.fds {
		fe := r.img.files[fi.GetId()]
		if fe == nil || fe.GetType() != pb.FdTypes_REG || (r.img.special != nil && r.img.special.Handles(fi.GetId())) {
			return false // a special file (special.go) or unknown
		}
		h := holders[fi.GetId()]
		if len(h) > 1 && !containsTask(h, root) {
			return false // another task could be its first restorer
		}
	}
	return true
}

func containsTask(ts []*taskImage, t *taskImage) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}

// parkLane readies l's puppets for the hand-over and lets them go: each
// waits in pause() with every signal blocked.
// Preconditions: on the main tracer thread; every puppet of l is stopped.
func (r *restorer) parkLane(l *lane) error {
	for _, pr := range l.procs {
		p := pr.threads[0]
		if err := p.born(); err != nil {
			return err
		}
		if len(p.pending) > 0 || p.started != nil {
			return fmt.Errorf("hand task %d over: calls queued (a bug in crtools)", p.pid)
		}
		if err := ptrace.SetSigmask(p.pid, ^uint64(0)); err != nil {
			return err
		}
		regs := p.regs
		regs.Rip = r.tramp.addr // `syscall; int3`: pause never returns here
		regs.Rax = unix.SYS_PAUSE
		regs.Orig_rax = ^uint64(0)
		if err := ptrace.SetRegs(p.pid, &regs); err != nil {
			return err
		}
		if err := ptrace.Detach(p.pid, 0); err != nil {
			return fmt.Errorf("hand task %d over: %w", p.pid, err)
		}
		pr.lane = l
		p.tr = l.tramp
		p.atTrap = false
	}
	return nil
}

// adoptLane seizes l's parked puppets and stops them, pins them and the
// tracer thread to l's CPU.
// Preconditions: on l's tracer thread.
func (r *restorer) adoptLane(l *lane) error {
	var one unix.CPUSet
	one.Set(l.cpu)
	// Only speed depends on these.
	_ = unix.SchedSetaffinity(0, &one)
	for _, pr := range l.procs {
		p := pr.threads[0]
		if err := ptrace.Seize(p.pid, puppetOptions); err != nil {
			return fmt.Errorf("take task %d over: %w", p.pid, err)
		}
		if err := ptrace.Interrupt(p.pid); err != nil {
			return fmt.Errorf("take task %d over: %w", p.pid, err)
		}
	}
	for _, pr := range l.procs {
		p := pr.threads[0]
		if _, err := ptrace.WaitInterrupted(p.pid); err != nil {
			return fmt.Errorf("take task %d over: %w", p.pid, err)
		}
		_ = unix.SchedSetaffinity(p.pid, &one)
	}
	return nil
}

// restoreWithLane is RestoreState's work with a second lane l: the main
// lane restores the other processes on r.tr, l its own on a tracer of its
// own, from the moment the root is done.
func (r *restorer) restoreWithLane(l *lane) error {
	if err := r.tr.Do(func() error { return r.parkLane(l) }); err != nil {
		return err
	}
	l.tr = ptrace.NewTracer()
	r.lane = l
	r.log.Debug().Int("procs", len(l.procs)).Int("cpu", l.cpu).Msg("second tracer restores processes")
	var failed atomic.Bool
	rootDone, mainDone := make(chan struct{}), make(chan struct{})
	laneErr := make(chan error, 1)
	go func() {
		laneErr <- l.tr.Do(func() error {
			if err := r.adoptLane(l); err != nil {
				failed.Store(true)
				return err
			}
			select {
			case <-rootDone:
			case <-mainDone:
			}
			// rootDone is closed before mainDone when the root is
			// restored: both may be closed by now.
			select {
			case <-rootDone:
			default:
				return nil // the main lane failed before the root was done
			}
			return r.restoreProcs(l, &failed, nil)
		})
	}()
	main := &lane{shm: r.shm, vdso: map[vdsoPlace]bool{}, tramp: r.tramp}
	for _, pr := range r.procs {
		if pr.lane == nil {
			main.procs = append(main.procs, pr)
		}
	}
	err := r.tr.Do(func() error {
		return r.restoreProcs(main, &failed, func() { close(rootDone) })
	})
	close(mainDone)
	lerr := <-laneErr
	// The error of the lane that failed, not the other's stop.
	switch {
	case errors.Is(err, errLaneStopped) && lerr != nil:
		return lerr
	case errors.Is(lerr, errLaneStopped) && err != nil:
		return err
	}
	return errors.Join(err, lerr)
}

// errLaneStopped: a lane stopped because the other failed.
var errLaneStopped = errors.New("restore: stopped, another lane failed")
