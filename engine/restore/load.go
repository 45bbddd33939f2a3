package restore

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/files"
	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
)

// load reads and checks every image of the tree in dir. It changes nothing.
func load(dir string) (*imageSet, error) {
	// O_DIRECTORY says "not a directory" itself: no stat first.
	d, err := openImageDir(dir) // imgread.go
	if err != nil {
		return nil, fmt.Errorf("open images directory: %w", err)
	}
	defer d.close()
	rd := d.reader()
	img := &imageSet{dir: dir, files: map[uint32]*pb.FileEntry{}, fdOwners: map[uint32]fdOwner{}}
	inv := &pb.InventoryEntry{}
	if err := rd.readOne(image.Inventory, 0, inv); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read inventory: %w (%s is not an images directory written by crtools dump or CRIU)", err, dir)
	} else if err != nil {
		return nil, fmt.Errorf("read inventory: %w", err)
	}
	img.inventory = inv

	entries, err := rd.readFile(image.Pstree, 0)
	if err != nil {
		return nil, fmt.Errorf("read process tree: %w", err)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("read process tree: %s has no task", image.Pstree.FileName(0))
	}
	byPid := map[int]*taskImage{}
	for _, e := range entries {
		pe := e.Msg.(*pb.PstreeEntry)
		t := &taskImage{pid: int(pe.GetPid()), ppid: int(pe.GetPpid()), pgid: int(pe.GetPgid()), sid: int(pe.GetSid()),
			cores: map[int]*pb.CoreEntry{}}
		if t.pid <= 0 {
			return nil, fmt.Errorf("read process tree: bad pid %d", t.pid)
		}
		if byPid[t.pid] != nil {
			return nil, fmt.Errorf("read process tree: pid %d appears twice", t.pid)
		}
		t.tids = append(t.tids, t.pid)
		for _, tid := range pe.GetThreads() {
			if int(tid) != t.pid {
				t.tids = append(t.tids, int(tid))
			}
		}
		byPid[t.pid] = t
		img.tasks = append(img.tasks, t)
	}
	for i, t := range img.tasks {
		if i == 0 {
			continue
		}
		par := byPid[t.ppid]
		if par == nil {
			return nil, fmt.Errorf("read process tree: parent %d of task %d is not in the tree", t.ppid, t.pid)
		}
		t.parent = par
		par.children = append(par.children, t)
	}

	// files.img is optional: missing, it is ErrNotExist (no stat first).
	if fes, err := rd.readFile(image.Files, 0); err == nil {
		var list []*pb.FileEntry
		for _, e := range fes {
			fe := e.Msg.(*pb.FileEntry)
			img.files[fe.GetId()] = fe
			list = append(list, fe)
		}
		set, err := files.ReadImages(dir, list)
		if err != nil {
			return nil, fmt.Errorf("read images of pipes, sockets and other files: %w", err)
		}
		img.special = files.NewRestorer(set, zerolog.Nop())
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read files: %w", err)
	}

	img.shmem = map[uint64]*image.PageIndex{}
	// Tasks' images are independent files: read them on as many
	// goroutines as there are CPUs to run them (a 50-task tree has some
	// 300 files), each with its reader (and buffer), the tasks taken in
	// turn.
	errs := make([]error, len(img.tasks))
	workers := min(runtime.GOMAXPROCS(0), len(img.tasks), 8)
	var next atomic.Int32
	work := func(r *imageReader) {
		for {
			i := int(next.Add(1)) - 1
			if i >= len(img.tasks) {
				return
			}
			errs[i] = img.tasks[i].load(r)
		}
	}
	var wg sync.WaitGroup
	for range workers - 1 {
		wg.Go(func() { work(d.reader()) })
	}
	work(rd)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	for _, t := range img.tasks {
		for _, v := range t.mm.GetVmas() {
			if v.GetStatus()&vmaAnonShared == 0 {
				continue
			}
			if err := img.loadShmem(rd, v.GetShmid()); err != nil {
				return nil, fmt.Errorf("read shared memory pages of shmem %d: %w", v.GetShmid(), err)
			}
		}
	}
	if err := img.loadMemfds(rd); err != nil { // memfd.go
		return nil, err
	}
	if img.seccomp, err = img.loadSeccomp(rd); err != nil { // seccomp.go
		return nil, err
	}
	if err := img.checkLeadersExited(); err != nil {
		return nil, err
	}
	return img, nil
}

// checkLeadersExited refuses what restore cannot give a process whose main
// thread had exited (taskImage.leaderExited): its children are created by
// its leader thread, whose exit (exitLeader) sends each child its
// parent-death signal, which the dumped children did not get.
func (img *imageSet) checkLeadersExited() error {
	for _, t := range img.tasks {
		if !t.leaderExited() {
			continue
		}
		for _, c := range t.children {
			if c.dead() {
				continue
			}
			for _, core := range c.cores {
				if sig := core.GetThreadCore().GetPdeathSig(); sig != 0 {
					return fmt.Errorf("task %d, whose main thread has exited, has a child %d with parent-death signal %d; restoring it is not supported (the restored main thread's exit would send the signal)", t.pid, c.pid, sig)
				}
			}
		}
	}
	return nil
}

// loadShmem reads the pagemap of the shared memory object id (an anonymous
// shared VMA's or a memfd's) into img.shmem, unless it is there already,
// and checks that its pages file holds every page: a short one fails the
// load naming the file, not restore-state with a bare EOF. It is optional:
// an object without one gets no pages.
func (img *imageSet) loadShmem(r *imageReader, id uint64) error {
	if img.shmem[id] != nil {
		return nil
	}
	pm, err := r.readPagemap(image.ShmemPagemap, id)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = r.d.checkPagesFile(pm)
	}
	if err != nil {
		return err
	}
	img.shmem[id] = pm
	return nil
}

// load reads the images of task t with r. The mm, fs and fd images go
// through r's cache: tasks forked from one program share their decoded
// content.
func (t *taskImage) load(r *imageReader) error {
	cores, err := readCores(r, t.pid, t.tids)
	if err != nil {
		return err
	}
	for i, tid := range t.tids {
		t.cores[tid] = cores[i]
	}
	core := t.core()
	if core.GetTc() == nil {
		return fmt.Errorf("read core of task %d: no task_core entry", t.pid)
	}
	if core.GetTc().GetTaskState() == taskDead {
		return nil // a zombie: nothing but its exit code
	}
	if core.GetThreadInfo() == nil {
		// Its main thread had exited (leaderExited).
		if len(t.tids) < 2 {
			return fmt.Errorf("read core of task %d: no registers, and no other thread", t.pid)
		}
	}
	t.ids = core.GetIds()
	// Optional images are read without a stat first (one syscall less
	// each, 150 for 50 tasks): a missing one is ErrNotExist.
	ids := &pb.TaskKobjIdsEntry{}
	if err := r.readOne(image.IDs, uint64(t.pid), ids); err == nil {
		t.ids = ids
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read ids of task %d: %w", t.pid, err)
	}
	cache := r.d.cache
	mm, err := cache.readOne(r, image.MM, uint64(t.pid), func() proto.Message { return &pb.MmEntry{} })
	if err != nil {
		return fmt.Errorf("read memory map of task %d: %w", t.pid, err)
	}
	t.mm = mm.(*pb.MmEntry)
	pm, err := r.readPagemap(image.Pagemap, uint64(t.pid))
	if err != nil {
		return fmt.Errorf("read pagemap of task %d: %w", t.pid, err)
	}
	if err := r.d.checkPagesFile(pm); err != nil {
		return fmt.Errorf("read pages of task %d: %w", t.pid, err)
	}
	t.pagemap = pm
	if fse, err := cache.readOne(r, image.FS, uint64(t.pid), func() proto.Message { return &pb.FsEntry{} }); err == nil {
		t.fs = fse.(*pb.FsEntry)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read fs of task %d: %w", t.pid, err)
	}
	if t.ids != nil {
		fis, err := cache.readAll(r, image.Fdinfo, uint64(t.ids.GetFilesId()), func() proto.Message { return &pb.FdinfoEntry{} })
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read fds of task %d: %w", t.pid, err)
		}
		for _, fi := range fis {
			t.fds = append(t.fds, fi.(*pb.FdinfoEntry))
		}
	}
	return nil
}

// parallelCores is the number of threads from which a task's core images
// are read on two goroutines.
const parallelCores = 8

// readCores reads and checks the core image of each of tids, the threads
// of task pid (pid first). A many-threaded task's are read half on another
// goroutine (with a reader of its own): each is four system calls and a
// decode of the registers (the FPU state and creds are shared, image.
// CoreShare), some 15-25 us here, one after the other the larger part of
// loading a 50-thread process, with the other CPU idle.
func readCores(r *imageReader, pid int, tids []int) ([]*pb.CoreEntry, error) {
	cores := make([]*pb.CoreEntry, len(tids))
	errs := make([]error, len(tids))
	read := func(r *imageReader, lo, hi int) {
		for i := lo; i < hi; i++ {
			cores[i], errs[i] = readCore(r, pid, tids[i])
		}
	}
	if len(tids) < parallelCores {
		read(r, 0, len(tids))
	} else {
		half := len(tids) / 2
		done := make(chan struct{})
		go func() {
			read(r.d.reader(), half, len(tids))
			close(done)
		}()
		read(r, 0, half)
		<-done
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return cores, nil
}

// readCore reads the core image of thread tid of task pid and checks that
// it is one crtools restores.
func readCore(r *imageReader, pid, tid int) (*pb.CoreEntry, error) {
	c := &pb.CoreEntry{}
	if err := r.readCore(tid, c); err != nil {
		return nil, fmt.Errorf("read core of task %d: %w", tid, err)
	}
	if tid == pid && c.GetTc().GetTaskState() == taskDead {
		return c, nil // a zombie has nothing but its exit code
	}
	if tid == pid && c.GetThreadInfo() == nil && c.GetMtype() == pb.CoreEntry_X86_64 && c.GetTc() != nil {
		return c, nil // an exited leader (taskImage.leaderExited): load checks the rest
	}
	if c.GetMtype() != pb.CoreEntry_X86_64 || c.GetThreadInfo() == nil || c.GetThreadInfo().GetGpregs() == nil {
		return nil, fmt.Errorf("read core of task %d: not an x86-64 task with registers", tid)
	}
	if m := c.GetThreadInfo().GetGpregs().GetMode(); m != pb.UserX86RegsMode_NATIVE {
		return nil, fmt.Errorf("read core of task %d: 32-bit (compat) tasks are not supported", tid)
	}
	if tc := c.GetThreadCore(); tc.SchedPolicy != nil && tc.GetSchedPolicy()&^unix.SCHED_RESET_ON_FORK == unix.SCHED_DEADLINE {
		// Its runtime, deadline and period are not in the images
		// (crtools' dump refuses such a thread; images from
		// elsewhere may hold one). Refused here, before any task
		// exists, not after the whole restore.
		return nil, fmt.Errorf("read core of task %d: thread %d has scheduling policy SCHED_DEADLINE (%d), whose runtime, deadline and period the images cannot hold; SCHED_DEADLINE is not supported",
			pid, tid, unix.SCHED_DEADLINE)
	}
	return c, nil
}

// checkPagesFile makes sure the pages file of pm holds every byte its runs
// use, so that a missing or truncated pages image fails the load, naming
// the file, before any task exists.
func (d *imageDir) checkPagesFile(pm *image.PageIndex) error {
	if pm.PagesSize == 0 {
		return nil
	}
	name := image.Pages.FileName(uint64(pm.PagesID))
	size, err := d.size(name)
	if err != nil {
		return err
	}
	if size < pm.PagesSize {
		return &image.TruncatedError{File: filepath.Join(d.dir, name), Offset: size, What: "page data of " + filepath.Base(pm.File), Want: pm.PagesSize, Got: size}
	}
	return nil
}
