package pagemap

import (
	"testing"
	"unsafe"
)

func TestABISizes(t *testing.T) {
	if s := unsafe.Sizeof(ScanArg{}); s != 96 {
		t.Errorf("pm_scan_arg is %d bytes, want 96", s)
	}
	if s := unsafe.Sizeof(Region{}); s != 24 {
		t.Errorf("page_region is %d bytes, want 24", s)
	}
	// The ioctl number encodes the size too.
	if got := uintptr(IoctlScan>>16) & 0x3fff; got != unsafe.Sizeof(ScanArg{}) {
		t.Errorf("PAGEMAP_SCAN encodes size %d", got)
	}
}
