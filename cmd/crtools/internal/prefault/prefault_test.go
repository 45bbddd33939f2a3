package prefault

import (
	"encoding/binary"
	"fmt"
	"os"
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

// TestHeap: Heap maps the heap from where it grows next to the end of its
// mapping.
func TestHeap(t *testing.T) {
	front := heapFront() // before the maps are read, as Heap does
	start, end := populateHeap(readMaps(), front, heapMax)
	if end-start < 32<<10 {
		t.Fatalf("populated %#x-%#x: want at least the 33 KiB object heapFront placed there", start, end)
	}
	if n, total := present(t, start, end); n != total {
		t.Errorf("heap %x-%x: %d of %d pages present after Heap", start, end, n, total)
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
