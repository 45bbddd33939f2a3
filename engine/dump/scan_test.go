package dump

import (
	"os"
	"slices"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/proc"
)

// TestPageScanSorted scans this (Go, many-VMA) process both ways and checks
// that the runs are sorted, disjoint, inside their VMAs, and that
// PAGEMAP_SCAN and the pagemap-read fallback agree.
func TestPageScanSorted(t *testing.T) {
	maps, err := proc.ReadSmaps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fast := &pageScanner{f: f}
	slow := &pageScanner{f: f, noScan: true}
	for _, m := range maps {
		if m.Shared || m.Flag("io") || m.Flag("pf") || specialMapping(m.Path) {
			continue
		}
		a, err := fast.scan(m.Start, m.End, m.IsFile())
		if err != nil {
			t.Fatalf("scan %#x-%#x: %v", m.Start, m.End, err)
		}
		prev := m.Start
		for _, r := range a {
			if r.start < prev || r.end <= r.start || r.end > m.End {
				t.Errorf("vma %#x-%#x: run %#x-%#x after %#x", m.Start, m.End, r.start, r.end, prev)
			}
			prev = r.end
		}
		b, err := slow.scan(m.Start, m.End, m.IsFile())
		if err != nil {
			t.Fatal(err)
		}
		var na, nb uint64
		for _, r := range a {
			na += r.end - r.start
		}
		for _, r := range b {
			nb += r.end - r.start
		}
		// The fallback cannot tell the zero page, so it may see more.
		if na > nb {
			t.Errorf("vma %#x-%#x %q: PAGEMAP_SCAN found %d bytes, pagemap %d", m.Start, m.End, m.Path, na, nb)
		}
	}
}

// specialMapping: the kernel's own mappings, which collectMemory never
// scans.
func specialMapping(path string) bool {
	switch path {
	case "[vsyscall]", "[vdso]", "[vvar]", "[vvar_vclock]", "[uprobes]":
		return true
	}
	return false
}

// TestPageScanAnon: in an anonymous mapping, the scan (which leaves the
// file category out of its filter there) finds exactly the pages written,
// not the untouched ones, and the same as a scan that asks for the file
// category.
func TestPageScanAnon(t *testing.T) {
	const n = 64
	mem, err := unix.Mmap(-1, 0, n*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	// Pages 0-3 and 10 written, the rest untouched. (Pages only read
	// are not used: this kind of host maps no zero page.)
	for _, p := range []int{0, 1, 2, 3, 10} {
		mem[p*pageSize] = 1
	}
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start := uint64(uintptr(unsafe.Pointer(&mem[0])))
	end := start + n*pageSize
	want := []pageRange{{start: start, end: start + 4*pageSize}, {start: start + 10*pageSize, end: start + 11*pageSize}}
	sc := &pageScanner{f: f}
	for _, file := range []bool{false, true} {
		got, err := sc.scanIoctl(start, end, file)
		if err != nil {
			t.Fatalf("scan (file category %v): %v", file, err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("scan (file category %v) = %#v, want %#v", file, got, want)
		}
	}
}
