package handoff

import "golang.org/x/sys/unix"

// start makes the holder and returns its PID, or 0 if it could not.
func start() int {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return 0
	}
	r := p[0]
	if r < 3 {
		// The holder closes the descriptors below and above its own
		// with two calls, which want one of each.
		fd, err := unix.FcntlInt(uintptr(r), unix.F_DUPFD_CLOEXEC, 3)
		unix.Close(r)
		if err != nil {
			unix.Close(p[1])
			return 0
		}
		r = fd
	}
	pid := spawn(r)
	// The holder has copies of both ends. This process keeps the write
	// end open until it exits.
	unix.Close(r)
	if pid <= 0 {
		unix.Close(p[1])
		return 0
	}
	return pid
}
