package dump

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawReadv is one process_vm_readv of remote into buf, made without
// telling the Go scheduler (pagesOut.raw says why and when).
func rawReadv(pid int, buf []byte, remote []unix.RemoteIovec) (int, error) {
	local := unix.Iovec{Base: &buf[0], Len: uint64(len(buf))}
	n, _, errno := unix.RawSyscall6(unix.SYS_PROCESS_VM_READV, uintptr(pid),
		uintptr(unsafe.Pointer(&local)), 1,
		uintptr(unsafe.Pointer(&remote[0])), uintptr(len(remote)), 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// rawPwrite is one pwrite of buf at off into fd, made without telling the
// Go scheduler (pagesOut.raw says why and when).
func rawPwrite(fd int, buf []byte, off int64) (int, error) {
	n, _, errno := unix.RawSyscall6(unix.SYS_PWRITE64, uintptr(fd),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), uintptr(off), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
