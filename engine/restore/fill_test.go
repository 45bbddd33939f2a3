package restore

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/ptrace"
)

// TestFillPieces: writeRuns cuts the runs into pieces (fillChunk, or
// fillChunkSmall for at most fillSmall bytes, one worker) that its workers
// copy in parallel; runs of odd lengths that start, end and cross piece
// boundaries anywhere, one-page runs and holes all land where they
// belong, and the holes stay zero. Also with the first worker moved to
// another CPU (fillOn), as RestoreState does.
func TestFillPieces(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name  string
		chunk uint64
		extra uint64 // pages after the last whole piece
		pin   bool
	}{
		{"big", fillChunk, 7, false},
		{"big-pinned", fillChunk, 7, true},
		{"small-pinned", fillChunkSmall, 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testFillPieces(t, tc.chunk/pageSize, tc.extra, tc.pin)
		})
	}
}

func testFillPieces(t *testing.T, chunkPages, extra uint64, pin bool) {
	dir := t.TempDir()
	const base = 0x10000000
	npages := uint64(5*chunkPages + extra)
	if small := npages*pageSize <= fillSmall; small != (chunkPages*pageSize == fillChunkSmall) {
		t.Fatalf("%d pages in pieces of %d: writeRuns would cut them otherwise", npages, chunkPages)
	}
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
	pinned, calls := 0, 0 // pieces copied, and by the pinned worker
	var orig unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil {
		t.Fatal(err)
	}
	if pin {
		// The last CPU of the test's mask: the worker must run there,
		// and its thread must get the whole mask back.
		var on unix.CPUSet
		for c := 0; c < 1024; c++ {
			if orig.IsSet(c) {
				on.Zero()
				on.Set(c)
			}
		}
		p.tr.fillOn, p.tr.fillBack = &on, &orig
		p.filled = func(n int64) {
			reported += n
			var cur unix.CPUSet
			if err := unix.SchedGetaffinity(0, &cur); err == nil && cur == on {
				pinned++
			}
			calls++
		}
	}
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
	if pin {
		// One worker copies every piece of a small fill; the first of
		// two copies at least one.
		if pinned == 0 || (chunkPages*pageSize == fillChunkSmall && pinned != calls) {
			t.Errorf("%d of %d pieces copied on the CPU of fillOn", pinned, calls)
		}
		// Every thread of this process has its mask back, but the
		// tracer (pinned until Resume).
		tids, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range tids {
			tid, _ := strconv.Atoi(e.Name())
			if tid == r.tr.Tid() {
				continue
			}
			var cur unix.CPUSet
			if err := unix.SchedGetaffinity(tid, &cur); err == nil && cur != orig {
				t.Errorf("thread %d kept CPU mask %v after the fill, want %v", tid, cur, orig)
			}
		}
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
