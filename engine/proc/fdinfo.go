package proc

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// FdInfo holds the common lines of /proc/PID/fdinfo/N. Lines specific to a
// file type (eventfd-count, tfd, inotify wd, ...) are kept in Extra, in order.
type FdInfo struct {
	Pos   int64
	Flags uint32 // file status flags (O_*), including O_CLOEXEC for the fd
	MntID int
	Ino   uint64
	Extra []string
}

// ParseFdInfo parses the contents of a fdinfo file.
func ParseFdInfo(data []byte) (*FdInfo, error) {
	fi := &FdInfo{MntID: -1}
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			fi.Extra = append(fi.Extra, line)
			continue
		}
		val = strings.TrimSpace(val)
		var err error
		switch key {
		case "pos":
			fi.Pos, err = strconv.ParseInt(val, 10, 64)
			seen |= 1
		case "flags":
			var v uint64
			v, err = strconv.ParseUint(val, 8, 32)
			fi.Flags = uint32(v)
			seen |= 2
		case "mnt_id":
			fi.MntID, err = strconv.Atoi(val)
		case "ino":
			fi.Ino, err = strconv.ParseUint(val, 10, 64)
		default:
			fi.Extra = append(fi.Extra, line)
		}
		if err != nil {
			return nil, fmt.Errorf("parse fdinfo: %s: %w", key, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("parse fdinfo: %w", err)
	}
	if seen != 3 {
		return nil, fmt.Errorf("parse fdinfo: no pos or flags line")
	}
	return fi, nil
}

// ReadFdInfo reads /proc/PID/fdinfo/FD.
func ReadFdInfo(pid, fd int) (*FdInfo, error) {
	path := fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd)
	b, err := ReadRecord(path)
	if err != nil {
		return nil, err
	}
	fi, err := ParseFdInfo(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return fi, nil
}

// ListFds returns the open descriptors of a task, sorted.
func ListFds(pid int) ([]int, error) {
	return listNumbers(fmt.Sprintf("/proc/%d/fd", pid))
}

// ListTasks returns the thread ids of a process, sorted.
func ListTasks(pid int) ([]int, error) {
	return listNumbers(fmt.Sprintf("/proc/%d/task", pid))
}

// listNumbers lists the numeric entries of a /proc directory, sorted
// (ReadDirNames: a dump lists the threads of every task at each freeze
// pass and the fds of every task).
func listNumbers(dir string) ([]int, error) {
	var out []int
	err := ReadDirNames(dir, func(name string) {
		if v, err := strconv.Atoi(name); err == nil {
			out = append(out, v)
		}
	})
	if err != nil {
		return nil, err
	}
	sort.Ints(out)
	return out, nil
}

// ReadDirNames calls f with each name in dir but . and .., in the
// directory's order. It reads the directory with open and getdents into a
// pooled buffer: os.Open tries every file for the poller (and sets it
// blocking again) and Readdirnames allocates a buffer per call. The
// names f saw before an error stay seen.
func ReadDirNames(dir string, f func(name string)) error {
	fd, err := OpenNoPoll(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := *bp
	var names []string
	for {
		n, err := unix.ReadDirent(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", dir, &os.PathError{Op: "getdents", Path: dir, Err: err})
		}
		if n <= 0 {
			return nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names[:0])
		for _, name := range names {
			f(name)
		}
	}
}

// ParseChildren parses /proc/PID/task/TID/children: space-separated pids.
func ParseChildren(data []byte) ([]int, error) {
	var out []int
	for _, f := range bytes.Fields(data) {
		v, err := strconv.Atoi(string(f))
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("parse children: bad pid %q", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// ReadChildren reads the children of one thread of a process.
func ReadChildren(pid, tid int) ([]int, error) {
	b, err := ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, tid))
	if err != nil {
		return nil, err
	}
	return ParseChildren(b)
}
