package restore

import (
	"bytes"
	"fmt"
	"strconv"

	procfs "github.com/crtools/crtools/engine/proc"
)

// Small /proc reads on the per-task path go through engine/proc, which
// reads with open, read and close only (os.Open tries every file for the
// poller: four fcntl and an epoll_ctl more per file).

// findMapping returns the start and length of the mapping named name in
// /proc/PID/maps.
func findMapping(pid int, name string) (uint64, uint64, error) {
	path := fmt.Sprintf("/proc/%d/maps", pid)
	b, err := procfs.ReadFile(path)
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

// openFds lists the fd numbers open in task pid (/proc/PID/fd), sorted.
func openFds(pid int) ([]uint64, error) {
	fds, err := procfs.ListFds(pid)
	if err != nil {
		return nil, err
	}
	out := make([]uint64, len(fds))
	for i, fd := range fds {
		out[i] = uint64(fd)
	}
	return out, nil
}
