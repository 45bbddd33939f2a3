package files

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fOwnerEx is struct f_owner_ex (F_GETOWN_EX, F_SETOWN_EX).
type fOwnerEx struct {
	Type int32 // F_OWNER_TID, F_OWNER_PID or F_OWNER_PGRP
	Pid  int32
}

// Owner kinds of struct f_owner_ex.
const (
	fOwnerTID  = 0
	fOwnerPID  = 1
	fOwnerPGRP = 2
)

// getOwnEx returns the owner of fd by F_GETOWN_EX. Plain F_GETOWN returns
// a process group negated, which the syscall convention cannot tell from
// an error when the group id is below 4096 (always so in a young pid
// namespace); F_GETOWN_EX also tells a thread owner from a process.
func getOwnEx(fd int) (fOwnerEx, error) {
	var o fOwnerEx
	if _, _, e := unix.Syscall(unix.SYS_FCNTL, uintptr(fd), unix.F_GETOWN_EX, uintptr(unsafe.Pointer(&o))); e != 0 {
		return o, os.NewSyscallError("fcntl(F_GETOWN_EX)", e)
	}
	return o, nil
}

// setOwnEx gives fd the owner o (F_SETOWN_EX).
func setOwnEx(fd int, o fOwnerEx) error {
	if _, _, e := unix.Syscall(unix.SYS_FCNTL, uintptr(fd), unix.F_SETOWN_EX, uintptr(unsafe.Pointer(&o))); e != 0 {
		return os.NewSyscallError("fcntl(F_SETOWN_EX)", e)
	}
	return nil
}
