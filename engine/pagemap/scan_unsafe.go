// Package pagemap holds the PAGEMAP_SCAN ioctl ABI (linux/fs.h, kernel
// 6.7+) shared by the dump engine and the kernel feature probes: one
// ioctl on /proc/PID/pagemap returns the runs of pages matching a
// category filter, instead of 8 bytes per page read from the same file.
package pagemap

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Page categories (PAGE_IS_*), the bits of the filter masks and of
// Region.Categories.
const (
	PageIsWPAllowed = 1 << 0
	PageIsWritten   = 1 << 1
	PageIsFile      = 1 << 2
	PageIsPresent   = 1 << 3
	PageIsSwapped   = 1 << 4
	PageIsPFNZero   = 1 << 5
	PageIsHuge      = 1 << 6
)

const (
	// IoctlScan is PAGEMAP_SCAN = _IOWR('f', 16, struct pm_scan_arg).
	IoctlScan = 0xc0606610
	// ScanCheckWPAsync is PM_SCAN_CHECK_WPASYNC, a ScanArg flag.
	ScanCheckWPAsync = 1 << 1
)

// ScanArg is struct pm_scan_arg (checked in abi_unsafe_test.go).
type ScanArg struct {
	Size              uint64
	Flags             uint64
	Start             uint64
	End               uint64
	WalkEnd           uint64
	Vec               uint64
	VecLen            uint64
	MaxPages          uint64
	CategoryInverted  uint64
	CategoryMask      uint64
	CategoryAnyofMask uint64
	ReturnMask        uint64
}

// Region is struct page_region: a run of pages and its categories.
type Region struct {
	Start      uint64
	End        uint64
	Categories uint64
}

// Filter selects pages: a page matches when its categories XOR Inverted,
// masked by Mask, equal Mask, and (when AnyOf is not 0) it has one of the
// AnyOf categories. Return is the categories reported in Region.
type Filter struct {
	Inverted, Mask, AnyOf, Return uint64
}

// Scan runs one PAGEMAP_SCAN over [start, end) of the pagemap file fd,
// filling vec (not empty). It returns the number of regions and where the
// walk stopped (end, unless vec filled up first).
func Scan(fd int, start, end uint64, vec []Region, f Filter) (int, uint64, error) {
	arg := ScanArg{
		Size:              uint64(unsafe.Sizeof(ScanArg{})),
		Start:             start,
		End:               end,
		Vec:               uint64(uintptr(unsafe.Pointer(&vec[0]))),
		VecLen:            uint64(len(vec)),
		CategoryInverted:  f.Inverted,
		CategoryMask:      f.Mask,
		CategoryAnyofMask: f.AnyOf,
		ReturnMask:        f.Return,
	}
	for {
		n, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), IoctlScan, uintptr(unsafe.Pointer(&arg)))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, 0, errno
		}
		return int(n), arg.WalkEnd, nil
	}
}
