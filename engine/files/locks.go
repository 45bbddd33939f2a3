package files

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
)

// File locks. fdinfo lists the locks taken through a descriptor:
//
//	lock:	1: FLOCK  ADVISORY  WRITE 9339 fe:00:9978919 0 EOF
//	lock:	1: OFDLCK ADVISORY  READ -1 fe:00:9978919 10 14
//	lock:	1: POSIX  ADVISORY  WRITE 9339 fe:00:9978920 0 EOF
//
// flock and OFD locks belong to the open file description: crtools takes
// them again on the restored file before handing it over (TakeLocks).
// POSIX locks belong to the process: the restore engine must inject
// fcntl(fd, F_SETLK, &flock) into the owning puppet once the descriptor is
// installed; PosixLocks gives the arguments.

// Lock kinds of FileLockEntry.Flag (CRIU's values).
const (
	FlPosix = 1
	FlFlock = 2
	FlOFD   = 4
)

func (d *Dumper) locks(pid, fd int, desc string, info *fdinfo) ([]*pb.FileLockEntry, error) {
	var out []*pb.FileLockEntry
	for _, l := range info.withPrefix("lock:") {
		le, err := parseLockLine(l)
		if err != nil {
			return nil, fmt.Errorf("parse lock of %s: %w", desc, err)
		}
		if le == nil {
			continue // a waiter, not a held lock
		}
		if !d.opts.FileLocks {
			return nil, fmt.Errorf("%s holds a %s lock; dump with -l/--file-locks to save it (all users of the lock must be in the dump)", desc, lockKindName(le.GetFlag()))
		}
		le.Pid, le.Fd = i32p(int32(pid)), i32p(int32(fd))
		out = append(out, le)
		d.set.Locks = append(d.set.Locks, le)
	}
	return out, nil
}

// CheckLockOwners refuses images with a lock held by a pid that is no task
// of the images (isTask false): TakeLocks matches the locks with the
// restored tasks by that pid, and such a lock would silently not be taken
// again. (crtools before it dumped a tree with -n pid wrote the pid of the
// task in crtools' own namespace.)
func (r *Restorer) CheckLockOwners(isTask func(pid int) bool) error {
	for _, l := range r.set.Locks {
		if !isTask(int(l.GetPid())) {
			return fmt.Errorf("the images hold a %s lock of pid %d through fd %d, but no task of the images has that pid", lockKindName(l.GetFlag()), l.GetPid(), l.GetFd())
		}
	}
	return nil
}

func lockKindName(flag uint32) string {
	switch flag {
	case FlPosix:
		return "POSIX"
	case FlFlock:
		return "flock"
	case FlOFD:
		return "OFD"
	}
	return "unknown"
}

// parseLockLine parses one "N: KIND MODE TYPE PID MAJ:MIN:INO START END"
// line. It returns nil for a blocked waiter ("N: -> ...").
func parseLockLine(s string) (*pb.FileLockEntry, error) {
	f := strings.Fields(s)
	if len(f) > 1 && f[1] == "->" {
		return nil, nil
	}
	if len(f) != 8 {
		return nil, fmt.Errorf("lock line %q: %d fields", s, len(f))
	}
	le := &pb.FileLockEntry{}
	switch f[1] {
	case "POSIX":
		le.Flag = u32p(FlPosix)
	case "FLOCK":
		le.Flag = u32p(FlFlock)
	case "OFDLCK":
		le.Flag = u32p(FlOFD)
	default:
		return nil, fmt.Errorf("lock of kind %s: %w", f[1], ErrUnsupported)
	}
	if f[2] != "ADVISORY" {
		return nil, fmt.Errorf("%s lock: %w", f[2], ErrUnsupported)
	}
	switch f[3] {
	case "READ":
		le.Type = u32p(unix.F_RDLCK)
	case "WRITE":
		le.Type = u32p(unix.F_WRLCK)
	default:
		return nil, fmt.Errorf("lock type %s: %w", f[3], ErrUnsupported)
	}
	start, err := strconv.ParseInt(f[6], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("lock start %q: %w", f[6], err)
	}
	length := int64(0) // to the end of file
	if f[7] != "EOF" {
		end, err := strconv.ParseInt(f[7], 10, 64)
		if err != nil || end < start {
			return nil, fmt.Errorf("lock end %q", f[7])
		}
		length = end - start + 1
	}
	le.Start, le.Len = i64p(start), i64p(length)
	return le, nil
}

// TakeLocks takes again, on f (the file restored for descriptor fd of task
// pid), the flock and OFD locks that were held through it. It returns the
// POSIX locks of that descriptor, which only the owning task can take.
func (r *Restorer) TakeLocks(pid, fd int, f *os.File) ([]*pb.FileLockEntry, error) {
	var posix []*pb.FileLockEntry
	for _, l := range r.set.Locks {
		if int(l.GetPid()) != pid || int(l.GetFd()) != fd {
			continue
		}
		switch l.GetFlag() {
		case FlFlock:
			how := unix.LOCK_SH
			if l.GetType() == unix.F_WRLCK {
				how = unix.LOCK_EX
			}
			if err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err != nil {
				return nil, fmt.Errorf("take flock of fd %d of pid %d again: %w", fd, pid, os.NewSyscallError("flock", err))
			}
		case FlOFD:
			fl := flockOf(l)
			if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &fl); err != nil {
				return nil, fmt.Errorf("take OFD lock of fd %d of pid %d again: %w", fd, pid, os.NewSyscallError("fcntl(F_OFD_SETLK)", err))
			}
		case FlPosix:
			posix = append(posix, l)
		}
	}
	return posix, nil
}

func flockOf(l *pb.FileLockEntry) unix.Flock_t {
	return unix.Flock_t{Type: int16(l.GetType()), Whence: 0, Start: l.GetStart(), Len: l.GetLen()}
}

// FlockSize is sizeof(struct flock) on x86-64.
const FlockSize = 32

// PosixLockArgs returns the fcntl command and the struct flock bytes that
// the owner task must pass to fcntl(fd, cmd, &flock) to take l again.
func PosixLockArgs(l *pb.FileLockEntry) (cmd int, flock []byte) {
	b := make([]byte, FlockSize)
	le := binary.LittleEndian
	le.PutUint16(b[0:], uint16(l.GetType())) // l_type
	le.PutUint16(b[2:], 0)                   // l_whence: SEEK_SET
	le.PutUint64(b[8:], uint64(l.GetStart()))
	le.PutUint64(b[16:], uint64(l.GetLen()))
	// l_pid (b[24:28]) must be 0 for F_SETLK.
	return unix.F_SETLK, b
}
