package harness

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// A test binary inherits whatever descriptors its own parent leaked
// without close-on-exec (a CI runner's pipe, say). Go never passes its own
// descriptors to children, but it leaves inherited ones as they are, so
// every workload would get them too, and a dump would then have to deal
// with a pipe that is none of the workload's business. Marking them
// close-on-exec once, when a test binary that uses the harness starts,
// gives every workload exactly the descriptors its test meant it to have.
func init() { closeOnExecInherited() }

func closeOnExecInherited() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 2 {
			continue
		}
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC == 0 {
			_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags|unix.FD_CLOEXEC)
		}
	}
}
