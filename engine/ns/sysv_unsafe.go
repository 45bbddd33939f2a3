package ns

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Raw SysV IPC calls (x/sys/unix wraps shm only). Each returns the
// kernel's result or its errno.

func msgctl(id, cmd int, ds *msqidDS) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_MSGCTL, uintptr(id), uintptr(cmd), uintptr(unsafe.Pointer(ds)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func msgget(key int32, flags int) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_MSGGET, uintptr(key), uintptr(flags), 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// msgrcvCopy copies the message at index i of queue id into buf (its
// type in the first 8 bytes, then the text) and returns the text's size.
func msgrcvCopy(id int, buf []byte, i int) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_MSGRCV, uintptr(id), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)-8), uintptr(i), ipcNowait|msgCopy, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// msgsnd sends buf (type in the first 8 bytes, then the text).
func msgsnd(id int, buf []byte) error {
	_, _, e := unix.Syscall6(unix.SYS_MSGSND, uintptr(id), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)-8), ipcNowait, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func semctl(id, num, cmd int, arg unsafe.Pointer) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), uintptr(num), uintptr(cmd), uintptr(arg), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func semStatAt(idx int, ds *semidDS) (int, error) { return semctl(idx, 0, semStat, unsafe.Pointer(ds)) }
func semSetPerm(id int, ds *semidDS) error {
	_, err := semctl(id, 0, ipcSet, unsafe.Pointer(ds))
	return err
}
func semGet(id int, ds *semidDS) error {
	_, err := semctl(id, 0, ipcStat, unsafe.Pointer(ds))
	return err
}
func semMaxIdx() (int, error) {
	var info [16]int32 // struct seminfo: 10 ints
	return semctl(0, 0, semInfo, unsafe.Pointer(&info))
}
func semGetAll(id int, vals []uint16) error {
	_, err := semctl(id, 0, semGETALL, unsafe.Pointer(&vals[0]))
	return err
}
func semSetAll(id int, vals []uint16) error {
	_, err := semctl(id, 0, semSETALL, unsafe.Pointer(&vals[0]))
	return err
}

func semget(key int32, nsems, flags int) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_SEMGET, uintptr(key), uintptr(nsems), uintptr(flags))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// setEUID and setEGID set the calling thread's effective uid or gid
// alone (raw calls: Go's wrappers change every thread of crtools).
func setEUID(uid uint32) error {
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
		return e
	}
	return nil
}

func setEGID(gid uint32) error {
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), uintptr(gid), ^uintptr(0)); e != 0 {
		return e
	}
	return nil
}

// sliceAddr is the address of b's first byte (b is a mapping).
func sliceAddr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }
