package proc

import (
	"errors"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// readBufs are the buffers ReadFile reads into: a dump reads thousands of
// /proc files, and growing a fresh buffer for each (smaps of a small
// process is 30 KiB) cost more CPU than the reads themselves (allocation,
// copies, zeroing and faulting in new heap pages).
var readBufs = sync.Pool{New: func() any {
	b := make([]byte, 64<<10)
	return &b
}}

// ReadFile reads a whole /proc file like os.ReadFile, with the same errors
// (*os.PathError wrapping the errno), but with plain open/read/close: the
// os package registers every file with its poller (fcntl twice, epoll_ctl,
// fcntl twice more, fstat), six syscalls per file that /proc never needs;
// a dump of a tree reads thousands of these files. It reads into a pooled
// buffer with large reads and returns a copy of exactly the file's size.
func ReadFile(path string) ([]byte, error) {
	return readCopy(path, false)
}

// ReadRecord is ReadFile for a /proc file the kernel makes in one piece
// (single_open, simple_read_from_buffer: stat, status, fdinfo, limits,
// personality, auxv, oom_score_adj, loginuid, ...): the first read with
// room for it returns the whole file, so the read that would return 0 at
// its end is not made (a dump reads some 15 such files a task). Not for
// files of many records (smaps, timers, children, mountinfo), whose reads
// stop at the kernel's buffer.
func ReadRecord(path string) ([]byte, error) {
	return readCopy(path, true)
}

func readCopy(path string, record bool) ([]byte, error) {
	var out []byte
	err := readPooled(path, record, func(b []byte) error {
		out = make([]byte, len(b))
		copy(out, b)
		return nil
	})
	return out, err
}

// readPooled reads path like ReadFile into a pooled buffer and hands its
// contents to parse, which must not keep them: a parser that copies what
// it keeps (ParseMaps) needs no copy of the whole file, which for smaps is
// several fresh pages per task. record: the file is one record
// (ReadRecord), whole after a read that did not fill the buffer.
func readPooled(path string, record bool, parse func([]byte) error) error {
	return readPooledFrom(&readBufs, 64<<10, path, record, parse)
}

// smapsBufs are the buffers ReadSmaps reads into: the smaps of a process
// with 50 threads (two mappings each: stack and guard) is some 110 KiB,
// which a 64 KiB buffer of readBufs read only after growing it (a copy
// into a new buffer, its tail zeroed: twice the pages faulted in). A fresh
// large buffer is not zeroed; only the pages a read fills are touched.
var smapsBufs = sync.Pool{New: func() any {
	b := make([]byte, smapsBufSize)
	return &b
}}

const smapsBufSize = 256 << 10

// readPooledFrom is readPooled with buffers of pool, which are size bytes
// when new.
func readPooledFrom(pool *sync.Pool, size int, path string, record bool, parse func([]byte) error) error {
	fd, err := OpenNoPoll(path, unix.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	bp := pool.Get().(*[]byte)
	defer func() {
		if len(*bp) > 1<<20 {
			// Not kept: one huge smaps would pin its buffer.
			*bp = make([]byte, size)
		}
		pool.Put(bp)
	}()
	buf := *bp
	n := 0
	for {
		if n == len(buf) {
			buf = append(buf, make([]byte, len(buf))...)
			*bp = buf
		}
		m, err := unix.Read(fd, buf[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 || (record && n+m < len(buf)) {
			return parse(buf[:n+m])
		}
		n += m
	}
}

// Open opens a /proc file for reading like os.Open (same errors), without
// registering it with Go's poller (see ReadFile), for a caller that reads
// it in its own way (pagemap at offsets, PAGEMAP_SCAN).
func Open(path string) (*os.File, error) {
	fd, err := OpenNoPoll(path, unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

// OpenNoPoll opens path with a plain open(2), O_CLOEXEC added, again when a
// signal interrupts it, and never registers it with Go's poller (see
// ReadFile): for /proc files here, and for the image files (engine/image)
// and /proc/PID/mem (engine/ptrace) a dump or restore opens by the hundred.
// Its error is an *os.PathError as os.OpenFile's.
func OpenNoPoll(path string, flags int, perm uint32) (int, error) {
	for {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, perm)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}
