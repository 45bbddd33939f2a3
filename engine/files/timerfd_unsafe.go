package files

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// setTicks stores n pending expirations in a timerfd (TFD_IOC_SET_TICKS
// reads a u64 through its pointer argument).
func setTicks(fd int, n uint64) error {
	v := n
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), tfdIocSetTicks, uintptr(unsafe.Pointer(&v))); e != 0 {
		return os.NewSyscallError("ioctl(TFD_IOC_SET_TICKS)", e)
	}
	return nil
}
