package restore

import (
	"fmt"

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
	maps, err := procfs.ParseMaps(b)
	if err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", path, err)
	}
	for _, m := range maps {
		if m.Path == name {
			return m.Start, m.Size(), nil
		}
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
