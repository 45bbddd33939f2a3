package dump

import (
	"os"
	"testing"

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
		if m.Shared || m.Flag("io") || m.Flag("pf") || m.Path == "[vsyscall]" {
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
