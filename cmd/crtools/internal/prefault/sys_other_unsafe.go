//go:build !(linux && amd64)

package prefault

import (
	"syscall"
	"unsafe"
)

func resident(addr uintptr, vec []byte) bool {
	_, _, errno := syscall.Syscall(syscall.SYS_MINCORE, addr, uintptr(len(vec))*pageSize, uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	return errno == 0
}
