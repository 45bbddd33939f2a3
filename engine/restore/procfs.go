package restore

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// Small /proc reads on the per-task path. os.Open costs four fcntl and an
// epoll_ctl besides the open (the file is tried for the poller), which
// under a hypervisor that traps every syscall adds up over 50 tasks:
// these read with open, read and close only.

// readProcFile reads a whole (small) /proc file into buf, grown as needed.
func readProcFile(path string, buf []byte) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fsError{op: "open", path: path, err: err}
	}
	defer unix.Close(fd)
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, &fsError{op: "read", path: path, err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

// fsError is an *fs.PathError look-alike that needs no os.File.
type fsError struct {
	op, path string
	err      error
}

func (e *fsError) Error() string { return e.op + " " + e.path + ": " + e.err.Error() }
func (e *fsError) Unwrap() error { return e.err }

// findMapping returns the start and length of the mapping named name in
// /proc/PID/maps.
func findMapping(pid int, name string) (uint64, uint64, error) {
	path := fmt.Sprintf("/proc/%d/maps", pid)
	b, err := readProcFile(path, make([]byte, 0, 4096))
	if err != nil {
		return 0, 0, err
	}
	suffix := []byte(" " + name)
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if !bytes.HasSuffix(line, suffix) {
			continue
		}
		rng, _, _ := bytes.Cut(line, []byte(" "))
		lo, hi, ok := bytes.Cut(rng, []byte("-"))
		s, err1 := strconv.ParseUint(string(lo), 16, 64)
		e, err2 := strconv.ParseUint(string(hi), 16, 64)
		if !ok || err1 != nil || err2 != nil || e < s {
			return 0, 0, fmt.Errorf("parse %s line %q", path, line)
		}
		return s, e - s, nil
	}
	return 0, 0, fmt.Errorf("no %s mapping in %s", name, path)
}

// openFds lists the fd numbers open in task pid (/proc/PID/fd).
func openFds(pid int) ([]uint64, error) {
	path := fmt.Sprintf("/proc/%d/fd", pid)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fsError{op: "open", path: path, err: err}
	}
	defer unix.Close(fd)
	var out []uint64
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, &fsError{op: "read", path: path, err: err}
		}
		if n == 0 {
			return out, nil
		}
		var names []string
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
		for _, name := range names {
			v, err := strconv.ParseUint(name, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("read %s: entry %q", path, name)
			}
			out = append(out, v)
		}
	}
}
