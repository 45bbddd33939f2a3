package dump

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// PAGEMAP_SCAN (linux/fs.h, kernel 6.7+): one ioctl on /proc/PID/pagemap
// returns the runs of pages matching a category filter, instead of 8 bytes
// per page read from the same file.
const (
	pageIsWPAllowed = 1 << 0
	pageIsWritten   = 1 << 1
	pageIsFile      = 1 << 2
	pageIsPresent   = 1 << 3
	pageIsSwapped   = 1 << 4
	pageIsPFNZero   = 1 << 5
	pageIsHuge      = 1 << 6

	// _IOWR('f', 16, struct pm_scan_arg)
	ioctlPagemapScan = 0xc0606610
)

// pmScanArg is struct pm_scan_arg.
type pmScanArg struct {
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

// pageRegion is struct page_region.
type pageRegion struct {
	Start      uint64
	End        uint64
	Categories uint64
}

// pagemapScan runs one PAGEMAP_SCAN over [start, end) with the given
// filter, filling vec. It returns the number of regions and where the walk
// stopped (end, unless vec filled up first).
func pagemapScan(fd int, start, end uint64, vec []pageRegion, inverted, mask, anyof, ret uint64) (int, uint64, error) {
	arg := pmScanArg{
		Size:              uint64(unsafe.Sizeof(pmScanArg{})),
		Start:             start,
		End:               end,
		Vec:               uint64(uintptr(unsafe.Pointer(&vec[0]))),
		VecLen:            uint64(len(vec)),
		CategoryInverted:  inverted,
		CategoryMask:      mask,
		CategoryAnyofMask: anyof,
		ReturnMask:        ret,
	}
	for {
		n, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlPagemapScan, uintptr(unsafe.Pointer(&arg)))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, 0, errno
		}
		return int(n), arg.WalkEnd, nil
	}
}

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
