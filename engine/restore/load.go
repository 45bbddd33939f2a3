package restore

import (
	"errors"
	"fmt"

	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/files"
	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
)

// load reads and checks every image of the tree in dir. It changes nothing.
func load(dir string) (*imageSet, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("open images directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("open images directory %s: not a directory", dir)
	}
	img := &imageSet{dir: dir, files: map[uint32]*pb.FileEntry{}, fdOwners: map[uint32]fdOwner{}}
	inv := &pb.InventoryEntry{}
	if err := image.ReadOne(dir, image.Inventory, 0, inv); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read inventory: %w (%s is not an images directory written by crtools dump or CRIU)", err, dir)
	} else if err != nil {
		return nil, fmt.Errorf("read inventory: %w", err)
	}
	img.inventory = inv

	entries, err := image.ReadFile(dir, image.Pstree, 0)
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

	if image.Exists(dir, image.Files, 0) {
		fes, err := image.ReadFile(dir, image.Files, 0)
		if err != nil {
			return nil, fmt.Errorf("read files: %w", err)
		}
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
	}

	img.shmem = map[uint64]*image.PageIndex{}
	// Tasks' images are independent files: read them in parallel (a
	// 50-task tree has some 300 of them).
	errs := make([]error, len(img.tasks))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	cache := &imageCache{} // imgcache.go
	for i, t := range img.tasks {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			errs[i] = t.load(dir, cache)
			<-sem
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	for _, t := range img.tasks {
		for _, v := range t.mm.GetVmas() {
			id := v.GetShmid()
			if v.GetStatus()&vmaAnonShared == 0 || img.shmem[id] != nil || !image.Exists(dir, image.ShmemPagemap, id) {
				continue
			}
			pm, err := image.ReadPagemap(dir, image.ShmemPagemap, id)
			if err != nil {
				return nil, fmt.Errorf("read shared memory pages of shmem %d: %w", id, err)
			}
			if err := checkPagesFile(dir, pm); err != nil {
				return nil, fmt.Errorf("read shared memory pages of shmem %d: %w", id, err)
			}
			img.shmem[id] = pm
		}
	}
	if err := img.loadMemfds(); err != nil { // memfd.go
		return nil, err
	}
	return img, nil
}

// load reads the images of task t. The mm, fs and fd images go through
// cache: tasks forked from one program share their decoded content.
func (t *taskImage) load(dir string, cache *imageCache) error {
	cores, err := readCores(dir, t.pid, t.tids)
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
	t.ids = core.GetIds()
	// Optional images are read without a stat first (one syscall less
	// each, 150 for 50 tasks): a missing one is ErrNotExist.
	ids := &pb.TaskKobjIdsEntry{}
	if err := image.ReadOne(dir, image.IDs, uint64(t.pid), ids); err == nil {
		t.ids = ids
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read ids of task %d: %w", t.pid, err)
	}
	mm, err := cache.readOne(dir, image.MM, uint64(t.pid), func() proto.Message { return &pb.MmEntry{} })
	if err != nil {
		return fmt.Errorf("read memory map of task %d: %w", t.pid, err)
	}
	t.mm = mm.(*pb.MmEntry)
	pm, err := image.ReadPagemap(dir, image.Pagemap, uint64(t.pid))
	if err != nil {
		return fmt.Errorf("read pagemap of task %d: %w", t.pid, err)
	}
	if err := checkPagesFile(dir, pm); err != nil {
		return fmt.Errorf("read pages of task %d: %w", t.pid, err)
	}
	t.pagemap = pm
	if fse, err := cache.readOne(dir, image.FS, uint64(t.pid), func() proto.Message { return &pb.FsEntry{} }); err == nil {
		t.fs = fse.(*pb.FsEntry)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read fs of task %d: %w", t.pid, err)
	}
	if t.ids != nil {
		fis, err := cache.readAll(dir, image.Fdinfo, uint64(t.ids.GetFilesId()), func() proto.Message { return &pb.FdinfoEntry{} })
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
// goroutine: each is an open, a read and a decode (some 100 us here, most
// of it decoding the registers and xstate), one after the other the
// larger part of loading a 50-thread process, with the other CPU idle.
func readCores(dir string, pid int, tids []int) ([]*pb.CoreEntry, error) {
	cores := make([]*pb.CoreEntry, len(tids))
	errs := make([]error, len(tids))
	read := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			cores[i], errs[i] = readCore(dir, pid, tids[i])
		}
	}
	if len(tids) < parallelCores {
		read(0, len(tids))
	} else {
		half := len(tids) / 2
		done := make(chan struct{})
		go func() {
			read(half, len(tids))
			close(done)
		}()
		read(0, half)
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
func readCore(dir string, pid, tid int) (*pb.CoreEntry, error) {
	c := &pb.CoreEntry{}
	if err := image.ReadOne(dir, image.Core, uint64(tid), c); err != nil {
		return nil, fmt.Errorf("read core of task %d: %w", tid, err)
	}
	if tid == pid && c.GetTc().GetTaskState() == taskDead {
		return c, nil // a zombie has nothing but its exit code
	}
	if c.GetMtype() != pb.CoreEntry_X86_64 || c.GetThreadInfo() == nil || c.GetThreadInfo().GetGpregs() == nil {
		return nil, fmt.Errorf("read core of task %d: not an x86-64 task with registers", tid)
	}
	if m := c.GetThreadInfo().GetGpregs().GetMode(); m != pb.UserX86RegsMode_NATIVE {
		return nil, fmt.Errorf("read core of task %d: 32-bit (compat) tasks are not supported", tid)
	}
	if tc := c.GetThreadCore(); tc.SchedPolicy != nil && tc.GetSchedPolicy() == unix.SCHED_DEADLINE {
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
func checkPagesFile(dir string, pm *image.PageIndex) error {
	if pm.PagesSize == 0 {
		return nil
	}
	path := image.Pages.Path(dir, uint64(pm.PagesID))
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Size() < pm.PagesSize {
		return &image.TruncatedError{File: path, Offset: st.Size(), What: "page data of " + filepath.Base(pm.File), Want: pm.PagesSize, Got: st.Size()}
	}
	return nil
}
