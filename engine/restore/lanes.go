package restore

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
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
// created on the main tracer (CreateTasks, as always). The processes the
// second lane may take (half of them) are then parked: the main tracer
// has each set PR_SET_PDEATHSIG(SIGKILL) and wait in pause() with every
// signal blocked, and detaches it. Each lane, when it is ready for its
// next process, takes one from the pool (procPool) and seizes and
// interrupts it, which stops it inside pause before it returns to user
// space; the main lane takes from the pool once its own are done, so a
// second lane on a busier CPU restores fewer. A parked puppet is traced by
// nobody until a lane takes it: if crtools dies meanwhile, its parent (a
// puppet, PTRACE_O_EXITKILL, or parked too) dies, and the parent-death
// signal takes it along; any failure runs Kill, which kills it as every
// other task.
//
// Only processes whose restore touches nothing another lane writes go to
// the pool (laneOK): single-threaded, not the root, no session leader,
// nothing shared with another task (memory, fd table, fs info, signal
// handlers), no shared anonymous memory or memfd, no special file (and no
// file lock in the images at all), and every open file either its own or
// also held by the root, which the main lane restores first: the second
// lane starts once the root is done (its files are then in fdOwners, and
// r.initial is read). Each lane has its own page copy buffer, shmem state
// and vDSO placements; fdOwners has a lock.
type lane struct {
	tr    *ptrace.Tracer // nil: the main tracer (r.tr)
	procs []*proc        // restored on this lane, in order, before any of pool
	// pool, shared by both lanes, holds the parked processes: each lane
	// takes the next one when it is ready for it, so a lane whose CPU is
	// busier (other programs) restores fewer.
	pool  *procPool
	tramp *trampoline // the lane's copy (its own fill buffer)
	shm   *shmState
	vdso  map[vdsoPlace]bool
	cpu   int // the CPU the tracer and its puppets run on
	// heirBuf holds a heir's pages data (inherit.go), reused.
	heirBuf []byte
}

// procPool hands out parked processes to the lanes.
type procPool struct {
	mu    sync.Mutex
	procs []*proc
}

// take returns the next parked process, or nil when none is left.
func (q *procPool) take() *proc {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.procs) == 0 {
		return nil
	}
	pr := q.procs[0]
	q.procs = q.procs[1:]
	return pr
}

// minLaneProcs is the fewest processes worth a second lane: handing a
// puppet over costs a few ptrace calls and a wakeup.
const minLaneProcs = 4

// planLane picks the processes of the second lane, or returns nil when
// there is none: fewer than two CPUs, namespaces, file locks. Loggers are
// safe for concurrent use (crtools' are zerolog.SyncWriter's, per-pid ones
// made under a lock), and so is the progress count (addFilled).
func (r *restorer) planLane() *lane {
	if r.origMask == nil || runtime.GOMAXPROCS(0) < 2 || r.opts.ShellJob || r.nsCloneFlags() != 0 || r.anyLocks() {
		return nil
	}
	// The second CPU of crtools' mask (pin took the first).
	cpu := nthCPU(r.origMask, 2)
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
	// Half of the work goes to the pool, from the end of the image
	// order; the main lane restores the rest (the root first) and then
	// helps with what the second lane has not taken: a process that
	// needs no hand-over costs less on the main lane.
	k := min(len(ok), alive/2)
	if k < minLaneProcs {
		return nil
	}
	l := &lane{pool: &procPool{procs: ok[len(ok)-k:]}, shm: newShmState(), vdso: map[vdsoPlace]bool{}, cpu: cpu}
	t := *r.tramp
	t.fillBuf, t.xstate, t.xsBuf = nil, nil, nil
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
	if t.dead() || t == root || pr.heir != nil || len(pr.heirs) > 0 || len(pr.threads) != 1 || t.sid == t.pid || pr.sharedFiles || pr.sharedFS ||
		t.core().GetTc().GetTaskState() != taskAlive || t.ids == nil || t.mm == nil || pr.threads[0].crtoolsFd >= 0 {
		return false
	}
	if t.parent != nil && t.parent.leaderExited() {
		// parkLane's parent-death SIGKILL would come with the parent's
		// leader's exit (exitLeader), which may run first.
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
		if len(h) > 1 && !slices.Contains(h, root) {
			return false // another task could be its first restorer
		}
	}
	return true
}

// parkLane readies the puppets of l's pool for the hand-over and lets
// them go: each waits in pause() with every signal blocked, and dies with
// its parent.
//
// The parent-death signal is set while the puppet is still traced: set
// after the detach (it once was, in the batch that then paused), a crtools
// killed in between would take the parent along (PTRACE_O_EXITKILL) before
// the puppet asked to die with it, and leave it asleep in pause() forever.
// The calls are started in every puppet before the first is waited for.
// queueThread later sets the dumped parent-death signal, also when it is
// none (pdeathKill).
// Preconditions: on the main tracer thread; every puppet of l is stopped.
func (r *restorer) parkLane(l *lane) error {
	for _, pr := range l.pool.procs {
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
		if err := p.startCall(unix.SYS_PRCTL, []uint64{unix.PR_SET_PDEATHSIG, uint64(unix.SIGKILL)}); err != nil {
			return fmt.Errorf("hand task %d over: %w", p.pid, err)
		}
	}
	for _, pr := range l.pool.procs {
		p := pr.threads[0]
		if _, err := p.waitTrap(); err != nil {
			return fmt.Errorf("hand task %d over: set parent-death signal: %w", p.pid, err)
		}
		p.atTrap = true
		if _, err := p.result(unix.SYS_PRCTL); err != nil {
			return fmt.Errorf("hand task %d over: set parent-death signal: %w", p.pid, err)
		}
		p.pdeathKill = true
		// pause() never returns: every signal is blocked.
		if err := p.prepare(unix.SYS_PAUSE, nil); err != nil {
			return fmt.Errorf("hand task %d over: %w", p.pid, err)
		}
		if parkHook != nil {
			if err := parkHook(p); err != nil {
				return err
			}
		}
		if err := ptrace.Detach(p.pid, 0); err != nil {
			return fmt.Errorf("hand task %d over: %w", p.pid, err)
		}
		p.atTrap = false
	}
	return nil
}

// parkHook, when set (by tests only), sees each puppet parkLane hands over
// just before the detach, stopped with its registers set for pause().
var parkHook func(p *puppet) error

// adopt seizes pr's parked puppet for lane l, stops it and pins it to
// l's CPU.
// Preconditions: on l's tracer thread.
func (r *restorer) adopt(l *lane, pr *proc) error {
	p := pr.threads[0]
	if err := ptrace.Seize(p.pid, puppetOptions|r.suspendSeccomp()); err != nil {
		return fmt.Errorf("take task %d over: %w", p.pid, err)
	}
	if err := ptrace.Interrupt(p.pid); err != nil {
		return fmt.Errorf("take task %d over: %w", p.pid, err)
	}
	if _, err := ptrace.WaitInterrupted(p.pid); err != nil {
		return fmt.Errorf("take task %d over: %w", p.pid, err)
	}
	// Only speed depends on it.
	_ = pinTo(p.pid, l.cpu)
	if l.tr != nil { // the main lane's puppets keep pr.lane nil
		pr.lane = l
	}
	p.tr = l.tramp
	return nil
}

// restoreWithLane is RestoreState's work with a second lane l: the main
// lane restores the processes that are not in l's pool on r.tr, then
// takes from the pool; l takes from the pool on a tracer of its own from
// the moment the root is done.
func (r *restorer) restoreWithLane(l *lane) error {
	if err := r.tr.Do(func() error { return r.parkLane(l) }); err != nil {
		return err
	}
	l.tr = ptrace.NewTracer()
	r.lane = l
	r.log.Debug().Int("procs", len(l.pool.procs)).Int("cpu", l.cpu).Msg("second tracer restores processes")
	var failed atomic.Bool
	rootDone, mainDone := make(chan struct{}), make(chan struct{})
	laneErr := make(chan error, 1)
	go func() {
		laneErr <- l.tr.Do(func() error {
			_ = pinTo(0, l.cpu) // only speed depends on it
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
	inPool := map[*proc]bool{}
	for _, pr := range l.pool.procs {
		inPool[pr] = true
	}
	main := &lane{shm: r.shm, vdso: map[vdsoPlace]bool{}, tramp: r.tramp, pool: l.pool, cpu: r.firstCPU()}
	for _, pr := range r.procs {
		if !inPool[pr] {
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

// firstCPU is the CPU pin gave the main tracer: the first of crtools' mask.
func (r *restorer) firstCPU() int {
	return max(nthCPU(r.origMask, 1), 0)
}

// pinTo puts thread tid (0: the calling thread) on cpu (>= 0) alone.
func pinTo(tid, cpu int) error {
	var one unix.CPUSet
	one.Set(cpu)
	return unix.SchedSetaffinity(tid, &one)
}

// nthCPU is the n-th CPU (from 1) of set, or -1 when set has fewer or is
// nil (pin could not pin: r.origMask).
func nthCPU(set *unix.CPUSet, n int) int {
	if set == nil {
		return -1
	}
	for c := 0; c < 1024; c++ {
		if set.IsSet(c) {
			if n--; n == 0 {
				return c
			}
		}
	}
	return -1
}

// errLaneStopped: a lane stopped because the other failed.
var errLaneStopped = errors.New("restore: stopped, another lane failed")
