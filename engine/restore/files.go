package restore

import (
	"fmt"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/files"
	"github.com/crtools/crtools/engine/image/pb"
)

// fdCloexec is FD_CLOEXEC as fdinfo_entry.flags stores it.
const fdCloexec = 1

// restoreFiles opens the task's files in the puppet and puts each on its
// descriptor number. Descriptors that shared one open file (dup, or
// inherited) are dup'ed from one open, so they share offset and flags
// again.
//
// Files are handled one after the other: open (the kernel returns the
// lowest free number), dup3 to every target, close the temporary one unless
// it is a target. A temporary number can never be a target installed
// before, since those are taken; if it is a later target, that later dup3
// replaces it.
func (p *puppet) restoreFiles(img *imageSet, fds []*pb.FdinfoEntry) error {
	byID := map[uint32][]*pb.FdinfoEntry{}
	var order []uint32
	for _, fi := range fds {
		if _, ok := byID[fi.GetId()]; !ok {
			order = append(order, fi.GetId())
		}
		byID[fi.GetId()] = append(byID[fi.GetId()], fi)
	}
	sort.Slice(order, func(i, j int) bool {
		// epoll after the files it watches (special.go).
		li, lj := specialLast(img.files[order[i]]), specialLast(img.files[order[j]])
		if li != lj {
			return lj
		}
		return byID[order[i]][0].GetFd() < byID[order[j]][0].GetFd()
	})
	for _, id := range order {
		targets := byID[id]
		fe := img.files[id]
		if fe == nil {
			return fmt.Errorf("restore fd %d of task %d: file id %d is not in files.img", targets[0].GetFd(), p.pid, id)
		}
		var tmp uint64
		var err error
		switch fe.GetType() {
		case pb.FdTypes_REG:
			if img.special != nil && img.special.Handles(id) { // a deleted file
				tmp, err = p.takeSpecial(img, id)
			} else if o, ok := img.fdOwner(id); ok && o.pid != p.tgid {
				// Opened before a fork: one open file (one offset)
				// for every task that has it.
				tmp, err = p.takeFrom(o.vpid, o.fd)
			} else {
				tmp, err = p.openRegFile(fe.GetReg())
			}
		case pb.FdTypes_MEMFD:
			// One object with its mappings, in every task (memfd.go).
			tmp, err = p.takeMemfd(img, fe.GetMemfd())
		default:
			if img.special != nil && img.special.Handles(id) {
				tmp, err = p.takeSpecial(img, id)
				break
			}
			return fmt.Errorf("restore fd %d of task %d: file type %v: %w", targets[0].GetFd(), p.pid, fe.GetType(), engine.ErrNotSupported)
		}
		if err != nil {
			return fmt.Errorf("restore fd %d of task %d: %w", targets[0].GetFd(), p.pid, err)
		}
		keep := false
		for _, fi := range targets {
			fd := uint64(fi.GetFd())
			cloexec := fi.GetFlags()&fdCloexec != 0
			if fd == tmp {
				keep = true
				// openat gave no close-on-exec; pidfd_getfd sets it
				// (and special files clear it): set it as dumped.
				fdFlags := uint64(0)
				if cloexec {
					fdFlags = unix.FD_CLOEXEC
				}
				if err := p.queuef(fmt.Sprintf("set fd flags of fd %d", fd), unix.SYS_FCNTL, fd, unix.F_SETFD, fdFlags); err != nil {
					return err
				}
				continue
			}
			flags := uint64(0)
			if cloexec {
				flags = unix.O_CLOEXEC
			}
			if err := p.queuef(fmt.Sprintf("dup fd %d to %d", tmp, fd), unix.SYS_DUP3, tmp, fd, flags); err != nil {
				return err
			}
		}
		if !keep {
			if err := p.queuef(fmt.Sprintf("close fd %d", tmp), unix.SYS_CLOSE, tmp); err != nil {
				return err
			}
		}
		// The fcntl, dups and close above are queued: with the fd
		// table known (fdtable.go) every file of the task goes in one
		// batch.
		if img.claimFile(id, fdOwner{pid: p.tgid, vpid: p.vtgid, fd: uint64(targets[0].GetFd())}) {
			if img.special != nil && img.special.OwnerByTask && img.special.Handles(id) {
				// The first task to get the file names its owner,
				// inside the tree's pid namespace (files.Restorer).
				if err := p.queueFown(fmt.Sprintf("fd %d", targets[0].GetFd()), uint64(targets[0].GetFd()), files.Fown(fe)); err != nil {
					return err
				}
			}
		}
		if img.special != nil {
			for _, fi := range targets {
				if err := p.takeLocks(img, uint64(fi.GetFd())); err != nil {
					return fmt.Errorf("restore locks of fd %d of task %d: %w", fi.GetFd(), p.pid, err)
				}
			}
		}
	}
	return nil
}

// openRegFile opens a regular file, directory or device by its path with
// the dumped flags and position, and returns the (temporary) fd.
func (p *puppet) openRegFile(reg *pb.RegFileEntry) (uint64, error) {
	name := reg.GetName()
	// Creation flags did their work at the first open; O_TRUNC again
	// would destroy the file's contents.
	flags := uint64(reg.GetFlags()) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_CLOEXEC | unix.O_NOCTTY)
	fd, err := p.openat(name, flags|unix.O_NOCTTY)
	if err != nil {
		return 0, fmt.Errorf("open %q: %w", name, err)
	}
	if pos := reg.GetPos(); pos != 0 {
		if err := p.queuef(fmt.Sprintf("seek %q to %d", name, pos), unix.SYS_LSEEK, fd, pos, unix.SEEK_SET); err != nil {
			return 0, err
		}
	}
	if err := p.queueFown(fmt.Sprintf("%q", name), fd, reg.GetFown()); err != nil {
		return 0, err
	}
	return fd, nil
}

// queueFown queues the fcntls that give fd (desc) the owner and signal o
// records (nothing if it had no owner). The task names the owner by the
// images' pid, as its own pid namespace numbers it.
func (p *puppet) queueFown(desc string, fd uint64, o *pb.FownEntry) error {
	own, tid, sig, ok := files.FownArgs(o)
	if !ok {
		return nil
	}
	if tid {
		addr, err := p.put(files.OwnerTIDArg(own))
		if err != nil {
			return err
		}
		if err := p.queuef(fmt.Sprintf("set owner of %s to thread %d", desc, own), unix.SYS_FCNTL, fd, unix.F_SETOWN_EX, addr); err != nil {
			return err
		}
	} else if err := p.queuef(fmt.Sprintf("set owner of %s to %d", desc, own), unix.SYS_FCNTL, fd, unix.F_SETOWN, uint64(int64(own))); err != nil {
		return err
	}
	if sig != 0 {
		return p.queuef(fmt.Sprintf("set signal of %s", desc), unix.SYS_FCNTL, fd, unix.F_SETSIG, uint64(sig))
	}
	return nil
}

// fdOwner is the task (a puppet until Resume) that holds a restored open
// file, and under which number.
type fdOwner struct {
	pid int // in crtools' pid namespace
	// vpid is pid as the puppets see it (the images' pid): the one to
	// name in a syscall injected into another puppet.
	vpid int
	fd   uint64
}

// fdOwner returns the task that got open file id first.
func (img *imageSet) fdOwner(id uint32) (fdOwner, bool) {
	img.fdOwnersMu.Lock()
	defer img.fdOwnersMu.Unlock()
	o, ok := img.fdOwners[id]
	return o, ok
}

// claimFile makes o the owner of open file id unless it has one, and tells
// whether it did.
func (img *imageSet) claimFile(id uint32, o fdOwner) bool {
	img.fdOwnersMu.Lock()
	defer img.fdOwnersMu.Unlock()
	if _, ok := img.fdOwners[id]; ok {
		return false
	}
	img.fdOwners[id] = o
	return true
}

// takeFrom copies fd of puppet pid into this puppet (pidfd_getfd).
func (p *puppet) takeFrom(pid int, fd uint64) (uint64, error) {
	pidfd, err := p.openFd(fmt.Sprintf("open pidfd of task %d", pid), unix.SYS_PIDFD_OPEN, uint64(pid), 0)
	if err != nil {
		return 0, err
	}
	nfd, err := p.openFd(fmt.Sprintf("take fd %d of task %d", fd, pid), unix.SYS_PIDFD_GETFD, pidfd, fd, 0)
	// Closed with the caller's next calls (one batch).
	if qerr := p.queueIgnore(unix.SYS_CLOSE, pidfd); err == nil {
		err = qerr
	}
	return nfd, err
}
