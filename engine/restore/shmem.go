package restore

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
)

// Shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS; memfds are memfd.go's)
// is one shmem object however many VMAs, in however many tasks, map
// it; the images name it by vma_entry.shmid and hold its pages once, in
// pagemap-shmem-<shmid>.img with object offsets as addresses.
//
// The first VMA restored for a shmid creates the object with an anonymous
// shared mmap; its pages are filled through that VMA. Every other VMA maps
// the same object through /proc/<pid>/map_files/<range> of the first one
// (which opens the very shmem file), so writes stay shared after restore.

const noFd = ^uint64(0)

// shmState tracks the shmem objects created during one restore.
type shmState struct {
	objs map[uint64]*shmObj
}

type shmObj struct {
	pid        int    // the task whose VMA created the object
	start, end uint64 // that VMA
	pgoff      uint64
	size       uint64 // the object's size: the largest pgoff+len over all its VMAs
	fd         uint64 // an fd on the object in puppet fdPid, or noFd
	fdPid      int
	filled     bool
}

func newShmState() *shmState { return &shmState{objs: map[uint64]*shmObj{}} }

// shmemSize is the largest end offset of any VMA of shmid in the images.
func (img *imageSet) shmemSize(shmid uint64) uint64 {
	var size uint64
	for _, t := range img.tasks {
		for _, v := range t.mm.GetVmas() {
			if v.GetStatus()&vmaAnonShared != 0 && v.GetShmid() == shmid {
				size = max(size, v.GetPgoff()+vmaLen(v))
			}
		}
	}
	return size
}

// shmemFd returns an fd in the puppet on the object of v, or noFd when v is
// the first mapping and creates the object.
func (p *puppet) shmemFd(img *imageSet, sh *shmState, v *pb.VmaEntry) (uint64, error) {
	if sh == nil {
		return 0, fmt.Errorf("restore shared VMA %#x-%#x of task %d: no shmem state", v.GetStart(), v.GetEnd(), p.pid)
	}
	o := sh.objs[v.GetShmid()]
	if o == nil {
		if v.GetPgoff() != 0 {
			return 0, fmt.Errorf("restore shared VMA %#x-%#x of task %d: the first mapping of shmem %d starts at offset %d: %w",
				v.GetStart(), v.GetEnd(), p.pid, v.GetShmid(), v.GetPgoff(), errPartialShmem)
		}
		return noFd, nil
	}
	if o.fd != noFd && o.fdPid == p.pid {
		return o.fd, nil
	}
	path := fmt.Sprintf("/proc/%d/map_files/%x-%x", o.pid, o.start, o.end)
	fd, err := p.openat(path, unix.O_RDWR|unix.O_CLOEXEC)
	if err != nil {
		return 0, fmt.Errorf("open shmem %d through %s in task %d: %w", v.GetShmid(), path, p.pid, err)
	}
	if o.fd == noFd || o.fdPid != p.pid {
		o.fd, o.fdPid = fd, p.pid
	}
	return fd, nil
}

var errPartialShmem = fmt.Errorf("shared memory mapped only from a non-zero offset: %w", errNotYet)

var errNotYet = engine.ErrNotSupported

// shmemCreated records the object v just created and grows it to its full
// size when other VMAs map beyond v.
func (p *puppet) shmemCreated(img *imageSet, sh *shmState, v *pb.VmaEntry) error {
	o := &shmObj{pid: p.pid, start: v.GetStart(), end: v.GetEnd(), size: img.shmemSize(v.GetShmid()), fd: noFd}
	sh.objs[v.GetShmid()] = o
	if o.size <= vmaLen(v) {
		return nil
	}
	path := fmt.Sprintf("/proc/%d/map_files/%x-%x", p.pid, o.start, o.end)
	fd, err := p.openat(path, unix.O_RDWR|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open shmem %d through %s: %w", v.GetShmid(), path, err)
	}
	o.fd, o.fdPid = fd, p.pid
	if _, err := p.callf(fmt.Sprintf("grow shmem %d to %d bytes", v.GetShmid(), o.size), unix.SYS_FTRUNCATE, fd, o.size); err != nil {
		return err
	}
	return nil
}

// closeShmemFds closes the fds shmemFd opened in this puppet.
func (p *puppet) closeShmemFds(sh *shmState) {
	for _, o := range sh.objs {
		if o.fd != noFd && o.fdPid == p.pid {
			_ = p.queueIgnore(unix.SYS_CLOSE, o.fd)
			o.fd = noFd
		}
	}
}

// unfilled tells whether a shmem object still waits for its pages
// (fillShmem).
func (sh *shmState) unfilled() bool {
	for _, o := range sh.objs {
		if !o.filled {
			return true
		}
	}
	return false
}

// fillShmem fills every shmem object this task mapped and nobody filled
// yet, through the task's own VMAs of it.
func (p *puppet) fillShmem(img *imageSet, sh *shmState, vmas []*pb.VmaEntry) (int64, error) {
	var total int64
	for shmid, o := range sh.objs {
		if o.filled {
			continue
		}
		pm := img.shmem[shmid]
		o.filled = true
		if pm == nil {
			continue // never written: all zeros
		}
		var mine []*pb.VmaEntry
		for _, v := range vmas {
			if v.GetStatus()&vmaAnonShared != 0 && v.GetShmid() == shmid {
				mine = append(mine, v)
			}
		}
		var runs []iovec
		for _, r := range pm.Runs {
			if r.Offset < 0 {
				continue
			}
			// r.Vaddr is an offset in the object: find it in a VMA.
			for off, end := r.Vaddr, r.End(); off < end; {
				var hit *pb.VmaEntry
				for _, v := range mine {
					if off >= v.GetPgoff() && off < v.GetPgoff()+vmaLen(v) {
						hit = v
						break
					}
				}
				if hit == nil {
					return total, fmt.Errorf("fill shmem %d in task %d: offset %#x is mapped by no VMA of the task: %w", shmid, p.pid, off, errNotYet)
				}
				n := min(end, hit.GetPgoff()+vmaLen(hit)) - off
				runs = append(runs, iovec{Base: hit.GetStart() + off - hit.GetPgoff(), Len: n})
				off += n
			}
		}
		n, err := p.fillRuns(img.dir, pm.PagesID, firstOffset(pm), runs)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func firstOffset(pm *image.PageIndex) int64 {
	for _, r := range pm.Runs {
		if r.Offset >= 0 {
			return r.Offset
		}
	}
	return 0
}
