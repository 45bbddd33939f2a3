//go:build !(linux && amd64)

package prefault

import "syscall"

// Elsewhere the system calls go through package syscall (which makes this
// package's init run later, after syscall's).

func openMaps() int { return openPath("/proc/self/maps") }

func openExe() int { return openPath("/proc/self/exe") }

func openPath(path string) int {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return fd
}

func readAt(fd int, off uint64, b []byte) int {
	n, err := syscall.Pread(fd, b, int64(off))
	if err != nil {
		return -1
	}
	return n
}

func read(fd int, b []byte) int {
	for {
		n, err := syscall.Read(fd, b)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return -1
		}
		return n
	}
}

func closeFd(fd int) { syscall.Close(fd) }

func madvise(addr, n uintptr, advice int) {
	syscall.Syscall(syscall.SYS_MADVISE, addr, n, uintptr(advice))
}

// openTHP opens the system-wide THP setting, or with perSize the 2 MiB
// size's own (Linux 6.8+), or returns -1.
func openTHP(perSize bool) int {
	if perSize {
		return openPath("/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/enabled")
	}
	return openPath("/sys/kernel/mm/transparent_hugepage/enabled")
}

// thpDisabled reports whether this process turned THP off
// (PR_GET_THP_DISABLE: 1), or cannot tell.
func thpDisabled() bool {
	const prGetTHPDisable = 42
	r, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prGetTHPDisable, 0, 0)
	return errno != 0 || r != 0
}
