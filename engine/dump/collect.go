package dump

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/files"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/ns"
	"github.com/crtools/crtools/engine/pagemap"
	"github.com/crtools/crtools/engine/proc"
	"github.com/crtools/crtools/engine/ptrace"
)

// Task states of CRIU's TaskCoreEntry.task_state.
const (
	taskAlive   = 1
	taskDead    = 2
	taskStopped = 3
)

// Task flags kept in TaskCoreEntry.flags (PF_FORKNOEXEC, PF_RANDOMIZE).
const keptTaskFlags = 0x00000040 | 0x00400000

// dumpState is everything Collect found, ready to be written.
type dumpState struct {
	files      fileTable
	shmem      map[uint64]*shmemObj
	shmemOrder []*shmemObj
	tasks      []*taskState
	nextKobj   uint32
	// sockets are the first socket descriptor of each task that holds
	// one (collectFd), by pid: -n net refuses them (engine/ns).
	sockets map[int]socketFd
	// scanVec is the PAGEMAP_SCAN result buffer of scanPages (mem.go),
	// one for every task: they are scanned one after the other.
	scanVec []pagemap.Region
	// stats are the /proc/PID/stat of every task (collectState), by pid:
	// engine/files takes sessions and terminals from them.
	stats map[int]*proc.Stat
	// smaps are the memory maps read ahead (readAheadSmaps), by pid;
	// only the goroutine that collects reads the map itself.
	smaps map[int]chan smapsRead
	// kobjs find the mms, fd tables and fs infos tasks share.
	kobjs   struct{ vm, files, fs files.KcmpIndex }
	nsIDs   map[string]uint32
	rootIDs *pb.TaskKobjIdsEntry
	ns      *ns.Dump // namespaces (-n), engine/ns
	// special dumps pipes, sockets, eventfd, epoll, ... (engine/files);
	// its entries share the id space of files.
	special *files.Dumper
	// seccomp is seccomp.img (seccomp.go).
	seccomp seccompImage
	// sysv are the SysV shared memory attachments of every task
	// (sysv.go), in the order collected.
	sysv []sysvAttach
}

type taskState struct {
	t *task
	// vtids are the tids in the images, the leader's first: t's own
	// unless the tree is dumped with its pid namespace (innerPids).
	vtids  []int
	pstree *pb.PstreeEntry
	cores  []*pb.CoreEntry // one per thread, threads[0] first
	ids    *pb.TaskKobjIdsEntry
	mm     *pb.MmEntry
	pages  []pageRange
	fs     *pb.FsEntry
	fds    []*pb.FdinfoEntry
	// statuses are the /proc status of each thread, threads[0] first
	// (nil for a zombie): innerPids takes the namespace ids from them,
	// readSeccomp the seccomp mode. They are read before any injection
	// (collectState, collectRest).
	statuses []*proc.Status
	// nsLinks are the /proc/PID/ns links read for the ids, by name.
	nsLinks map[string]string
}

// Collect reads the state of the frozen tree.
func (d *Dumper) Collect(ctx context.Context) error {
	start := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.frozen {
		return fmt.Errorf("collect: tree is not frozen")
	}
	s := &dumpState{nsIDs: map[string]uint32{}, stats: map[int]*proc.Stat{}}
	s.kobjs.vm.Type, s.kobjs.files.Type, s.kobjs.fs.Type = files.KcmpVM, files.KcmpFiles, files.KcmpFS
	var tree []int
	for _, t := range d.tasks {
		tree = append(tree, t.pid)
	}
	s.special = files.NewDumper(files.Options{
		Tree: tree, ExtUnixSk: d.opts.ExtUnixSk, FileLocks: d.opts.FileLocks, ShellJob: d.opts.ShellJob,
		LinkRemap: d.opts.LinkRemap, GhostLimit: d.opts.GhostLimit, TCPSkipInFlight: d.opts.TCPSkipInFlight, EvasiveDevices: d.opts.EvasiveDevices, Log: d.log,
		TCPEstablished: d.opts.TCPEstablished, NextID: func() uint32 { s.files.next++; return s.files.next },
		// Every task's stat is read (collectState) before any descriptor
		// is dumped (collectMid), on the same goroutine.
		TaskStat: func(pid int) *proc.Stat { return s.stats[pid] },
	})
	defer s.special.Close()
	if err := d.collectTree(ctx, s); err != nil {
		s.closeShmemFiles()
		if rerr := s.special.Rollback(); rerr != nil {
			d.log.Warn().Err(rerr).Msg("undo link-remap")
		}
		return err
	}
	d.state = s
	d.Timings.Collect = time.Since(start)
	d.log.Info().Dur("took", d.Timings.Collect).Msg("state collected")
	return nil
}

// collectTree collects the tasks of the tree into s, then their namespaces
// (engine/ns). On an error Collect undoes what s.special did (link-remap).
func (d *Dumper) collectTree(ctx context.Context, s *dumpState) error {
	if err := d.collectTasks(ctx, s); err != nil {
		return err
	}
	if len(s.tasks) == 0 {
		return nil
	}
	s.rootIDs = s.tasks[0].ids
	// Namespaces (engine/ns): refuse foreign ones not asked for with
	// -n, read the asked ones of the root.
	var pids []int
	var ids []*pb.TaskKobjIdsEntry
	links := map[int]map[string]string{}
	for _, ts := range s.tasks {
		if ts.t.zombie {
			continue // a zombie has no namespaces left to read
		}
		pids, ids = append(pids, ts.t.pid), append(ids, ts.ids)
		links[ts.t.pid] = ts.nsLinks
	}
	seen := ns.Seen{
		Link: func(pid int, name string) (string, error) {
			if l, ok := links[pid][name]; ok {
				return l, nil
			}
			l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, name))
			if err != nil {
				return "", fmt.Errorf("read %s namespace of %d: %w", name, pid, err)
			}
			return l, nil
		},
		// collectFds went through every descriptor of every live task.
		Socket: func(pid int) (int, string, bool) {
			sk, ok := s.sockets[pid]
			return sk.fd, sk.link, ok
		},
	}
	if st := s.tasks[0].statuses; len(st) > 0 {
		seen.RootStatus = st[0]
	}
	nsd, err := ns.CollectWith(pids, ids, d.opts.Namespaces, seen)
	if err != nil {
		return err
	}
	s.ns = nsd
	if !slices.Contains(d.opts.Namespaces, "ipc") {
		// Every task is in crtools' IPC namespace (CollectWith):
		// the segments they attach live on there (sysv.go).
		if err := checkSysVOwn(s.sysv); err != nil {
			return err
		}
	} else if err := s.addSysVSegments(nsd.SysVShm(), s.tasks[0].t.pid); err != nil {
		return err
	}
	if slices.Contains(d.opts.Namespaces, "pid") {
		if err := s.innerPids(); err != nil {
			return err
		}
	}
	return nil
}

// taskKobjIDs gives pid the ids of its mm, fd table, fs info and signal
// handler table: those of a task collected before that shares them (kcmp),
// or new ones.
func (s *dumpState) taskKobjIDs(pid int) (*pb.TaskKobjIdsEntry, error) {
	ids := &pb.TaskKobjIdsEntry{}
	for _, k := range []struct {
		ix  *files.KcmpIndex
		dst **uint32
	}{{&s.kobjs.vm, &ids.VmId}, {&s.kobjs.files, &ids.FilesId}, {&s.kobjs.fs, &ids.FsId}} {
		id, _, err := k.ix.Find(pid, 0, s.kobjID)
		if err != nil {
			return nil, fmt.Errorf("compare kernel objects of pid %d: %w", pid, err)
		}
		*k.dst = proto.Uint32(id)
	}
	// A signal handler table is shared only between tasks that share
	// their mm: CLONE_SIGHAND requires CLONE_VM, and execve, the only way
	// to a new mm, unshares the handlers too. So only the tasks with the
	// same mm are asked.
	for _, o := range s.tasks {
		if o.ids == nil || o.ids.GetVmId() != ids.GetVmId() {
			continue
		}
		r, err := files.Kcmp(pid, o.t.kpid(), files.KcmpSighand, 0, 0)
		if err != nil {
			return nil, fmt.Errorf("compare signal handlers of pid %d with pid %d: %w", pid, o.t.pid, err)
		}
		if r == 0 {
			ids.SighandId = proto.Uint32(o.ids.GetSighandId())
			break
		}
	}
	if ids.SighandId == nil {
		ids.SighandId = proto.Uint32(s.kobjID())
	}
	return ids, nil
}

func (s *dumpState) kobjID() uint32 {
	s.nextKobj++
	return s.nextKobj
}

// nsID numbers namespaces by their inode, as CRIU's ns ids.
// The link read is kept in ts.nsLinks (for ns.CollectWith).
func (s *dumpState) nsID(ts *taskState, ns string) (uint32, error) {
	pid := ts.t.kpid()
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
	if err != nil {
		return 0, fmt.Errorf("read %s namespace of pid %d: %w", ns, pid, err)
	}
	if ts.nsLinks == nil {
		ts.nsLinks = map[string]string{}
	}
	ts.nsLinks[ns] = link
	if id, ok := s.nsIDs[link]; ok {
		return id, nil
	}
	id := uint32(len(s.nsIDs) + 1)
	s.nsIDs[link] = id
	return id, nil
}

// collectTasks collects every task of the tree into s.tasks, in three
// rounds: what /proc tells of each task (and its memory map), then, on the
// tracer thread, the registers of every thread and the injected getters of
// every task at once (injectAll: a few round trips for the whole tree),
// then the rest of each task (files, ids, cores).
//
// The tracer reads each task's registers as soon as its state and status
// are read (collectState), while this goroutine reads the rest of its start
// (collectRest: timers, memory map) and the next tasks': a 50-thread
// task's 250 register reads then overlap the read of its memory map. It
// injects only once every start is done: no /proc read of the first round
// sees the injections' mapping. The scan of the pages to save waits for the
// third round (collectMid), which runs while the tracer injects.
func (d *Dumper) collectTasks(ctx context.Context, s *dumpState) error {
	s.readAheadSmaps(d.tasks, d.earlySmaps)
	d.earlySmaps = nil
	// toRegs never blocks: room for every task.
	toRegs := make(chan *collecting, len(d.tasks))
	// startsDone says, once every start is done, whether all went well
	// (the tracer then injects).
	startsDone := make(chan bool, 1)
	// The tracer thread reads the registers and injects while this
	// goroutine reads what needs neither (files, ids, namespaces, limits,
	// threads' status): the two run on both CPUs at once. They share
	// nothing they write (the tracer sets regs, shared and job of each
	// collecting and the threads' deferred signals; collectRest and
	// collectMid the rest).
	traced := make(chan error, 1)
	// regsRead is closed once every thread's registers are read: the
	// tracer writes no collecting's regs after it (the injections only
	// read them).
	regsRead := make(chan struct{})
	go func() {
		traced <- d.tr.Do(func() error {
			var started []*collecting
			for c := range toRegs {
				started = append(started, c)
				if c.ts.t.zombie {
					continue
				}
				if err := c.readRegs(); err != nil {
					return err
				}
			}
			if !<-startsDone {
				return errStartFailed
			}
			close(regsRead)
			// Seccomp before any injection: a filter crtools cannot
			// restore is refused with the tree untouched, and the
			// injections run with seccomp suspended (seccomp.go).
			for _, c := range started {
				if c.ts.t.zombie {
					continue
				}
				if err := c.readSeccomp(); err != nil {
					return err
				}
			}
			var jobs []*injectJob
			for _, c := range started {
				if c.ts.t.zombie {
					continue
				}
				c.job = &injectJob{t: c.ts.t, status: c.status, timers: c.timers, vdsoStart: c.vdsoStart, vdsoEnd: c.vdsoEnd, regs: c.regs}
				jobs = append(jobs, c.job)
			}
			injectAll(jobs, d.opts.KillAtFinish)
			for _, j := range jobs {
				if j.err != nil {
					return j.err
				}
			}
			return nil
		})
	}()
	var cs []*collecting
	var startErr error
	for _, t := range d.tasks {
		if startErr = ctx.Err(); startErr != nil {
			break
		}
		var c *collecting
		if c, startErr = d.collectState(s, t); startErr != nil {
			break
		}
		toRegs <- c
		if !t.zombie {
			if startErr = s.collectRest(c); startErr != nil {
				break
			}
		}
		cs = append(cs, c)
	}
	close(toRegs)
	startsDone <- startErr == nil
	if startErr != nil {
		<-traced // registers only: nothing to undo
		return startErr
	}
	var midErr error
	for _, c := range cs {
		if midErr = ctx.Err(); midErr != nil {
			break
		}
		if c.ts.t.zombie {
			s.tasks = append(s.tasks, c.ts)
			continue
		}
		if midErr = d.collectMid(s, c); midErr != nil {
			break
		}
		s.tasks = append(s.tasks, c.ts)
	}
	// The threads' core entries while the tracer injects (or after it,
	// if it was done first); none if it failed.
	var trErr error
	traceDone := false
	if midErr == nil {
		select {
		case <-regsRead:
		case trErr = <-traced:
			traceDone = true
		}
		if trErr == nil {
			midErr = threadCores(cs)
		}
	}
	// Always wait: a failed collection leaves the tree only once every
	// injection is undone.
	if !traceDone {
		trErr = <-traced
	}
	if midErr != nil {
		return midErr
	}
	if trErr != nil {
		return trErr
	}
	for _, c := range cs {
		if c.ts.t.zombie {
			continue
		}
		if err := c.cores(); err != nil {
			return err
		}
		cores := c.ts.cores
		if c.ts.t.leaderExited {
			cores = cores[1:] // c.seccomp is the live threads'
		}
		s.seccomp.setThreads(cores, c.seccomp)
	}
	return nil
}

// errStartFailed tells the tracer's round of collectTasks that a start
// failed: no injection.
var errStartFailed = errors.New("collect: a task's start failed")

// smapsRead is a /proc/PID/smaps read ahead.
type smapsRead struct {
	maps []proc.Mapping
	err  error
}

// readAheadSmaps reads the smaps of every task, in order, on a goroutine of
// its own: the kernel's walk of each memory map (the costliest /proc read
// of a task) runs on the other CPU while collectTasks works through the
// tasks before. Every read is over before the injections of the tracer
// round (collectRest takes each result), so none sees their mapping.
// early are the reads the freeze started already (startSmaps), used when
// they are of exactly these tasks.
func (s *dumpState) readAheadSmaps(tasks []*task, early map[int]chan smapsRead) {
	if len(early) == len(tasks) {
		all := true
		for _, t := range tasks {
			if _, ok := early[t.pid]; !ok {
				all = false
				break
			}
		}
		if all {
			s.smaps = early
			return
		}
	}
	s.smaps = startSmaps(tasks)
}

// startSmaps starts reading the smaps of tasks, in order, on a goroutine
// of its own (readAheadSmaps); each result comes on the channel of its
// pid.
func startSmaps(tasks []*task) map[int]chan smapsRead {
	out := map[int]chan smapsRead{}
	pids := make([]int, len(tasks))
	chans := make([]chan smapsRead, len(tasks))
	for i, t := range tasks {
		pids[i] = t.kpid()
		chans[i] = make(chan smapsRead, 1) // never blocks the reader
		out[pids[i]] = chans[i]
	}
	// The goroutine sees only pids and chans, never the map.
	go func() {
		for i, pid := range pids {
			m, err := proc.ReadSmaps(pid)
			chans[i] <- smapsRead{m, err}
		}
	}()
	return out
}

// readSmaps returns the smaps of pid read ahead, or reads them now; a
// failed read ahead is done again here, so its error is the current one.
func (s *dumpState) readSmaps(pid int) ([]proc.Mapping, error) {
	if ch, ok := s.smaps[pid]; ok {
		delete(s.smaps, pid)
		if r := <-ch; r.err == nil {
			return r.maps, nil
		}
	}
	return proc.ReadSmaps(pid)
}

// collecting is a task between the rounds of collectTasks.
type collecting struct {
	// leaderName and leaderStatus are a leaderExited task's zombie
	// leader's comm (the process's name) and status (its own
	// credentials, which kill's permission check uses): c.st and
	// c.status are a live thread's.
	leaderName         string
	leaderStatus       *proc.Status
	ts                 *taskState
	st                 *proc.Stat
	status             *proc.Status
	timers             []proc.PosixTimer
	vmas               []*pb.VmaEntry
	scan               []scanVMA // the mappings whose pages collectMid scans
	vdsoStart, vdsoEnd uintptr
	regs               []threadRegs // per thread, threads[0] first
	shared             [][]byte     // process-wide pending signals
	job                *injectJob
	// seccomp is every thread's seccomp state, threads[0] first; nil
	// when none is under seccomp (readSeccomp, on the tracer).
	seccomp []threadSeccomp

	// What collectMid read for cores.
	auxv     []uint64
	exeID    uint32
	outside  outsideCore
	thSched  []threadSchedInfo // per thread
	thRobust [][2]uint64       // per thread: robust list head and length
	// thCores are the threads' core entries, threads[0] first, made by
	// the collecting goroutine while the tracer injects (threadCores)
	// with everything but what the injections tell (cores fills that
	// in).
	thCores []*pb.CoreEntry
}

type threadRegs struct {
	regs    ptrace.Regs
	xstate  []byte
	sigmask uint64
	sigs    [][]byte
	rseq    ptrace.RseqConfig
}

// collectState reads the state of t (a zombie is done here) and its
// status: all readRegs needs.
func (d *Dumper) collectState(s *dumpState, t *task) (*collecting, error) {
	pid := t.pid
	ts := &taskState{t: t}
	c := &collecting{ts: ts}
	st, err := proc.ReadStat(pid)
	if err != nil {
		return nil, fmt.Errorf("read state of pid %d: %w", pid, err)
	}
	if t.leaderExited {
		// The zombie leader's own stat has no memory layout: the
		// process's is read through a live thread.
		c.leaderName = st.Comm
		if c.leaderStatus, err = proc.ReadStatus(pid); err != nil {
			return nil, fmt.Errorf("read status of the exited main thread of pid %d: %w", pid, err)
		}
		if st, err = proc.ReadStat(t.kpid()); err != nil {
			return nil, fmt.Errorf("read state of pid %d through thread %d: %w", pid, t.kpid(), err)
		}
	}
	c.st = st
	s.stats[pid] = st
	t.pgid, t.sid = st.Pgrp, st.Session
	// A task that was seized while already exiting (PF_EXITING: it
	// cannot stop, and its namespaces and files are going away) is
	// dumped as the zombie it is about to become; its exit code is set
	// already.
	if (st.State == 'Z' || st.IsExiting()) && t.parent != nil && !t.leaderExited {
		if err := refuseLeaderExiting(pid, st.Comm); err != nil {
			return nil, err
		}
		t.zombie, t.exitCode = true, st.ExitCode
	}
	ppid := uint32(0)
	if t.parent != nil {
		ppid = uint32(t.parent.pid)
	}
	ts.pstree = &pb.PstreeEntry{Pid: proto.Uint32(uint32(pid)), Ppid: proto.Uint32(ppid),
		Pgid: proto.Uint32(uint32(st.Pgrp)), Sid: proto.Uint32(uint32(st.Session))}
	if t.leaderExited {
		ts.pstree.Threads = append(ts.pstree.Threads, uint32(pid)) // its core: cores
	}
	for _, th := range t.threads {
		ts.pstree.Threads = append(ts.pstree.Threads, uint32(th.tid))
	}
	if t.zombie {
		ts.pstree.Threads = []uint32{uint32(pid)}
		ts.cores = []*pb.CoreEntry{{
			Mtype: pb.CoreEntry_X86_64.Enum(),
			Tc: &pb.TaskCoreEntry{TaskState: proto.Uint32(taskDead), ExitCode: proto.Uint32(uint32(st.ExitCode)),
				Personality: proto.Uint32(0), Flags: proto.Uint32(0), BlkSigset: proto.Uint64(0), Comm: proto.String(st.Comm)},
		}}
		return c, nil
	}
	status, err := proc.ReadStatus(t.kpid())
	if err != nil {
		return nil, fmt.Errorf("read status of pid %d: %w", pid, err)
	}
	c.status = status
	ts.statuses = []*proc.Status{status}
	return c, nil
}

// collectRest reads the rest of what /proc tells of a live task before any
// injection: its POSIX timers and memory map (the injections map and unmap
// memory; the map also tells where the vDSO is).
func (s *dumpState) collectRest(c *collecting) error {
	pid := c.ts.t.kpid()
	var err error
	if c.timers, err = proc.ReadTimers(pid); err != nil {
		return fmt.Errorf("read POSIX timers of pid %d: %w", pid, err)
	}
	vmas, want, err := s.collectMemory(pid)
	if err != nil {
		return err
	}
	c.vmas, c.scan = vmas, want
	for _, v := range vmas {
		if v.GetStatus()&vmaAreaVDSO != 0 {
			c.vdsoStart, c.vdsoEnd = uintptr(v.GetStart()), uintptr(v.GetEnd())
		}
	}
	// The other threads' status (creds, comm, seccomp): the tracer
	// round reads the seccomp mode before it injects (readSeccomp).
	for _, th := range c.ts.t.threads[1:] {
		tstatus, err := proc.ReadTaskStatus(pid, th.tid)
		if err != nil {
			return fmt.Errorf("read status of thread %d: %w", th.tid, err)
		}
		c.ts.statuses = append(c.ts.statuses, tstatus)
	}
	return nil
}

// readRegs reads the registers, FPU state, mask, pending signals and rseq
// of every thread (before any injection changes them).
// Preconditions: on the tracer thread.
func (c *collecting) readRegs() error {
	t := c.ts.t
	c.regs = make([]threadRegs, len(t.threads))
	for i, th := range t.threads {
		r := &c.regs[i]
		var err error
		if r.regs, err = ptrace.GetRegs(th.tid); err != nil {
			return fmt.Errorf("read registers of thread %d: %w", th.tid, err)
		}
		if r.xstate, err = ptrace.GetXState(th.tid); err != nil {
			return fmt.Errorf("read FPU state of thread %d: %w", th.tid, err)
		}
		if r.sigmask, err = ptrace.GetSigmask(th.tid); err != nil {
			return fmt.Errorf("read signal mask of thread %d: %w", th.tid, err)
		}
		// The leader's status (read while it was stopped) tells whether
		// anything is pending: a queued signal always has its bit set.
		if i > 0 || c.status.SigPnd != 0 {
			if r.sigs, err = ptrace.PeekSiginfo(th.tid, false); err != nil {
				return fmt.Errorf("read pending signals of thread %d: %w", th.tid, err)
			}
		}
		if r.rseq, err = ptrace.GetRseqConfig(th.tid); err != nil {
			return fmt.Errorf("read rseq of thread %d: %w", th.tid, err)
		}
	}
	if c.status.ShdPnd == 0 {
		return nil // nothing in the process-wide queue
	}
	var err error
	if c.shared, err = ptrace.PeekSiginfo(t.kpid(), true); err != nil {
		return fmt.Errorf("read pending signals of pid %d: %w", t.pid, err)
	}
	return nil
}

// threadCores makes the core entries of every thread of cs from the
// registers the tracer read and what collectMid read (status, scheduling,
// robust list): all but the injected getters' results and the task's
// own core, which cores adds once the tracer is done. It runs while the
// tracer injects, on a goroutine that would wait for it otherwise.
func threadCores(cs []*collecting) error {
	for _, c := range cs {
		if c.ts.t.zombie {
			continue
		}
		c.thCores = make([]*pb.CoreEntry, len(c.regs))
		for i, th := range c.ts.t.threads {
			r := &c.regs[i]
			fp, err := fpregsEntry(r.xstate)
			if err != nil {
				return fmt.Errorf("thread %d: %w", th.tid, err)
			}
			tstatus, tsched := c.ts.statuses[i], c.thSched[i]
			thc := &pb.ThreadCoreEntry{
				FutexRla: proto.Uint64(c.thRobust[i][0]), FutexRlaLen: proto.Uint32(uint32(c.thRobust[i][1])),
				SchedNice: proto.Int32(tsched.nice), SchedPolicy: proto.Uint32(tsched.policy),
				SchedPrio: proto.Uint32(tsched.prio), BlkSigset: proto.Uint64(r.sigmask),
				Creds:       creds(tstatus, 0), // the securebits come with the injections
				SeccompMode: pb.SeccompMode(tstatus.Seccomp).Enum(),
				Comm:        proto.String(tstatus.Name),
			}
			if len(r.sigs) > 0 {
				thc.SignalsP = sigQueue(r.sigs)
			}
			if r.rseq.RseqAbiPointer != 0 {
				thc.RseqEntry = &pb.RseqEntry{RseqAbiPointer: proto.Uint64(r.rseq.RseqAbiPointer),
					RseqAbiSize: proto.Uint32(r.rseq.RseqAbiSize), Signature: proto.Uint32(r.rseq.Signature)}
			}
			c.thCores[i] = &pb.CoreEntry{
				Mtype:      pb.CoreEntry_X86_64.Enum(),
				ThreadInfo: &pb.ThreadInfoX86{Gpregs: regsEntry(&r.regs), Fpregs: fp},
				ThreadCore: thc,
			}
		}
	}
	return nil
}

// collectMid collects the rest of a task the first round (collectState,
// collectRest) and the tracer round went through.
func (d *Dumper) collectMid(s *dumpState, c *collecting) error {
	ts, t, st, status := c.ts, c.ts.t, c.st, c.status
	pid := t.kpid() // what the kernel shows of the process
	var err error
	// The pages to save, while the tracer injects (collectMemory says
	// why that is safe).
	if ts.pages, err = s.scanPages(pid, c.scan); err != nil {
		return err
	}
	if c.auxv, err = proc.ReadAuxv(pid); err != nil {
		return fmt.Errorf("read auxv of pid %d: %w", pid, err)
	}
	if c.exeID, err = s.exeFileID(pid); err != nil {
		return err
	}

	// Files and fs.
	if ts.fds, err = s.collectFds(pid); err != nil {
		return err
	}
	if ts.fs, err = s.collectFS(pid, status.Umask); err != nil {
		return err
	}

	// Ids. Tasks that share their mm, fd table, fs info or signal
	// handlers (CLONE_VM/FILES/FS/SIGHAND without CLONE_THREAD) share the
	// id, as kcmp tells; everyone else gets a new one.
	if ts.ids, err = s.taskKobjIDs(pid); err != nil {
		return err
	}
	if err := s.checkSharedKobjs(pid, ts.ids); err != nil { // files.go
		return err
	}
	for _, n := range []struct {
		name string
		dst  **uint32
	}{{"pid", &ts.ids.PidNsId}, {"net", &ts.ids.NetNsId}, {"ipc", &ts.ids.IpcNsId}, {"uts", &ts.ids.UtsNsId},
		{"mnt", &ts.ids.MntNsId}, {"user", &ts.ids.UserNsId}, {"cgroup", &ts.ids.CgroupNsId}, {"time", &ts.ids.TimeNsId}} {
		id, err := s.nsID(ts, n.name)
		if err != nil {
			return err
		}
		*n.dst = proto.Uint32(id)
	}
	if c.outside, err = readOutsideCore(pid); err != nil {
		return err
	}

	// Threads: scheduling, robust list (their status is read:
	// collectRest).
	c.thSched = make([]threadSchedInfo, len(t.threads))
	c.thRobust = make([][2]uint64, len(t.threads))
	for i, th := range t.threads {
		tst := st // the leader's stat is read already
		if th.tid != pid {
			tst = nil
		}
		if c.thSched[i], err = threadSched(pid, th.tid, tst); err != nil {
			return err
		}
		if c.thSched[i].policy&^unix.SCHED_RESET_ON_FORK == unix.SCHED_DEADLINE {
			// Its runtime, deadline and period have no place in the
			// images: a restore could not give it back.
			return fmt.Errorf("pid %d: thread %d has scheduling policy SCHED_DEADLINE (%d); SCHED_DEADLINE is not supported",
				pid, th.tid, unix.SCHED_DEADLINE)
		}
		head, hlen, err := getRobustList(th.tid)
		if err != nil {
			return fmt.Errorf("read robust list of thread %d: %w", th.tid, err)
		}
		c.thRobust[i] = [2]uint64{head, hlen}
	}
	return nil
}

// cores puts together the mm and core entries of a task from what
// collectMid read and what the tracer round found (registers, injected
// getters).
func (c *collecting) cores() error {
	ts, t, st, status, vmas, regs, inj := c.ts, c.ts.t, c.st, c.status, c.vmas, c.regs, c.job.res
	ts.mm = &pb.MmEntry{
		MmStartCode: proto.Uint64(st.StartCode), MmEndCode: proto.Uint64(st.EndCode),
		MmStartData: proto.Uint64(st.StartData), MmEndData: proto.Uint64(st.EndData),
		MmStartStack: proto.Uint64(st.StartStack), MmStartBrk: proto.Uint64(st.StartBrk),
		MmBrk: proto.Uint64(brk(vmas, st.StartBrk)), MmArgStart: proto.Uint64(st.ArgStart),
		MmArgEnd: proto.Uint64(st.ArgEnd), MmEnvStart: proto.Uint64(st.EnvStart),
		MmEnvEnd: proto.Uint64(st.EnvEnd), ExeFileId: proto.Uint32(c.exeID),
		MmSavedAuxv: c.auxv, Vmas: vmas, Dumpable: proto.Int32(inj.dumpable),
		ThpDisabled: proto.Bool(inj.thpDisabled),
	}
	tc := taskCore(t, st, status, inj, regs[0].sigmask, c.shared, &c.outside)
	if t.leaderExited {
		// The leader's core: the process's state, no registers (restore
		// reads it as an exited leader), no thread state of its own.
		tc.Comm = proto.String(c.leaderName)
		ts.cores = append(ts.cores, &pb.CoreEntry{Mtype: pb.CoreEntry_X86_64.Enum(), Tc: tc,
			ThreadCore: &pb.ThreadCoreEntry{FutexRla: proto.Uint64(0), FutexRlaLen: proto.Uint32(0),
				Comm: proto.String(c.leaderName), Creds: creds(c.leaderStatus, inj.securebits)}})
	}
	for i, th := range t.threads {
		core := c.thCores[i]
		it := inj.perThread[th.tid]
		core.ThreadInfo.ClearTidAddr = proto.Uint64(it.clearTidAddr)
		thc := core.ThreadCore
		thc.Sas, thc.PdeathSig = it.sas, proto.Uint32(it.pdeathSig)
		*thc.Creds.Secbits = inj.securebits // creds' own word
		if i == 0 && !t.leaderExited {
			core.Tc = tc
		}
		ts.cores = append(ts.cores, core)
	}
	return nil
}

// threadSchedInfo is a thread's scheduling as the images hold it.
type threadSchedInfo struct {
	// policy is what sched_getscheduler returns: the policy, with
	// SCHED_RESET_ON_FORK when the thread's children start reset to
	// SCHED_OTHER (CRIU's images hold it so too).
	policy uint32
	prio   uint32 // real-time priority, 0 for the other policies
	nice   int32
}

// threadSched reads the scheduling policy, reset-on-fork flag, nice value
// and real-time priority of thread tid of pid: one sched_getattr for the
// usual policies. sched_getattr reports nice only for the fair and idle
// policies (stat reports the nice value a real-time thread keeps for
// later), so for the others the nice value comes from st, the thread's
// stat, read here when nil. Stat alone does not do: it does not show
// reset-on-fork.
func threadSched(pid, tid int, st *proc.Stat) (threadSchedInfo, error) {
	a, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return threadSchedInfo{}, fmt.Errorf("read scheduling of thread %d: %w", tid, err)
	}
	s := threadSchedInfo{policy: a.Policy, prio: a.Priority, nice: a.Nice}
	if a.Flags&unix.SCHED_FLAG_RESET_ON_FORK != 0 {
		s.policy |= unix.SCHED_RESET_ON_FORK
	}
	switch a.Policy {
	case unix.SCHED_NORMAL, unix.SCHED_BATCH, unix.SCHED_IDLE:
		return s, nil
	}
	if st == nil {
		if st, err = proc.ReadTaskStat(pid, tid); err != nil {
			return threadSchedInfo{}, fmt.Errorf("read state of thread %d: %w", tid, err)
		}
	}
	s.nice = int32(st.Nice)
	return s, nil
}

// brk is the current program break: the end of the [heap] VMA, or the
// start of the heap when none was ever allocated.
func brk(vmas []*pb.VmaEntry, startBrk uint64) uint64 {
	for _, v := range vmas {
		if v.GetStatus()&vmaAreaHeap != 0 {
			return v.GetEnd()
		}
	}
	return startBrk
}

func sigQueue(sigs [][]byte) *pb.SignalQueueEntry {
	q := &pb.SignalQueueEntry{}
	for _, s := range sigs {
		q.Signals = append(q.Signals, &pb.SiginfoEntry{Siginfo: s})
	}
	return q
}

// creds makes the image's credentials of a thread from its status. Its 10
// ids and flags share one allocation, its 5 capability sets another
// (proto.Uint32 and a slice each made 15 a thread).
func creds(s *proc.Status, secbits uint32) *pb.CredsEntry {
	v := &[10]uint32{s.Uid[0], s.Uid[1], s.Uid[2], s.Uid[3], s.Gid[0], s.Gid[1], s.Gid[2], s.Gid[3], secbits, s.NoNewPrivs}
	caps := &[10]uint32{}
	for i, c := range []uint64{s.CapInh, s.CapPrm, s.CapEff, s.CapBnd, s.CapAmb} {
		caps[2*i], caps[2*i+1] = uint32(c), uint32(c>>32)
	}
	c := &pb.CredsEntry{
		Uid: &v[0], Euid: &v[1], Suid: &v[2], Fsuid: &v[3],
		Gid: &v[4], Egid: &v[5], Sgid: &v[6], Fsgid: &v[7],
		CapInh: caps[0:2:2], CapPrm: caps[2:4:4], CapEff: caps[4:6:6],
		CapBnd: caps[6:8:8], CapAmb: caps[8:10:10],
		Secbits: &v[8], Groups: s.Groups, NoNewPrivs: &v[9],
	}
	if c.Groups == nil {
		c.Groups = []uint32{}
	}
	return c
}

func itimer(v [4]uint64) *pb.ItimerEntry {
	// struct itimerval: it_interval {sec, usec}, it_value {sec, usec}.
	return &pb.ItimerEntry{Isec: proto.Uint64(v[0]), Iusec: proto.Uint64(v[1]), Vsec: proto.Uint64(v[2]), Vusec: proto.Uint64(v[3])}
}

// outsideCore is what the task core holds that is read from outside the
// task (not injected): personality, rlimits, oom_score_adj, loginuid.
type outsideCore struct {
	personality uint32
	rlimits     [proc.NLimits]unix.Rlimit
	oomScoreAdj *int32
	loginuid    *uint32
}

func readOutsideCore(pid int) (outsideCore, error) {
	var o outsideCore
	pers, err := proc.ReadPersonality(pid)
	if err != nil {
		return o, fmt.Errorf("read personality of pid %d: %w", pid, err)
	}
	o.personality = pers
	// rlimits with prlimit: its 16 calls cost a third of what reading
	// and parsing /proc/PID/limits does here (about 30 against 90 us a
	// task). A task whose ids are not crtools' refuses them (EPERM
	// without CAP_SYS_RESOURCE); its limits come from the file.
	if err := prlimits(pid, &o.rlimits); err != nil {
		if o.rlimits, err = proc.ReadLimits(pid); err != nil {
			return o, fmt.Errorf("read rlimits of pid %d: %w", pid, err)
		}
	}
	if v, err := proc.ReadInt(fmt.Sprintf("/proc/%d/oom_score_adj", pid)); err == nil {
		o.oomScoreAdj = proto.Int32(int32(v))
	}
	if v, err := proc.ReadInt(fmt.Sprintf("/proc/%d/loginuid", pid)); err == nil {
		o.loginuid = proto.Uint32(uint32(v))
	}
	return o, nil
}

// prlimits reads every resource limit of pid with prlimit.
func prlimits(pid int, lims *[proc.NLimits]unix.Rlimit) error {
	for r := range lims {
		if err := unix.Prlimit(pid, r, nil, &lims[r]); err != nil {
			return fmt.Errorf("read rlimit %d of pid %d: %w", r, pid, err)
		}
	}
	return nil
}

func taskCore(t *task, st *proc.Stat, status *proc.Status, inj *injected, blocked uint64, shared [][]byte, o *outsideCore) *pb.TaskCoreEntry {
	tc := &pb.TaskCoreEntry{
		TaskState: proto.Uint32(taskAlive), ExitCode: proto.Uint32(0), Personality: proto.Uint32(o.personality),
		Flags: proto.Uint32(uint32(st.Flags) & keptTaskFlags), BlkSigset: proto.Uint64(blocked),
		Comm: proto.String(status.Name),
		Timers: &pb.TaskTimersEntry{Real: itimer(inj.itimers[0]), Virt: itimer(inj.itimers[1]),
			Prof: itimer(inj.itimers[2]), Posix: inj.posix},
		ChildSubreaper: proto.Bool(inj.subreaper),
		OomScoreAdj:    o.oomScoreAdj, Loginuid: o.loginuid,
	}
	if t.groupStopped {
		tc.TaskState = proto.Uint32(taskStopped)
		tc.StopSigno = proto.Uint32(uint32(t.stopSig))
	}
	if len(shared) > 0 {
		tc.SignalsS = sigQueue(shared)
	}
	tc.Rlimits = &pb.TaskRlimitsEntry{}
	for _, lim := range o.rlimits {
		tc.Rlimits.Rlimits = append(tc.Rlimits.Rlimits, &pb.RlimitEntry{Cur: proto.Uint64(lim.Cur), Max: proto.Uint64(lim.Max)})
	}
	// Sigactions in CRIU's layout: signals 1..64 without SIGKILL/SIGSTOP.
	// Every SIG_DFL one is the same (read-only) entry.
	dfl := &pb.SaEntry{Sigaction: proto.Uint64(0), Flags: proto.Uint64(0), Restorer: proto.Uint64(0), Mask: proto.Uint64(0)}
	tc.Sigactions = make([]*pb.SaEntry, 0, 62)
	for sig := 1; sig <= 64; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		sa := inj.sigactions[sig]
		if sa == nil {
			sa = dfl
		}
		tc.Sigactions = append(tc.Sigactions, sa)
	}
	return tc
}

// innerPids renumbers the tree with the pids seen inside its pid
// namespace (-n pid, engine/ns): pstree entries and image names, then the
// pids engine/files recorded (innerFilePids).
func (s *dumpState) innerPids() error {
	inner := map[*task]ns.InnerIDs{}
	for _, ts := range s.tasks {
		if ts.t.leaderExited {
			// Its exited leader's pid inside the namespace is not
			// read (its status is a live thread's).
			return fmt.Errorf("pid %d: its main thread has exited while other threads run; such a process is not supported in a tree with a pid namespace of its own", ts.t.pid)
		}
		var in ns.InnerIDs
		var err error
		if len(ts.statuses) > 0 {
			in, err = ns.InnerFromStatus(ts.statuses[0])
		} else {
			in, err = ns.ReadInner(ts.t.pid, ts.t.pid) // a zombie
		}
		if err != nil {
			return fmt.Errorf("pid %d: %w", ts.t.pid, err)
		}
		inner[ts.t] = in
	}
	// ids: crtools' pid, tid, group or session id of the tree → the same
	// id inside the tree's namespace.
	ids := map[int]int{}
	for t, in := range inner {
		ids[t.pid], ids[t.pgid], ids[t.sid] = in.Pid, in.Pgid, in.Sid
	}
	for _, ts := range s.tasks {
		t, in := ts.t, inner[ts.t]
		ppid := 0
		if t.parent != nil {
			ppid = inner[t.parent].Pid
		}
		ts.pstree.Pid, ts.pstree.Ppid = proto.Uint32(uint32(in.Pid)), proto.Uint32(uint32(ppid))
		ts.pstree.Pgid, ts.pstree.Sid = proto.Uint32(uint32(in.Pgid)), proto.Uint32(uint32(in.Sid))
		ts.vtids = []int{in.Pid}
		if t.zombie {
			ts.pstree.Threads = []uint32{uint32(in.Pid)}
			continue
		}
		ts.pstree.Threads = ts.pstree.Threads[:0]
		for i, th := range t.threads {
			v := in.Pid
			if i > 0 {
				if i >= len(ts.statuses) {
					return fmt.Errorf("thread %d of pid %d: no status read", th.tid, t.pid)
				}
				x, err := ns.InnerFromStatus(ts.statuses[i])
				if err != nil {
					return fmt.Errorf("thread %d of pid %d: %w", th.tid, t.pid, err)
				}
				v = x.Pid
				ts.vtids = append(ts.vtids, v)
				ids[th.tid] = v
			}
			ts.pstree.Threads = append(ts.pstree.Threads, uint32(v))
		}
	}
	s.innerFilePids(ids)
	return nil
}

// innerFilePids renumbers, with ids (innerPids), the pids engine/files
// recorded as crtools sees them (/proc/PID/stat, F_GETOWN, the task whose
// fd table was read): restore reads them inside the tree's new pid
// namespace. An id unknown to the tree becomes 0, as the tree itself sees
// it (F_GETOWN inside the namespace returns 0 for an owner outside it).
//   - the session and foreground group of the tree's pseudo-terminals:
//     restore looks a terminal up by the image's session id (0: no
//     foreground group to restore);
//   - the session and foreground group of a shell job's terminal (-j):
//     restore gives crtools' terminal to the tree's group of that id;
//   - the owner (F_SETOWN) of a file: a task, thread or process group
//     (0: no owner);
//   - the task that held a lock, which restore matches with the image's
//     pid of the task taking the locks again.
func (s *dumpState) innerFilePids(ids map[int]int) {
	set := s.special.Set()
	for _, info := range set.TtyInfo {
		if (info.GetType() != pb.TtyType_PTY && info.GetType() != pb.TtyType_EXT_TTY) || info.GetSid() == 0 {
			continue
		}
		info.Sid = proto.Uint32(uint32(ids[int(info.GetSid())]))
		info.Pgrp = proto.Uint32(uint32(ids[int(info.GetPgrp())]))
	}
	// Entries may share one FownEntry (a ghost file and its hidden
	// name): renumber each once.
	done := map[*pb.FownEntry]bool{}
	for _, e := range set.Files {
		o := files.Fown(e)
		if o == nil || o.GetPid() == 0 || done[o] {
			continue
		}
		done[o] = true
		v := ids[int(o.GetPid())]
		o.Pid = proto.Uint32(uint32(v))
		if v == 0 {
			o.PidType = proto.Uint32(0)
		}
	}
	for _, l := range set.Locks {
		l.Pid = proto.Int32(int32(ids[int(l.GetPid())]))
	}
}

// imgTid is the tid of thread i of ts in the images.
func (ts *taskState) imgTid(i int) int {
	if i < len(ts.vtids) {
		return ts.vtids[i]
	}
	if i == 0 {
		return ts.t.pid
	}
	if ts.t.leaderExited {
		return ts.t.threads[i-1].tid // cores[0] is the exited leader's
	}
	return ts.t.threads[i].tid
}
