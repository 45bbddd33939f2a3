package restore

import (
	"fmt"
	"maps"
	"slices"

	"golang.org/x/sys/unix"
)

// fdTable is crtools' view of the fd numbers open in a puppet. It exists
// from the close_range that empties the puppet's own table (closeInherited)
// to the end of endProc. Each call that opens an fd returns the lowest
// free number, so with the table known, a call whose result is an fd
// (openat, pidfd_getfd) need not run alone to tell crtools the number: it
// is queued with the number it must return, and a whole task's files and
// mappings go in one batch instead of a stop per file. runPending checks
// every predicted number, and checkFds compares the table with
// /proc/PID/fd at the end, so a wrong prediction fails the restore instead
// of leaving a file on a wrong number.
type fdTable struct {
	open map[uint64]bool
}

func newFdTable(open ...uint64) *fdTable {
	t := &fdTable{open: map[uint64]bool{}}
	for _, fd := range open {
		t.open[fd] = true
	}
	return t
}

// lowestFree is the number the kernel gives the next new fd.
func (t *fdTable) lowestFree() uint64 {
	fd := uint64(0)
	for t.open[fd] {
		fd++
	}
	return fd
}

func (t *fdTable) del(fd uint64) { delete(t.open, fd) }

// fdResult says whether syscall nr with args returns a new fd.
func fdResult(nr int, a [6]uint64) bool {
	switch nr {
	case unix.SYS_OPENAT, unix.SYS_OPEN, unix.SYS_PIDFD_OPEN, unix.SYS_PIDFD_GETFD, unix.SYS_DUP,
		unix.SYS_MEMFD_CREATE, unix.SYS_EVENTFD2, unix.SYS_SOCKET, unix.SYS_EPOLL_CREATE1,
		unix.SYS_SIGNALFD4, unix.SYS_TIMERFD_CREATE, unix.SYS_INOTIFY_INIT1, unix.SYS_OPEN_TREE,
		unix.SYS_FSOPEN, unix.SYS_FSMOUNT, unix.SYS_FSPICK:
		return true
	case unix.SYS_FCNTL:
		return a[1] == unix.F_DUPFD || a[1] == unix.F_DUPFD_CLOEXEC
	}
	return false
}

// apply records the effect of a successful call nr(a) that returned ret.
func (t *fdTable) apply(nr int, a [6]uint64, ret uint64) {
	if fdResult(nr, a) {
		t.open[ret] = true
		return
	}
	t.applyQueued(nr, a)
}

// applyQueued records the effect of a call whose result is not known yet
// (queued); it returns false for a call that opens an fd, whose number
// only its result tells.
func (t *fdTable) applyQueued(nr int, a [6]uint64) bool {
	switch {
	case fdResult(nr, a):
		return false
	case nr == unix.SYS_DUP2 || nr == unix.SYS_DUP3:
		t.open[a[1]] = true
	case nr == unix.SYS_CLOSE:
		t.del(a[0])
	case nr == unix.SYS_CLOSE_RANGE:
		if a[2]&unix.CLOSE_RANGE_CLOEXEC != 0 {
			break
		}
		for fd := range t.open {
			if fd >= a[0] && fd <= a[1] {
				t.del(fd)
			}
		}
	}
	return true
}

// checkFds compares crtools' view of the puppet's fd table with the
// kernel's (/proc/PID/fd), once the queued calls have run.
func (p *puppet) checkFds() error {
	if p.fds == nil {
		return nil
	}
	got, err := openFds(p.pid) // procfs.go; sorted
	if err != nil {
		return fmt.Errorf("check the fd table of task %d: %w", p.pid, err)
	}
	want := slices.Sorted(maps.Keys(p.fds.open))
	if !slices.Equal(got, want) {
		return fmt.Errorf("check the fd table of task %d: it holds fds %v, crtools expected %v (a bug in crtools)", p.pid, got, want)
	}
	return nil
}
