package ptrace

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/proc"
)

// ReadMem copies len(buf) bytes of pid's memory at addr into buf. It uses
// process_vm_readv, and /proc/PID/mem for what that cannot read (pages the
// task itself may not read, such as PROT_NONE ones). It returns how many
// bytes it read; fewer than len(buf) come with an error. Any goroutine may
// call it; pid need not be traced (root, or ptrace-attach rights, suffices).
func ReadMem(pid int, addr uintptr, buf []byte) (int, error) {
	done := 0
	for done < len(buf) {
		local := []unix.Iovec{{Base: &buf[done]}}
		local[0].SetLen(len(buf) - done)
		remote := []unix.RemoteIovec{{Base: addr + uintptr(done), Len: len(buf) - done}}
		var n int
		err := retry(func() (err error) {
			n, err = unix.ProcessVMReadv(pid, local, remote, 0)
			return err
		})
		if err != nil || n == 0 {
			break
		}
		done += n
	}
	if done == len(buf) {
		return done, nil
	}
	n, err := procMemIO(pid, addr+uintptr(done), buf[done:], false)
	done += n
	if err != nil {
		return done, fmt.Errorf("read %d bytes of pid %d at %#x: %w", len(buf), pid, addr, err)
	}
	return done, nil
}

// WriteMem copies buf into pid's memory at addr through /proc/PID/mem,
// which ignores page protections (so read-only and PROT_NONE pages can be
// filled). It returns how many bytes it wrote.
func WriteMem(pid int, addr uintptr, buf []byte) (int, error) {
	n, err := procMemIO(pid, addr, buf, true)
	if err != nil {
		return n, fmt.Errorf("write %d bytes to pid %d at %#x: %w", len(buf), pid, addr, err)
	}
	return n, nil
}

// procMemIO reads or writes pid's memory at addr through /proc/PID/mem,
// opened with a plain open: os.OpenFile would register the file with Go's
// poller (fcntl four times and an epoll_ctl that fails), and a dump writes
// the batch code of every task of a tree this way. Errors are
// *os.PathError, as the os package's.
func procMemIO(pid int, addr uintptr, buf []byte, write bool) (int, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/mem"
	flag, op := unix.O_RDONLY, "read"
	if write {
		flag, op = unix.O_WRONLY, "write"
	}
	fd, err := proc.OpenNoPoll(path, flag, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	done := 0
	for done < len(buf) {
		// Addresses above 2^63 do not fit an int64 offset; user space
		// never has them.
		off := int64(addr) + int64(done)
		var n int
		err := retry(func() (err error) {
			if write {
				n, err = unix.Pwrite(fd, buf[done:], off)
			} else {
				n, err = unix.Pread(fd, buf[done:], off)
			}
			return err
		})
		if err == nil && n <= 0 {
			err = unix.EIO // the end of what can be reached
		}
		if err != nil {
			return done, &os.PathError{Op: op, Path: path, Err: err}
		}
		done += n
	}
	return done, nil
}
