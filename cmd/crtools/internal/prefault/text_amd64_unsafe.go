//go:build linux && amd64

package prefault

import "unsafe"

// scanArg is struct pm_scan_arg and scanRegion struct page_region
// (linux/fs.h), as engine/pagemap has them: this package imports nothing
// with an init (sys_amd64_unsafe.go).
type scanArg struct {
	size, flags, start, end, walkEnd, vec, vecLen, maxPages       uint64
	categoryInverted, categoryMask, categoryAnyofMask, returnMask uint64
}

type scanRegion struct{ start, end, categories uint64 }

// scanHuge reports whether every page of [start, end) is mapped by a
// transparent huge page, by PAGEMAP_SCAN on the pagemap file fd (kernel
// 6.7+; false where it fails).
func scanHuge(fd int, start, end uintptr) bool {
	var r [1]scanRegion
	arg := scanArg{
		size:         uint64(unsafe.Sizeof(scanArg{})),
		start:        uint64(start),
		end:          uint64(end),
		vec:          uint64(uintptr(unsafe.Pointer(&r[0]))),
		vecLen:       1,
		categoryMask: pageIsHuge | pageIsPresent,
		returnMask:   pageIsHuge,
	}
	for {
		n := int(rawSyscall3(sysIoctl, uintptr(fd), ioctlPagemapScan, uintptr(unsafe.Pointer(&arg))))
		if n == -eintr {
			continue
		}
		return n == 1 && r[0].start == uint64(start) && r[0].end == uint64(end)
	}
}

// nanotime reads CLOCK_MONOTONIC in nanoseconds (0 on an error).
func nanotime() int64 {
	var ts [2]int64
	if rawSyscall3(sysClockGettime, clockMonotonic, uintptr(unsafe.Pointer(&ts[0])), 0) != 0 {
		return 0
	}
	return ts[0]*1e9 + ts[1]
}

// fsType returns the file system type (statfs f_type) of the file fd, or
// 0 on an error.
func fsType(fd int) int64 {
	var st [15]int64 // struct statfs: f_type first
	if rawSyscall3(sysFstatfs, uintptr(fd), uintptr(unsafe.Pointer(&st[0])), 0) != 0 {
		return 0
	}
	return st[0]
}

// dirty reports whether a page of [off, off+n) of the file fd is dirty
// or being written back, by cachestat (Linux 6.5+; false where it fails).
func dirty(fd int, off, n uint64) bool {
	r := [2]uint64{off, n}
	var st struct{ cache, dirty, writeback, evicted, recentlyEvicted uint64 }
	if rawSyscall6(sysCachestat, uintptr(fd), uintptr(unsafe.Pointer(&r)), uintptr(unsafe.Pointer(&st)), 0, 0, 0) != 0 {
		return false
	}
	return st.dirty+st.writeback > 0
}
