package restore

import (
	"bytes"
	"testing"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
)

// TestDiffPages: what a heir's memory, a copy of its parent's in the VMAs
// kept, needs: its pages that differ or that the parent lacks (also in a
// VMA of its own), and a drop of the parent's pages it lacks; the
// parent's pages outside the kept VMAs need nothing (their VMA goes).
func TestDiffPages(t *testing.T) {
	page := func(b byte) []byte { return bytes.Repeat([]byte{b}, pageSize) }
	const a = 0x10000
	kept := []*pb.VmaEntry{{Start: u64(a), End: u64(a + 8*pageSize)}}
	// Parent: pages 0-3 of the kept VMA, and one in a VMA it alone has.
	ppm := &image.PageIndex{Runs: []image.PageRun{
		{Vaddr: a, NrPages: 4, Offset: 0, Flags: image.PEPresent},
		{Vaddr: 0x90000, NrPages: 1, Offset: 4 * pageSize, Flags: image.PEPresent},
	}}
	pdata := bytes.Join([][]byte{page(1), page(2), page(3), page(4), page(9)}, nil)
	// Heir: page 0 the same, page 1 its own, pages 2-3 not at all (the
	// parent's dropped), page 5 only it has, and one page in a VMA of
	// its own.
	cpm := &image.PageIndex{Runs: []image.PageRun{
		{Vaddr: a, NrPages: 2, Offset: 0, Flags: image.PEPresent},
		{Vaddr: a + 5*pageSize, NrPages: 1, Offset: 2 * pageSize, Flags: image.PEPresent},
		{Vaddr: 0xa0000, NrPages: 1, Offset: 3 * pageSize, Flags: image.PEPresent},
	}}
	cdata := bytes.Join([][]byte{page(1), page(7), page(5), page(6)}, nil)
	d := diffPages(ppm, pdata, cpm, cdata, kept)
	wantRuns := []iovec{{a + pageSize, pageSize}, {a + 5*pageSize, pageSize}, {0xa0000, pageSize}}
	wantFrom := []int64{pageSize, 2 * pageSize, 3 * pageSize}
	if len(d.runs) != len(wantRuns) {
		t.Fatalf("runs %v, want %v", d.runs, wantRuns)
	}
	for i := range wantRuns {
		if d.runs[i] != wantRuns[i] || d.from[i] != wantFrom[i] {
			t.Errorf("run %d: %v from %d, want %v from %d", i, d.runs[i], d.from[i], wantRuns[i], wantFrom[i])
		}
	}
	if d.size != 3*pageSize {
		t.Errorf("size %d, want %d", d.size, 3*pageSize)
	}
	if want := []iovec{{a + 2*pageSize, 2 * pageSize}}; len(d.drops) != 1 || d.drops[0] != want[0] {
		t.Errorf("drops %v, want %v", d.drops, want)
	}
}
