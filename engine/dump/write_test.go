package dump

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/proc"
)

// TestPlanBatches: the batches the readers share cover the ranges in
// address order, back to back in the pages file, each within batchBytes
// and maxIov, with a range read through /proc/PID/mem in batches of its
// own of one run each.
func TestPlanBatches(t *testing.T) {
	const mib = 1 << 20
	var ranges []pageRange
	// Many one-page ranges (more than maxIov), a big range, a viaMem
	// range bigger than a batch, and a plain range after it.
	for i := range uint64(maxIov + 10) {
		ranges = append(ranges, pageRange{start: 0x100000 + 2*i*pageSize, end: 0x100000 + (2*i+1)*pageSize})
	}
	ranges = append(ranges,
		pageRange{start: 0x10000000, end: 0x10000000 + 20*mib},
		pageRange{start: 0x20000000, end: 0x20000000 + 10*mib, viaMem: true},
		pageRange{start: 0x30000000, end: 0x30000000 + 3*pageSize},
	)
	plans := planBatches(ranges)
	var want uint64
	for _, r := range ranges {
		want += r.end - r.start
	}
	var off, last uint64
	var got []pageRange
	for i, p := range plans {
		if p.off != off {
			t.Fatalf("batch %d at offset %d, want %d", i, p.off, off)
		}
		if p.bytes == 0 || p.bytes > batchBytes || len(p.runs) > maxIov {
			t.Fatalf("batch %d: %d bytes in %d runs", i, p.bytes, len(p.runs))
		}
		if p.viaMem && len(p.runs) != 1 {
			t.Fatalf("batch %d via /proc/PID/mem has %d runs", i, len(p.runs))
		}
		var n uint64
		for _, r := range p.runs {
			if r.start < last {
				t.Fatalf("batch %d: run %#x before %#x", i, r.start, last)
			}
			last = r.end
			n += r.end - r.start
			if k := len(got); k > 0 && got[k-1].end == r.start && got[k-1].viaMem == p.viaMem {
				got[k-1].end = r.end
			} else {
				got = append(got, pageRange{start: r.start, end: r.end, viaMem: p.viaMem})
			}
		}
		if n != p.bytes {
			t.Fatalf("batch %d: runs hold %d bytes, plan says %d", i, n, p.bytes)
		}
		off += p.bytes
	}
	if off != want {
		t.Fatalf("batches hold %d bytes, ranges %d", off, want)
	}
	if len(got) != len(ranges) {
		t.Fatalf("batches cover %d ranges, want %d", len(got), len(ranges))
	}
	for i := range got {
		if got[i] != ranges[i] {
			t.Fatalf("range %d covered as %+v, want %+v", i, got[i], ranges[i])
		}
	}
	if len(plans) < 2+3+2 {
		t.Fatalf("%d batches: cut too coarsely", len(plans))
	}
}

// patternSrc maps SIZE bytes of private anonymous memory and writes every
// 8-byte word at address a with a*0x9e3779b97f4a7c15, except in the hole
// [LO, HI); then, when NONE > 0, the last NONE bytes are made PROT_NONE
// (read through /proc/PID/mem). Its arguments: SIZE LO HI NONE, in bytes
// (patternBig, patternSmall).
const patternSrc = `
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
	if (argc != 5)
		return 1;
	size_t n = strtoul(argv[1], NULL, 0), lo = strtoul(argv[2], NULL, 0);
	size_t hi = strtoul(argv[3], NULL, 0), none = strtoul(argv[4], NULL, 0);
	uint64_t *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 2;
	for (size_t i = 0; i < n / 8; i++) {
		if (i * 8 >= lo && i * 8 < hi)
			continue;
		p[i] = (uint64_t)(uintptr_t)&p[i] * 0x9e3779b97f4a7c15ULL;
	}
	if (none > 0 && mprotect((char *)p + n - none, none, PROT_NONE))
		return 3;
	FILE *f = fopen(getenv("READY"), "w");
	fprintf(f, "ready %lx\n", (unsigned long)(uintptr_t)p);
	fclose(f);
	for (;;) pause();
}
`

// patternBig: 21 MiB without the tenth MiB, the last MiB PROT_NONE.
var patternBig = []string{strconv.Itoa(21 << 20), strconv.Itoa(9 << 20), strconv.Itoa(10 << 20), strconv.Itoa(1 << 20)}

// patternSmall: 100 pages without pages 30-33 (a hole): with its stack and
// libc, a task of less than smallCopyBytes of pages.
var patternSmall = []string{strconv.Itoa(100 * 4096), strconv.Itoa(30 * 4096), strconv.Itoa(34 * 4096), "0"}

// TestCopyPagesInMemory dumps a process with patterned memory into a
// tmpfs directory, where the readers copy with raw system calls
// (pagesOut.raw), and into a temporary directory, and checks in both
// that the pages images hold exactly the written pages, each with its
// contents: the two readers, batches, chunks and the /proc/PID/mem path.
func TestCopyPagesInMemory(t *testing.T) {
	requireRoot(t)
	shm, err := os.MkdirTemp("/dev/shm", "crtools-dump-test-")
	if err != nil {
		t.Fatalf("a tmpfs directory for the images: %v", err)
	}
	defer os.RemoveAll(shm)
	for _, base := range []string{shm, t.TempDir()} {
		pid, ready := startDetachedReady(t, patternSrc, patternBig...)
		var start uint64
		if _, err := fmt.Sscanf(ready, "ready %x", &start); err != nil {
			t.Fatalf("ready line %q: %v", ready, err)
		}
		dir := filepath.Join(base, "img")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := dumpPid(t, pid, dir, engine.FinishLeaveRunning); err != nil {
			t.Fatal(err)
		}
		if base == shm {
			f, err := os.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			if !inMemory(f) {
				t.Errorf("%s is not seen as in memory: the raw copy was not tested", dir)
			}
			f.Close()
		}
		const mib = 1 << 20
		end := start + 21*mib
		pm, err := image.ReadPagemap(dir, image.Pagemap, uint64(pid))
		if err != nil {
			t.Fatal(err)
		}
		pages, err := image.OpenPages(dir, image.Pagemap, uint64(pid))
		if err != nil {
			t.Fatal(err)
		}
		// Which of the mapping's pages the images hold, and their words.
		var got []pageRange
		for i, r := range pm.Runs {
			if r.End() <= start || r.Vaddr >= end {
				continue
			}
			data, err := pages.ReadRun(i)
			if err != nil {
				t.Fatal(err)
			}
			// A run may go on into a neighbouring mapping.
			from, to := max(r.Vaddr, start), min(r.End(), end)
			for a := from; a < to; a += 8 {
				w := binary.LittleEndian.Uint64(data[a-r.Vaddr:])
				if want := a * 0x9e3779b97f4a7c15; w != want {
					t.Fatalf("%s: word at %#x is %#x, want %#x", dir, a, w, want)
				}
			}
			if k := len(got); k > 0 && got[k-1].end == from {
				got[k-1].end = to
			} else {
				got = append(got, pageRange{start: from, end: to})
			}
		}
		pages.Close()
		want := []pageRange{{start: start, end: start + 9*mib}, {start: start + 10*mib, end: end}}
		if !slices.Equal(got, want) {
			t.Errorf("%s: pages saved %#v, want %#v", dir, got, want)
		}
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// TestWriteImagesMetaFails: the small images are written while the pages
// are copied; when one of them cannot be written, WriteImages fails with
// that error (after the copy stopped), and the tree can be resumed.
func TestWriteImagesMetaFails(t *testing.T) {
	requireRoot(t)
	pid := startDetached(t, patternSrc, patternBig...)
	dir := t.TempDir()
	// A directory where the inventory goes: creating it fails.
	if err := os.Mkdir(image.Inventory.Path(dir, 0), 0o700); err != nil {
		t.Fatal(err)
	}
	d := collected(t, engine.DumpOptions{Pid: pid, Log: testLog(t)})
	err := d.WriteImages(context.Background(), dir)
	if rerr := d.Resume(); rerr != nil {
		t.Errorf("resume: %v", rerr)
	}
	if err == nil || !strings.Contains(err.Error(), "inventory") {
		t.Fatalf("WriteImages with an unwritable inventory: %v", err)
	}
	if s, err := proc.ReadStatus(pid); err != nil || s.TracerPid != 0 {
		t.Errorf("pid %d after resume: %+v %v", pid, s, err)
	}
}

// TestCopyPagesSmall: a task with less than smallCopyBytes of pages is
// copied through smallChunkBytes of its reader's chunk, several pieces
// whose ends fall inside runs and at a hole; the images hold exactly the
// written pages with their contents.
func TestCopyPagesSmall(t *testing.T) {
	requireRoot(t)
	pid, ready := startDetachedReady(t, patternSrc, patternSmall...)
	var start uint64
	if _, err := fmt.Sscanf(ready, "ready %x", &start); err != nil {
		t.Fatalf("ready line %q: %v", ready, err)
	}
	dir := filepath.Join(t.TempDir(), "img")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := dumpPid(t, pid, dir, engine.FinishLeaveRunning); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	pm, err := image.ReadPagemap(dir, image.Pagemap, uint64(pid))
	if err != nil {
		t.Fatal(err)
	}
	var all uint64
	for _, r := range pm.Runs {
		all += r.NrPages * pageSize
	}
	if all > smallCopyBytes || all < 3*smallChunkBytes {
		t.Fatalf("the task has %d bytes of pages: not the small copy of several pieces this test is for", all)
	}
	pages, err := image.OpenPages(dir, image.Pagemap, uint64(pid))
	if err != nil {
		t.Fatal(err)
	}
	defer pages.Close()
	end := start + 100*pageSize
	var got []pageRange
	for i, r := range pm.Runs {
		if r.End() <= start || r.Vaddr >= end {
			continue
		}
		data, err := pages.ReadRun(i)
		if err != nil {
			t.Fatal(err)
		}
		from, to := max(r.Vaddr, start), min(r.End(), end)
		for a := from; a < to; a += 8 {
			if w, want := binary.LittleEndian.Uint64(data[a-r.Vaddr:]), a*0x9e3779b97f4a7c15; w != want {
				t.Fatalf("word at %#x is %#x, want %#x", a, w, want)
			}
		}
		if k := len(got); k > 0 && got[k-1].end == from {
			got[k-1].end = to
		} else {
			got = append(got, pageRange{start: from, end: to})
		}
	}
	want := []pageRange{{start: start, end: start + 30*pageSize}, {start: start + 34*pageSize, end: end}}
	if !slices.Equal(got, want) {
		t.Errorf("pages saved %#v, want %#v", got, want)
	}
}
