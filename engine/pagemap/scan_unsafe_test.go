package pagemap

import (
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestScanPresent maps four pages, touches the middle two and asks
// PAGEMAP_SCAN of this process for the present ones.
func TestScanPresent(t *testing.T) {
	ps := os.Getpagesize()
	b, err := unix.Mmap(-1, 0, 4*ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	defer unix.Munmap(b)
	b[ps] = 1
	b[2*ps] = 1
	base := uint64(uintptr(unsafe.Pointer(&b[0])))

	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatalf("open pagemap: %v", err)
	}
	defer f.Close()
	vec := make([]Region, 4)
	end := base + uint64(4*ps)
	n, walkEnd, err := Scan(int(f.Fd()), base, end, vec,
		Filter{Mask: PageIsPresent, Return: PageIsPresent})
	if err != nil {
		t.Fatalf("PAGEMAP_SCAN: %v", err)
	}
	if walkEnd != end {
		t.Errorf("walk ended at %#x, want %#x", walkEnd, end)
	}
	want := Region{Start: base + uint64(ps), End: base + uint64(3*ps), Categories: PageIsPresent}
	if n != 1 || vec[0] != want {
		t.Fatalf("regions %+v, want [%+v]", vec[:n], want)
	}
}
