package dump

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// getRobustList reads the robust futex list head of tid from outside
// (get_robust_list works on any task we may ptrace).
func getRobustList(tid int) (head uint64, length uint64, err error) {
	_, _, errno := unix.Syscall(unix.SYS_GET_ROBUST_LIST, uintptr(tid),
		uintptr(unsafe.Pointer(&head)), uintptr(unsafe.Pointer(&length)))
	if errno != 0 {
		return 0, 0, errno
	}
	return head, length, nil
}
