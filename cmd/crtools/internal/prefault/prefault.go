// Package prefault maps pages crtools is about to touch into its page
// tables with one madvise each, instead of one page fault per page.
//
// On the virtual machines crtools is measured on, a page fault costs
// 13-25 us (the guest's page tables are shadowed by the host), while
// MADV_POPULATE_READ maps a page of a file in 0.3 us and
// MADV_POPULATE_WRITE a fresh anonymous page in 1.3-1.5 us. A dump or a
// restore otherwise takes ~1000 faults: ~150 on its own text and
// read-only data, ~50 on its data and bss and ~600 on fresh heap pages
// (with GOGC at 400 a short run never collects, so every allocation
// lands on a page never touched before).
//
// Everything here is advice: a kernel without MADV_POPULATE_* (before
// 5.14) answers EINVAL, which is ignored, and crtools runs as before.
package prefault

// The MADV_POPULATE_* advice values (linux/mman.h), not in package
// syscall.
const (
	madvPopulateRead  = 22
	madvPopulateWrite = 23
)

// maxBSS bounds the anonymous mapping after the binary's data that is
// taken for its bss: the Go runtime's bss is a few hundred KiB; a larger
// anonymous mapping there is something else.
const maxBSS = 4 << 20

// heapMax bounds how much of the heap mapping Heap populates.
const heapMax = 8 << 20

// initHeap is how much of the heap init populates: what the package
// inits and a command that runs no job allocate (--version: 64 faults
// fewer for 128 pages populated; more saved nothing).
const initHeap = 512 << 10

// mapsBuf holds /proc/self/maps: a Go process has some 30-60 mappings
// (~5 KiB); a longer file is cut, which only leaves mappings out. It is
// static so reading it allocates nothing.
var mapsBuf [16 << 10]byte

// init populates the binary's own mappings: its text and read-only data
// (a read fault maps the 16 pages around it, but crtools touches its code
// all over) and its data and bss. It runs as early as a package init can:
// this package imports no package with an init (sys_amd64_unsafe.go), so
// only the few inits sorted before it by import path run first
// (GODEBUG=inittrace=1 shows the order).
func init() {
	maps := readMaps()
	// The binary is the file mapped where its code is: the first mapping
	// of a PIE build is its read-only headers, not its text.
	text := textAddr()
	var binPath string
	forEachMapping(maps, func(m mapping) {
		if m.contains(text) {
			binPath = m.path
		}
	})
	if binPath == "" {
		return
	}
	prevBin := false
	forEachMapping(maps, func(m mapping) {
		isBin := m.path == binPath
		switch {
		case isBin && m.writable():
			madvise(m.start, m.end-m.start, madvPopulateWrite)
		case isBin && m.readable():
			madvise(m.start, m.end-m.start, madvPopulateRead)
		case prevBin && m.path == "" && m.writable() && m.end-m.start <= maxBSS:
			// The bss beyond the data's last file page.
			madvise(m.start, m.end-m.start, madvPopulateWrite)
		}
		prevBin = isBin
	})
	// The package inits and main allocate next, every command: ~100
	// fresh pages within the next 512 KiB for --version.
	// The maps read above still hold the heap's mapping (a new one the
	// front object might need is missed, and only left to fault).
	populateHeap(maps, heapFront(), initHeap)
}

// Heap populates the heap from the lowest free page the Go allocator
// would hand out next to the end of the heap's current mapping (at most
// heapMax). Commands that run a job call it first: they allocate a few
// MiB, all on fresh pages. The mapping the runtime adds when the heap
// outgrows this one still faults page by page.
func Heap() {
	// The front first: its object may make the runtime map more heap,
	// which maps read before it would not show.
	front := heapFront()
	populateHeap(readMaps(), front, heapMax)
}

// populateHeap populates from front (heapFront) to the end of its mapping
// in maps, the contents of /proc/self/maps, at most max bytes, and
// returns the range it populated (empty if no mapping of maps holds it).
func populateHeap(maps []byte, front, max uintptr) (start, end uintptr) {
	forEachMapping(maps, func(m mapping) {
		if !m.contains(front) || !m.writable() {
			return
		}
		start = front &^ (pageSize - 1)
		end = min(m.end, start+max)
		madvise(start, end-start, madvPopulateWrite)
	})
	return start, end
}

const pageSize = 4096

// readMaps reads /proc/self/maps into mapsBuf, or returns nil.
func readMaps() []byte {
	fd := openMaps()
	if fd < 0 {
		return nil
	}
	n := 0
	for n < len(mapsBuf) {
		m := read(fd, mapsBuf[n:])
		if m <= 0 {
			break
		}
		n += m
	}
	closeFd(fd)
	return mapsBuf[:n]
}

// mapping is one line of /proc/PID/maps.
type mapping struct {
	start, end uintptr
	perms      string // "r-xp"
	path       string // "" for an anonymous mapping
}

func (m mapping) contains(a uintptr) bool { return m.start <= a && a < m.end }
func (m mapping) readable() bool          { return m.perms[0] == 'r' }
func (m mapping) writable() bool          { return m.perms[0] == 'r' && m.perms[1] == 'w' }

// forEachMapping calls f for each well-formed line of a maps file; a
// line cut at the end of a short buffer is dropped.
func forEachMapping(data []byte, f func(mapping)) {
	for len(data) > 0 {
		i := 0
		for i < len(data) && data[i] != '\n' {
			i++
		}
		if i == len(data) {
			return // no newline: cut short
		}
		if m, ok := parseMapping(string(data[:i])); ok {
			f(m)
		}
		data = data[i+1:]
	}
}

// parseMapping parses "start-end perms offset dev inode [path]", the
// addresses in hex.
func parseMapping(line string) (mapping, bool) {
	var m mapping
	var ok bool
	m.start, line, ok = hexField(line, '-')
	if !ok {
		return m, false
	}
	m.end, line, ok = hexField(line, ' ')
	if !ok || m.end <= m.start || len(line) < 5 || line[4] != ' ' {
		return m, false
	}
	m.perms, line = line[:4], line[5:]
	// Skip offset, device and inode; an anonymous mapping's line may end
	// right after the inode.
	for range 3 {
		j := 0
		for j < len(line) && line[j] != ' ' {
			j++
		}
		if j == 0 {
			return m, false
		}
		line = line[j:]
		for len(line) > 0 && line[0] == ' ' {
			line = line[1:]
		}
	}
	m.path = line
	return m, true
}

// hexField parses a hex number ended by sep and returns the rest after
// sep.
func hexField(s string, sep byte) (uintptr, string, bool) {
	var v uintptr
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | uintptr(c-'0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | uintptr(c-'a'+10)
		case c == sep && i > 0 && i <= 16:
			return v, s[i+1:], true
		default:
			return 0, "", false
		}
	}
	return 0, "", false
}
