//go:build linux && amd64

package prefault

import "unsafe"

// The system calls are made without package syscall so that this package
// imports nothing with an init of its own: the Go runtime initializes
// packages in import path order among those whose imports are done, so a
// package that waits for none runs among the very first (after errors and
// math), before internal/godebug, hash/crc32 and syscall, whose inits
// fault on pages of the binary the populate would have mapped.

// rawSyscall6 is in sys_linux_amd64.s.
func rawSyscall6(trap, a1, a2, a3, a4, a5, a6 uintptr) uintptr

// rawSyscall3 is rawSyscall6 for the calls of three arguments or fewer.
func rawSyscall3(trap, a1, a2, a3 uintptr) uintptr { return rawSyscall6(trap, a1, a2, a3, 0, 0, 0) }

const (
	sysRead    = 0
	sysClose   = 3
	sysLseek   = 8
	sysMincore = 27
	sysMadvise = 28
	sysOpenat  = 257

	oCloexec = 0x80000
	eintr    = 4
)

var (
	mapsPath = [...]byte{'/', 'p', 'r', 'o', 'c', '/', 's', 'e', 'l', 'f', '/', 'm', 'a', 'p', 's', 0}
	exePath  = [...]byte{'/', 'p', 'r', 'o', 'c', '/', 's', 'e', 'l', 'f', '/', 'e', 'x', 'e', 0}
)

// openMaps opens /proc/self/maps read-only, or returns -1.
func openMaps() int { return openPath(&mapsPath[0]) }

// openExe opens /proc/self/exe read-only, or returns -1.
func openExe() int { return openPath(&exePath[0]) }

func openPath(path *byte) int {
	atFdcwd := -100
	fd := int(rawSyscall3(sysOpenat, uintptr(atFdcwd), uintptr(unsafe.Pointer(path)), oCloexec))
	if fd < 0 {
		return -1
	}
	return fd
}

// readAt reads len(b) bytes at off (or fewer, at the end of the file);
// it returns the count, or -1 on an error.
func readAt(fd int, off uint64, b []byte) int {
	if int(rawSyscall3(sysLseek, uintptr(fd), uintptr(off), 0)) < 0 {
		return -1
	}
	n := 0
	for n < len(b) {
		m := read(fd, b[n:])
		if m <= 0 {
			break
		}
		n += m
	}
	return n
}

// read reads into b; it returns the count, 0 at the end, or -1 on an
// error. EINTR is retried.
func read(fd int, b []byte) int {
	for {
		n := int(rawSyscall3(sysRead, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b))))
		if n == -eintr {
			continue
		}
		if n < 0 {
			return -1
		}
		return n
	}
}

func closeFd(fd int) { rawSyscall3(sysClose, uintptr(fd), 0, 0) }

// madvise gives advice; errors are ignored: EINVAL where the kernel lacks
// the advice, ENOMEM/EFAULT if a range changed under us. Populating is
// only ever a head start.
func madvise(addr, n uintptr, advice int) { rawSyscall3(sysMadvise, addr, n, uintptr(advice)) }

// resident fills vec with the residency of the pages of [addr,
// addr+len(vec) pages) (mincore: bit 0 set for a page in memory); it
// returns false on an error (a part of the range not mapped).
func resident(addr uintptr, vec []byte) bool {
	return int(rawSyscall3(sysMincore, addr, uintptr(len(vec))*pageSize, uintptr(unsafe.Pointer(unsafe.SliceData(vec))))) == 0
}

var (
	thpPath = [...]byte{'/', 's', 'y', 's', '/', 'k', 'e', 'r', 'n', 'e', 'l', '/', 'm', 'm', '/',
		't', 'r', 'a', 'n', 's', 'p', 'a', 'r', 'e', 'n', 't', '_', 'h', 'u', 'g', 'e', 'p', 'a', 'g', 'e', '/',
		'e', 'n', 'a', 'b', 'l', 'e', 'd', 0}
	thp2MPath = [...]byte{'/', 's', 'y', 's', '/', 'k', 'e', 'r', 'n', 'e', 'l', '/', 'm', 'm', '/',
		't', 'r', 'a', 'n', 's', 'p', 'a', 'r', 'e', 'n', 't', '_', 'h', 'u', 'g', 'e', 'p', 'a', 'g', 'e', '/',
		'h', 'u', 'g', 'e', 'p', 'a', 'g', 'e', 's', '-', '2', '0', '4', '8', 'k', 'B', '/',
		'e', 'n', 'a', 'b', 'l', 'e', 'd', 0}
)

// openTHP opens the system-wide THP setting, or with perSize the 2 MiB
// size's own (Linux 6.8+), or returns -1.
func openTHP(perSize bool) int {
	if perSize {
		return openPath(&thp2MPath[0])
	}
	return openPath(&thpPath[0])
}

// thpDisabled reports whether this process turned THP off
// (PR_GET_THP_DISABLE: 1), or cannot tell.
func thpDisabled() bool {
	const prGetTHPDisable = 42
	return rawSyscall6(sysPrctl, prGetTHPDisable, 0, 0, 0, 0, 0) != 0
}
