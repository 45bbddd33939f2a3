package dump

import (
	"fmt"
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

// scan scans the pages of one mapping as collectMemory does (scanAll with
// a run of one).
func (p *pageScanner) scan(start, end uint64, file bool) ([]pageRange, error) {
	return p.scanAll([]scanVMA{{start: start, end: end, file: file, newRun: true}})
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

// scanAllSrc maps anonymous and file memory next to each other, touches
// parts of it (some pages written, some only read: the zero page), and
// waits.
const scanAllSrc = `#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(void)
{
	size_t pg = 4096;
	/* 100 pages reserved, then split: anonymous, file, anonymous. */
	char *a = mmap(NULL, 100 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int fd = open("/proc/self/exe", O_RDONLY);
	char *f = mmap(a + 64 * pg, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, 0);
	char *b = mmap(a + 68 * pg, 32 * pg, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	volatile char sink;
	FILE *r;

	if (a == MAP_FAILED || f == MAP_FAILED || b == MAP_FAILED)
		return 2;
	for (int i = 0; i < 64; i += 3)
		a[i * pg] = 1;
	for (int i = 1; i < 64; i += 5)
		sink = a[i * pg];
	f[0] = 1;      /* copied on write */
	sink = f[pg];  /* page cache */
	sink = b[0];   /* zero page */
	(void)sink;
	if (!(r = fopen(getenv("READY"), "w")))
		return 2;
	fputs("ready\n", r);
	fclose(r);
	for (;;)
		pause();
}
`

// TestScanAllSplitsRuns: scanAll (one PAGEMAP_SCAN for each run of
// neighbouring mappings) finds, mapping by mapping, the same pages as a
// scan of each mapping alone, in a stopped process whose anonymous and
// file mappings follow each other.
func TestScanAllSplitsRuns(t *testing.T) {
	requireRoot(t)
	pid := startDetached(t, scanAllSrc)
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer unix.Kill(pid, unix.SIGCONT)
	maps, err := proc.ReadSmaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	f, err := proc.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var want []scanVMA
	var single []pageRange
	one := &pageScanner{f: f}
	for i, m := range maps {
		if m.Shared || m.Flag("io") || m.Flag("pf") || specialMapping(m.Path) || m.Rss+m.Swap == 0 {
			continue
		}
		newRun := len(want) == 0 || want[len(want)-1].index != i-1
		want = append(want, scanVMA{start: m.Start, end: m.End, file: m.IsFile(), viaMem: !m.Read, index: i, newRun: newRun})
		rs, err := one.scan(m.Start, m.End, m.IsFile())
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			r.viaMem = !m.Read
			single = append(single, r)
		}
	}
	runs := 0
	for _, v := range want {
		if v.newRun {
			runs++
		}
	}
	if runs >= len(want) {
		t.Errorf("%d runs for %d mappings: no run holds two", runs, len(want))
	}
	got, err := (&pageScanner{f: f}).scanAll(want)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, single) {
		t.Errorf("scanAll found %v, the mappings one by one %v", got, single)
	}
	if len(single) == 0 {
		t.Error("no pages found")
	}
}
