package restore

import (
	"bytes"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/ptrace"
)

// TestFillPieces: writeRuns cuts the runs into fillChunk pieces that its
// workers copy in parallel; runs of odd lengths that start, end and cross
// piece boundaries anywhere, one-page runs and holes all land where they
// belong, and the holes stay zero.
func TestFillPieces(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	const base = 0x10000000
	const chunkPages = fillChunk / pageSize
	npages := uint64(5*chunkPages + 7)
	data := make([]byte, npages*pageSize)
	for i := range data {
		data[i] = byte(i*13 + i/pageSize)
	}
	// [start, end) in pages.
	runs := [][2]uint64{
		{0, 1}, {2, chunkPages - 1}, {chunkPages, chunkPages + 1},
		{chunkPages + 3, 3*chunkPages + 5}, {3*chunkPages + 6, 3*chunkPages + 7},
		{4*chunkPages - 1, npages},
	}
	pw, err := image.CreatePages(dir, image.Pagemap, 1234, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, len(data))
	var filled uint64
	for _, r := range runs {
		if err := pw.AddRun(base+r[0]*pageSize, data[r[0]*pageSize:r[1]*pageSize], r[1]-r[0]); err != nil {
			t.Fatal(err)
		}
		copy(want[r[0]*pageSize:], data[r[0]*pageSize:r[1]*pageSize])
		filled += (r[1] - r[0]) * pageSize
	}
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	pm, err := image.ReadPagemap(dir, image.Pagemap, 1234)
	if err != nil {
		t.Fatal(err)
	}
	r, task, p := startAnonTask(t, dir, base, npages*pageSize, unix.PROT_READ|unix.PROT_WRITE, pm)
	defer r.Close()
	pid := task.pid
	var reported int64
	p.filled = func(n int64) { reported += n }
	err = r.tr.Do(func() error {
		if err := p.unmapPuppet(); err != nil {
			return err
		}
		if _, err := p.mapVMAs(r.img, newShmState(), task.mm.Vmas, pm); err != nil {
			return err
		}
		n, err := p.fillPages(dir, pm)
		if err != nil {
			return err
		}
		if n != int64(filled) {
			return fmt.Errorf("filled %d bytes, want %d", n, filled)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if reported != int64(filled) {
		t.Errorf("progress told %d bytes, want %d", reported, filled)
	}
	got := make([]byte, len(data))
	if _, err := ptrace.ReadMem(pid, base, got); err != nil {
		t.Fatal(err)
	}
	for pg := uint64(0); pg < npages; pg++ {
		if !bytes.Equal(got[pg*pageSize:(pg+1)*pageSize], want[pg*pageSize:(pg+1)*pageSize]) {
			t.Fatalf("page %d of the puppet differs from the pages file (first of maybe more)", pg)
		}
	}
}
