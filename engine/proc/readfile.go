package proc

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// ReadFile reads a whole /proc file like os.ReadFile, with the same errors
// (*os.PathError wrapping the errno), but with plain open/read/close: the
// os package registers every file with its poller (fcntl twice, epoll_ctl,
// fcntl twice more, fstat), six syscalls per file that /proc never needs;
// a dump of a tree reads thousands of these files.
func ReadFile(path string) ([]byte, error) {
	var fd int
	var err error
	for {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, 4096)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}
