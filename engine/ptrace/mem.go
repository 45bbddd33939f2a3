package ptrace

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
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

func procMemIO(pid int, addr uintptr, buf []byte, write bool) (int, error) {
	flag := os.O_RDONLY
	if write {
		flag = os.O_WRONLY
	}
	f, err := os.OpenFile("/proc/"+strconv.Itoa(pid)+"/mem", flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	done := 0
	for done < len(buf) {
		// Addresses above 2^63 do not fit an int64 offset; user space
		// never has them.
		off := int64(addr) + int64(done)
		var n int
		if write {
			n, err = f.WriteAt(buf[done:], off)
		} else {
			n, err = f.ReadAt(buf[done:], off)
		}
		done += n
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = unix.EIO
			}
			return done, err
		}
	}
	return done, nil
}
