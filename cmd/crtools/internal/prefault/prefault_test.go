package prefault

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestParseMapping(t *testing.T) {
	for _, c := range []struct {
		line string
		want mapping
		ok   bool
	}{
		{"00400000-00a57000 r-xp 00000000 fe:00 262244                             /usr/local/bin/crtools",
			mapping{0x400000, 0xa57000, "r-xp", "/usr/local/bin/crtools"}, true},
		{"0112f000-0116d000 rw-p 00d2f000 fe:00 262244 /tmp/a b", // a path with a space
			mapping{0x112f000, 0x116d000, "rw-p", "/tmp/a b"}, true},
		{"0116d000-011b3000 rw-p 00000000 00:00 0 ", mapping{0x116d000, 0x11b3000, "rw-p", ""}, true},
		{"0116d000-011b3000 rw-p 00000000 00:00 0", mapping{0x116d000, 0x11b3000, "rw-p", ""}, true},
		{"39a029c00000-39a02a400000 rw-p 00000000 00:00 0", mapping{0x39a029c00000, 0x39a02a400000, "rw-p", ""}, true},
		{"7ffe021b0000-7ffe021d1000 rw-p 00000000 00:00 0                          [stack]",
			mapping{0x7ffe021b0000, 0x7ffe021d1000, "rw-p", "[stack]"}, true},
		{"ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]",
			mapping{0xffffffffff600000, 0xffffffffff601000, "--xp", "[vsyscall]"}, true},
		{"", mapping{}, false},
		{"00400000", mapping{}, false},
		{"00400000-", mapping{}, false},
		{"00400000-00a57000", mapping{}, false},
		{"00400000-00a57000 r-x", mapping{}, false},
		{"00a57000-00400000 r-xp 00000000 fe:00 1 /x", mapping{}, false}, // end before start
		{"0040g000-00a57000 r-xp 00000000 fe:00 1 /x", mapping{}, false},
		{"00400000-00a57000 r-xp", mapping{}, false},
		{"00400000-00a57000 r-xp  fe:00 1 /x", mapping{}, false},
		{"100000000000000000-100000000000000001 r-xp 00000000 fe:00 1 /x", mapping{}, false}, // 18 digits
	} {
		got, ok := parseMapping(c.line)
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("parseMapping(%q) = %+v, %v; want %+v, %v", c.line, got, ok, c.want, c.ok)
		}
	}
}

func TestForEachMapping(t *testing.T) {
	data := "00400000-00a57000 r-xp 00000000 fe:00 1 /bin/x\n" +
		"garbage\n" +
		"00a57000-0112f000 r--p 00657000 fe:00 1 /bin/x\n" +
		"0112f000-0116d000 rw-p 00d2f000 fe:00 1 /bin/x" // cut short: no newline
	var got []string
	forEachMapping([]byte(data), func(m mapping) { got = append(got, fmt.Sprintf("%x %s", m.start, m.perms)) })
	if want := []string{"400000 r-xp", "a57000 r--p"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestHeapMapping: the heap mapping runs over the writable mappings of
// the same name next to each other (the runtime's chunks, the pieces
// MADV_HUGEPAGE splits off), and stops at a gap, another name or a
// mapping not writable.
func TestHeapMapping(t *testing.T) {
	maps := []byte("00400000-00a57000 r-xp 00000000 fe:00 1 /bin/x\n" +
		"c000000000-c000400000 ---p 00000000 00:00 0\n" +
		"c000400000-c000600000 rw-p 00000000 00:00 0\n" +
		"c000600000-c000800000 rw-p 00000000 00:00 0\n" + // split off
		"c000800000-c000c00000 rw-p 00000000 00:00 0\n" + // next chunk
		"c000c00000-c001000000 rw-p 00000000 00:00 0 [anon: other]\n" +
		"c001000000-c002000000 ---p 00000000 00:00 0\n" +
		"c002000000-c002400000 rw-p 00000000 00:00 0\n" +
		"c002500000-c002600000 rw-p 00000000 00:00 0\n") // after a gap
	for _, c := range []struct {
		a          uintptr
		start, end uintptr
	}{
		{0xc000400000, 0xc000400000, 0xc000c00000},
		{0xc0006fffff, 0xc000400000, 0xc000c00000},
		{0xc000bfffff, 0xc000400000, 0xc000c00000},
		{0xc000c00000, 0xc000c00000, 0xc001000000},
		{0xc002000000, 0xc002000000, 0xc002400000},
		{0xc002500000, 0xc002500000, 0xc002600000},
		{0xc000000000, 0, 0}, // not writable
		{0xc002400000, 0, 0}, // in the gap
		{0x00500000, 0, 0},
	} {
		m := heapMapping(maps, c.a)
		if m.start != c.start || m.end != c.end {
			t.Errorf("heapMapping(%#x) = %#x-%#x, want %#x-%#x", c.a, m.start, m.end, c.start, c.end)
		}
		wantEnd := c.end
		if wantEnd == 0 {
			wantEnd = c.a // none holds it
		}
		if got := mappingEnd(maps, c.a); got != wantEnd {
			t.Errorf("mappingEnd(%#x) = %#x, want %#x", c.a, got, wantEnd)
		}
	}
}

// TestMapsOfSelf parses this test binary's own maps: its text is found
// by textAddr, as init does.
func TestMapsOfSelf(t *testing.T) {
	text := textAddr()
	var bin []mapping
	n := 0
	forEachMapping(readMaps(), func(m mapping) {
		n++
		if m.contains(text) {
			bin = append(bin, m)
		}
	})
	if n < 10 {
		t.Fatalf("parsed %d mappings of /proc/self/maps, a Go process has more", n)
	}
	if len(bin) != 1 || bin[0].perms != "r-xp" || bin[0].path == "" {
		t.Fatalf("mapping of the text address %#x: %+v, want one r-xp mapping of the test binary", text, bin)
	}
	if exe, err := os.Readlink("/proc/self/exe"); err != nil || exe != bin[0].path {
		t.Errorf("text mapping path %q, /proc/self/exe is %q (%v)", bin[0].path, exe, err)
	}
}

// present counts the pages of [start, end) that are mapped in this
// process's page tables (/proc/self/pagemap bit 63).
func present(t *testing.T, start, end uintptr) (n, total int) {
	t.Helper()
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	total = int((end - start) / pageSize)
	buf := make([]byte, 8*total)
	if _, err := f.ReadAt(buf, int64(start/pageSize*8)); err != nil {
		t.Fatalf("read pagemap: %v", err)
	}
	for i := range total {
		if binary.LittleEndian.Uint64(buf[8*i:])>>63 != 0 {
			n++
		}
	}
	return n, total
}

// TestInitPopulatesBinary: after the package init, every page of the
// binary's text, read-only data and data is in the page tables, not only
// the few the test touched (the kernel maps 16 pages around a read fault,
// so without the init most of a 10 MiB text is absent).
func TestInitPopulatesBinary(t *testing.T) {
	text := textAddr()
	var binPath string
	checked := 0
	forEachMapping(readMaps(), func(m mapping) {
		if m.contains(text) {
			binPath = m.path
		}
		if binPath == "" || m.path != binPath || !m.readable() {
			return
		}
		checked++
		if n, total := present(t, m.start, m.end); n != total {
			t.Errorf("%x-%x %s %s: %d of %d pages present", m.start, m.end, m.perms, m.path, n, total)
		}
	})
	if checked < 2 {
		t.Errorf("checked %d mappings of the binary, want text, rodata and data", checked)
	}
}

// heapJob allocates and writes 1.5 MiB the way a job's allocations
// arrive: small objects (whose spans come from the P's block of pages)
// and a few large ones (from the page allocator), keeping them all. It
// returns the page faults this took and the 4 KiB pages written.
func heapJob() (faults, pages int) {
	var keep [][]byte
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	for i := range 160 {
		n := 8 << 10
		if i%40 == 0 {
			n = 128 << 10
		}
		b := make([]byte, n)
		for o := 0; o < n; o += pageSize {
			b[o] = 1
			pages++
		}
		keep = append(keep, b)
	}
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	heapKeep = append(heapKeep, keep...)
	return int(ru1.Minflt - ru0.Minflt), pages
}

// heapKeep keeps what the tests allocate alive.
var heapKeep [][]byte

// childEnv names the mode of a test's child process.
const childEnv = "PREFAULT_TEST_CHILD"

// inChildren runs the test named name again in a child process for each
// of modes, with childEnv set to the mode and the collector off: the heap
// is then young, as when crtools calls Heap (no collection has left a
// hole below its fronts). It returns each child's heapJob figures,
// "faults N pages M" in its log, per mode. The child process runs the
// test's checks (childEnv is set there).
func inChildren(t *testing.T, name string, modes ...string) map[string][][2]int {
	t.Helper()
	got := map[string][][2]int{}
	for _, mode := range modes {
		cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), childEnv+"="+mode, "GOGC=off")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: "+name) {
			t.Fatalf("child process %s: %v\n%s", mode, err, out)
		}
		var f, p int
		i := strings.Index(string(out), "faults ")
		if i < 0 {
			t.Fatalf("child process %s: no figures in\n%s", mode, out)
		}
		if _, err := fmt.Sscanf(string(out[i:]), "faults %d pages %d", &f, &p); err != nil {
			t.Fatalf("child process %s: %v in\n%s", mode, err, out)
		}
		got[mode] = append(got[mode], [2]int{f, p})
	}
	return got
}

// medianFaults is the median of the fault counts of runs, and the pages
// of the first.
func medianFaults(runs [][2]int) (faults, pages int) {
	f := make([]int, len(runs))
	for i, r := range runs {
		f[i] = r[0]
	}
	slices.Sort(f)
	return f[len(f)/2], runs[0][1]
}

// checkHeap checks what heap populated: every page present, and from the
// page allocator's front at most heapWant, at least half of it less one
// P's block of pages (heap counts the rest of the P's block in the first
// range; it takes what is left of the heap's mapping when that is more
// than half).
func checkHeap(t *testing.T, start, end, start2, end2 uintptr) {
	t.Helper()
	if end2-start2 < (heapWant-pageCacheBlock)/2 || end2-start2 > heapWant {
		t.Errorf("populated %#x-%#x from the page allocator's front: %d bytes, want %d to %d", start2, end2, end2-start2, (heapWant-pageCacheBlock)/2, heapWant)
	}
	for _, r := range [][2]uintptr{{start, end}, {start2, end2}} {
		if n, total := present(t, r[0], r[1]); n != total {
			t.Errorf("heap %x-%x: %d of %d pages present after Heap", r[0], r[1], n, total)
		}
	}
	// The page allocator's front on huge pages, where the kernel gives
	// them (THP enabled=madvise in CI, as on most distributions).
	want := thpAvailable(t)
	if n, total := huge(t, start2, end2); (want && n != total) || (!want && n != 0) {
		t.Errorf("heap %x-%x: %d of %d pages on huge pages after Heap (THP available: %v)", start2, end2, n, total, want)
	}
}

// thpEnv, when set in a child process, says its parent disabled THP for
// it (PR_SET_THP_DISABLE).
const thpEnv = "PREFAULT_TEST_NO_THP"

// thpAvailable reports whether the kernel gives this process 2 MiB
// transparent huge pages where it asks for them (MADV_HUGEPAGE): what
// hugeText and Heap decide by (thpAllowed).
func thpAvailable(t *testing.T) bool {
	t.Helper()
	ok := thpAllowed()
	if ok && os.Getenv(thpEnv) != "" {
		t.Errorf("thpAllowed: true in a process whose parent turned THP off (PR_SET_THP_DISABLE)")
	}
	return ok
}

// huge counts the pages of [start, end) that are part of a transparent
// huge page: their frame (/proc/self/pagemap) has KPF_THP in
// /proc/kpageflags (both need root, as the tests do).
func huge(t *testing.T, start, end uintptr) (n, total int) {
	t.Helper()
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	kf, err := os.Open("/proc/kpageflags")
	if err != nil {
		t.Fatal(err)
	}
	defer kf.Close()
	total = int((end - start) / pageSize)
	buf := make([]byte, 8*total)
	if _, err := pm.ReadAt(buf, int64(start/pageSize*8)); err != nil {
		t.Fatalf("read pagemap: %v", err)
	}
	const kpfTHP = 22
	flags := make([]byte, 8)
	for i := range total {
		e := binary.LittleEndian.Uint64(buf[8*i:])
		pfn := e & (1<<55 - 1)
		if e>>63 == 0 || pfn == 0 {
			continue // absent, or its frame hidden (not root)
		}
		if _, err := kf.ReadAt(flags, int64(pfn*8)); err != nil {
			t.Fatalf("read kpageflags: %v", err)
		}
		if binary.LittleEndian.Uint64(flags)>>kpfTHP&1 != 0 {
			n++
		}
	}
	return n, total
}

// TestHeap: after Heap, the allocations of a job land on pages it
// populated: in the median of five fresh processes, a fault for fewer
// than one page in eight written (the rest is the runtime's metadata,
// and the odd object placed elsewhere), where without it every page
// faults.
func TestHeap(t *testing.T) {
	if mode := os.Getenv(childEnv); mode != "" {
		switch mode {
		case "heap":
			start, end, start2, end2 := heap(heapWant)
			checkHeap(t, start, end, start2, end2)
		case "control":
			// What init populated is on huge pages.
			if n, total := huge(t, hugeStart, hugeEnd); total == 0 || (thpAvailable(t) && n != total) {
				t.Errorf("heap %x-%x advised by init: %d of %d pages on huge pages", hugeStart, hugeEnd, n, total)
			}
			// Past it: the huge page init advised takes a job like
			// heapJob whole.
			if large := largeFront(); large < hugeEnd {
				heapKeep = append(heapKeep, make([]byte, hugeEnd-large))
			}
		}
		faults, pages := heapJob()
		t.Logf("faults %d pages %d", faults, pages)
		return
	}
	runs := inChildren(t, "TestHeap", "control", "heap", "heap", "heap", "heap", "heap")
	if faults, pages := medianFaults(runs["control"]); faults < pages/2 {
		t.Errorf("without Heap: %d faults for %d pages written, want one a page: the count does not see faults", faults, pages)
	}
	if faults, pages := medianFaults(runs["heap"]); faults > pages/8 {
		t.Errorf("after Heap: %d faults for %d pages written (median of %v), want under %d", faults, pages, runs["heap"], pages/8)
	}
}

// TestHeapShortTail: when less than half of heapWant is left of the heap's
// mapping past the page allocator's front (Go 1.26 starts the heap at a
// random page of its first 4 MiB chunk), Heap populates the chunk the
// runtime maps next, and a job's allocations land there.
func TestHeapShortTail(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		// Use the mapping up to its last 256 KiB as a job would, 128 KiB
		// at a time.
		large := largeFront()
		mapEnd := mappingEnd(readMaps(), large-1)
		if mapEnd <= large-1 {
			t.Fatalf("no writable mapping holds the page allocator's front %#x", large)
		}
		for mapEnd-large > 256<<10 {
			b := make([]byte, 128<<10)
			heapKeep = append(heapKeep, b)
			large = sliceAddr(b) + 128<<10
		}
		start, end, start2, end2 := heap(heapWant)
		if start2 < mapEnd {
			t.Errorf("populated %#x-%#x and %#x-%#x: want the second past the mapping's end %#x", start, end, start2, end2, mapEnd)
		}
		checkHeap(t, start, end, start2, end2)
		faults, pages := heapJob()
		t.Logf("faults %d pages %d", faults, pages)
		return
	}
	runs := inChildren(t, "TestHeapShortTail", "short", "short", "short", "short", "short")
	if faults, pages := medianFaults(runs["short"]); faults > pages/8 {
		t.Errorf("after Heap: %d faults for %d pages written (median of %v), want under %d", faults, pages, runs["short"], pages/8)
	}
}

// TestHeapNoTHP: where the kernel gives no huge pages (here a child
// process with PR_SET_THP_DISABLE, as under enabled=never), Heap
// populates the same range on small pages, and a job's allocations land
// there as well.
func TestHeapNoTHP(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		start, end, start2, end2 := heap(heapWant)
		checkHeap(t, start, end, start2, end2)
		faults, pages := heapJob()
		t.Logf("faults %d pages %d", faults, pages)
		return
	}
	// The flag is the process's, inherited across fork and exec: set for
	// the moment this test starts its children.
	const prSetTHPDisable = 41
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetTHPDisable, 1, 0); errno != 0 {
		t.Fatalf("prctl(PR_SET_THP_DISABLE): %v", errno)
	}
	t.Setenv(thpEnv, "1")
	runs := inChildren(t, "TestHeapNoTHP", "nothp", "nothp", "nothp")
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetTHPDisable, 0, 0); errno != 0 {
		t.Fatalf("prctl(PR_SET_THP_DISABLE, 0): %v", errno)
	}
	if faults, pages := medianFaults(runs["nothp"]); faults > pages/8 {
		t.Errorf("after Heap: %d faults for %d pages written (median of %v), want under %d", faults, pages, runs["nothp"], pages/8)
	}
}

// TestPresent checks the pagemap reading the other tests rely on: a fresh
// anonymous mapping has no page present until it is populated.
func TestPresent(t *testing.T) {
	b, err := syscall.Mmap(-1, 0, 16*pageSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(b)
	start := sliceAddr(b)
	if n, _ := present(t, start, start+16*pageSize); n != 0 {
		t.Fatalf("%d pages of a fresh mapping present", n)
	}
	b[5*pageSize] = 1
	if n, _ := present(t, start, start+16*pageSize); n != 1 {
		t.Fatalf("%d pages present after touching one, want 1", n)
	}
	madvise(start, 16*pageSize, madvPopulateWrite)
	if n, _ := present(t, start, start+16*pageSize); n != 16 {
		t.Fatalf("%d of 16 pages present after MADV_POPULATE_WRITE", n)
	}
}

// TestDataSection: dataSection finds the .data section debug/elf finds in
// this test binary.
func TestDataSection(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := f.Section(".data")
	if f.Type != elf.ET_EXEC || s == nil {
		t.Fatalf("test binary: type %v, .data %v: want an executable with a .data section", f.Type, s)
	}
	fd := openExe()
	if fd < 0 {
		t.Fatal("open /proc/self/exe")
	}
	defer closeFd(fd)
	if got := dataSection(fd, execHeader(fd)); got != uintptr(s.Addr) {
		t.Errorf("dataSection() = %#x, want %#x", got, s.Addr)
	}
}

// TestTHPSetting checks thpSetting against the kernel's files, read here
// with package os: the bracketed choice of each, "" for a missing file.
func TestTHPSetting(t *testing.T) {
	for _, path := range []string{
		"/sys/kernel/mm/transparent_hugepage/enabled",
		"/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/enabled",
		"/sys/kernel/mm/transparent_hugepage/no-such-file",
	} {
		want := ""
		if data, err := os.ReadFile(path); err == nil {
			s := string(data)
			if i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']'); i >= 0 && j > i {
				want = s[i : j+1]
			}
		}
		fd := -1
		if f, err := os.Open(path); err == nil {
			// thpSetting closes it.
			if fd, err = syscall.Dup(int(f.Fd())); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
		if got := thpSetting(fd); got != want {
			t.Errorf("thpSetting(%s) = %q, want %q", path, got, want)
		}
	}
}
