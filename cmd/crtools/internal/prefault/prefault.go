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
// Heap faults left (page_fault_user events, medians of 8 threads50 runs)
// went 130 -> 89 a dump, 160 -> 89 a restore and 137 -> 97 for --version
// when Heap learned where the allocator hands pages out (heap): most of
// the rest happen before this package's init runs.
//
// The heap from the allocator's front is populated on transparent huge
// pages (hugeHeap): populated small pages still cost ~9 us each at their
// first touch there.
//
// The binary's text and read-only data go on huge pages first where they
// can (text.go): populated 4 KiB pages of a file still cost 1-2 us each at
// their first touch here.
//
// Everything here is advice: a kernel without MADV_POPULATE_* (before
// 5.14) answers EINVAL, which is ignored, and crtools runs as before; so
// is one without THP or with it off.
package prefault

// The MADV_POPULATE_* advice values (linux/mman.h), not in package
// syscall.
const (
	madvPopulateRead  = 22
	madvPopulateWrite = 23
	madvHugepage      = 14
)

// maxBSS bounds the anonymous mapping after the binary's data that is
// taken for its bss: the Go runtime's bss is a few hundred KiB; a larger
// anonymous mapping there is something else.
const maxBSS = 4 << 20

// heapWant is how much fresh heap Heap populates. A threads50 or tree50
// dump or restore touches 1.3-1.4 MiB of fresh heap after main starts
// (the Rss of the heap at exit without populate is ~2.1 MiB, that of
// --version 0.7-0.8), but its allocations move the page allocator's
// front by 1-5 MiB (a tree50 dump allocates ~4 MB): 4 MiB on huge pages
// (hugeHeap, which populates the first half) cut the faults a tree50
// dump still took past the range populated (12 runs each: median ~290
// -> ~50; restore 5 -> 0). A larger job faults on the rest as before.
const heapWant = 4 << 20

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
	// One open and one ELF header read serve hugeText and dataSection.
	exe := openExe()
	if exe >= 0 {
		defer closeFd(exe)
	}
	eh := execHeader(exe)
	// Before the populate below, which then finds those ranges mapped.
	hugeText(maps, binPath, exe, eh)
	prevBin := false
	forEachMapping(maps, func(m mapping) {
		isBin := m.path == binPath
		switch {
		case isBin && m.writable():
			// Its sections (.noptrdata, .data) are mapped read-only until
			// written, and most of them are by then (the runtime read
			// them, and a read fault maps 16 pages): a populate for
			// writing copies each page and changes its present entry,
			// 10-40 us a page here, as much as the fault it saves. So
			// only .data is, whose pages crtools mostly writes; of the
			// 34 pages before it, 4 are written in a job.
			from := m.start
			if data := dataSection(exe, eh); data > m.start && data < m.end {
				from = data &^ (pageSize - 1)
				madvise(m.start, from-m.start, madvPopulateRead)
			}
			madvise(from, m.end-from, madvPopulateWrite)
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
	heap(initHeap)
}

// residentBuf holds heap's mincore vector: a page each, of up to three
// blocks of pages before the heap's front.
var residentBuf [3 * pageCacheBlock / pageSize]byte

// ehdrBuf holds the binary's ELF header, read by execHeader.
var ehdrBuf [64]byte

// execHeader reads the ELF header of the executable fd into ehdrBuf and
// returns it, or nil if fd is not a little-endian 64-bit ELF executable
// (ET_EXEC: a PIE's addresses are relative) or cannot be read.
func execHeader(fd int) []byte {
	h := ehdrBuf[:]
	if fd < 0 || readAt(fd, 0, h) != len(h) || string(h[:4]) != "\x7fELF" || h[4] != 2 || h[5] != 1 || le16(h[16:]) != 2 {
		return nil
	}
	return h
}

// elfBuf holds the section headers and section names of the binary, read
// by dataSection (static, so as to allocate nothing).
var elfBuf [8 << 10]byte

// dataSection returns the address of the .data section of the executable
// fd, whose ELF header is h (execHeader), or 0 if h is nil or it has none.
func dataSection(fd int, h []byte) uintptr {
	if h == nil {
		return 0
	}
	shoff, shentsize, shnum, shstrndx := le64(h[0x28:]), le16(h[0x3a:]), le16(h[0x3c:]), le16(h[0x3e:])
	const shdrMax = 4 << 10
	if shentsize != 64 || shnum*64 > shdrMax || shstrndx >= shnum {
		return 0
	}
	shdrs := elfBuf[:shnum*64]
	if readAt(fd, shoff, shdrs) != len(shdrs) {
		return 0
	}
	strs := shdrs[shstrndx*64:]
	names := elfBuf[shdrMax:]
	n := readAt(fd, le64(strs[0x18:]), names[:min(le64(strs[0x20:]), uint64(len(names)))])
	if n <= 0 {
		return 0
	}
	names = names[:n]
	for i := range shnum {
		sh := shdrs[i*64 : i*64+64]
		if name := uint64(le32(sh)); name+6 <= uint64(len(names)) && string(names[name:name+6]) == ".data\x00" {
			return uintptr(le64(sh[0x10:]))
		}
	}
	return 0
}

func le16(b []byte) int { return int(b[0]) | int(b[1])<<8 }
func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
func le64(b []byte) uint64 { return uint64(le32(b)) | uint64(le32(b[4:]))<<32 }

// Heap populates heapWant bytes of heap where the Go allocator hands out
// pages next. Commands that run a job call it first: they allocate a few
// MiB, all on fresh pages.
func Heap() { heap(heapWant) }

// The Go allocator's pages come in 8 KiB. Allocations of under 16 pages
// (the spans of small objects, objects up to 128 KiB) take them from a
// block of 64 pages their P caches, larger ones from the page allocator;
// both the lowest free first (runtime/mpagecache.go, mheap.allocSpan).
// So a young heap, with no hole left by a collection yet, grows from two
// fronts: the rest of the P's block, then the page allocator's.
const (
	goPage         = 8 << 10
	pageCacheBlock = 64 * goPage
)

// heap populates want bytes of fresh heap: the rest of the block of
// pages this P caches, then from the page allocator's front. It returns
// the two ranges it populated, the first with the pages around the P's
// block (empty ranges when /proc/self/maps could not be read).
func heap(want uintptr) (start, end, start2, end2 uintptr) {
	// The fronts first: their objects may make the runtime map more
	// heap, which maps read before would not show.
	small := smallFront()
	large := largeFront()
	maps := readMaps()
	// From two blocks before the P's up to the page allocator's front:
	// the rest of the P's block, and that of the other P, which a
	// goroutine may move to at its next system call, is one of the blocks
	// around it. What is in use there is present already, and populating
	// it costs a page table walk. (Without the other P's block a job took
	// 40-50 faults more one time in four, in TestHeap's workload.)
	blockEnd := (small + pageCacheBlock - 1) &^ (pageCacheBlock - 1)
	from, upTo := blockEnd-3*pageCacheBlock, large-16*goPage
	if upTo < blockEnd || upTo-from > 4*pageCacheBlock {
		from, upTo = small, blockEnd // not the young heap described above
	}
	// But not below the first page in use: below it lie the pages Go
	// 1.26 marks in use at random to start the heap (see below), which
	// nothing touches. mincore tells; without it only the P's block.
	if vec := residentBuf[:(small-from)/pageSize]; len(vec) > 0 {
		first := len(vec)
		if resident(from, vec) {
			for i, v := range vec {
				if v&1 != 0 {
					first = i
					break
				}
			}
		}
		from += uintptr(first) * pageSize
	}
	start, end = populateHeap(maps, small-1, from, upTo)
	want -= min(blockEnd-small, want)
	// Then from the page allocator's front, on huge pages.
	start2, end2 = hugeHeap(maps, large, want)
	return start, end, start2, end2
}

// hugePage is the size of a transparent huge page (x86-64's PMD).
const hugePage = 2 << 20

// hugeStart and hugeEnd bound the heap hugeHeap advised for huge pages
// last: init's range, which Heap continues.
var hugeStart, hugeEnd uintptr

// hugeHeap populates want bytes of heap from large, the page allocator's
// front, on transparent huge pages where the kernel gives them, and
// returns the range it populated.
//
// On the virtual machines crtools is measured on, the first touch of a
// 4 KiB page costs ~9 us even once it is populated (the host fills its
// shadow page table then, an entry at a time), while a 2 MiB huge page is
// mapped there as one: populating one costs 0.13-0.3 ms (zeroing it,
// median 0.17 ms, 1.9 ms at most in 40 runs) and touching its 512 small
// pages 12 us, where 512 small pages cost 0.6 ms to populate and 5.4 ms
// to touch. The Go runtime never asks for huge pages for its heap, and
// THP is given only where asked for (enabled=madvise, the default of most
// distributions): MADV_HUGEPAGE asks here.
//
// A huge page is made only on a fault in a 2 MiB-aligned range with
// nothing mapped in it yet, and the range the front is in holds what the
// runtime and the package inits allocated, on small pages. So the front
// is moved up to the next 2 MiB boundary first, by one object the job
// never touches: a large object of pages never used is not zeroed, so it
// costs address space, not memory, and it is garbage at once. (Until
// then it counts towards the collector's trigger: it is at most 2 MiB and
// a page, and main sets GOGC before it calls Heap.) MADV_COLLAPSE would
// turn the range the front is in into a huge page instead, but it drains
// the page lists of every CPU first: 0.6-0.9 ms, and 8-14 ms when the
// other CPU is busy.
//
// Populating a huge page costs 0.13-0.35 ms (median), but 3-40 ms in
// about one case of ten when the host must back it first (free pages
// are given back to it): what a job may not use is only advised, and
// becomes a huge page at its first touch. (512 small pages then cost
// 16-25 ms at the median, so huge pages still win.)
//
// The runtime maps its heap in 4 MiB chunks, and Go 1.26 starts the heap
// at a random page of the first one (mheap.grow, randomizeHeapBase): when
// less than half of want is left of the mapping past the front, or no
// boundary is left before its end, the object ends one page past the
// mapping's end instead, so that the runtime maps its next chunk now (a
// chunk mapped later is not advised) and the job's pages come from there.
// The huge page that holds the object's last page is made all the same:
// that page is never touched either. (Otherwise what is left is
// populated, and a job that outgrows it faults past it as before.)
//
// The advice is asked for once the object is in place: an allocation
// made meanwhile, by another goroutine, touches the front on small pages
// and the kernel then makes none there, with or without the advice.
//
// Where THP is off (enabled=never, or PR_SET_THP_DISABLE) the same range
// is populated on small pages, as it was before; the object still moves
// the front, at the cost of some address space. A huge page costs more
// where the kernel has no free 2 MiB block at hand: it compacts memory
// (defrag=madvise) or falls back to small pages. (No compaction stall was
// seen on the test machine, /proc/vmstat compact_stall 0.) The resident
// set grows: a command has one huge page where 512 KiB were populated,
// a job two or three where 2.5 MiB were (when init's is the last of its
// chunk, the job's two are in the next one, and the rest of init's is
// left unused).
func hugeHeap(maps []byte, large, want uintptr) (start, end uintptr) {
	at := large
	if large < hugeStart || large >= hugeEnd {
		at = (large + hugePage - 1) &^ (hugePage - 1)
	}
	// The mapping is the one that holds the front's last page: it may end
	// right there.
	if mapEnd := mappingEnd(maps, large-1); mapEnd > large-1 && (mapEnd-large < want/2 || at == mapEnd) {
		at = mapEnd + goPage
	}
	if at > large {
		heapSink = make([]byte, at-large)
		large = (sliceAddr(heapSink) + uintptr(len(heapSink)) + goPage - 1) &^ (goPage - 1)
		heapSink = nil
		maps = readMaps()
	}
	if m := heapMapping(maps, large); m.contains(large) {
		start, end = large, min(large+want, m.end)
		hugeStart = max(start&^(hugePage-1), m.start)
		hugeEnd = min((end+hugePage-1)&^(hugePage-1), m.end)
		madvise(hugeStart, hugeEnd-hugeStart, madvHugepage)
		// Only the first half is populated now: what any job uses. The
		// rest becomes a huge page at its first touch, if a job gets
		// there (one fault).
		end = min(end, start+want/2)
		// Not a huge page for one page: the object past the mapping's
		// end puts the front a page past a boundary.
		if tail := end & (hugePage - 1); tail <= goPage && end-tail > start {
			end -= tail
		}
		madvise(start, end-start, madvPopulateWrite)
	}
	return start, end
}

// mappingEnd returns the end of the heap mapping of maps that holds a
// (heapMapping), or a if there is none.
func mappingEnd(maps []byte, a uintptr) uintptr {
	if m := heapMapping(maps, a); m.contains(a) {
		return m.end
	}
	return a
}

// heapMapping returns the writable mapping of maps that holds a, with the
// writable mappings of the same name right before and after it: the
// runtime maps its heap chunk after chunk, and MADV_HUGEPAGE splits a
// mapping where it starts and ends. It returns the zero mapping if no
// writable mapping holds a.
func heapMapping(maps []byte, a uintptr) mapping {
	var run, got mapping
	forEachMapping(maps, func(m mapping) {
		switch {
		case !m.writable():
			run = mapping{}
			return
		case run.end == m.start && run.path == m.path:
			run.end = m.end
		default:
			run = m
		}
		if run.contains(a) || (got.end != 0 && got.start == run.start) {
			got = run
		}
	})
	return got
}

// populateHeap populates [from, to) within the heap mapping of maps (the
// contents of /proc/self/maps) that holds at, and returns the range it
// populated (empty if no mapping of maps holds at).
func populateHeap(maps []byte, at, from, to uintptr) (start, end uintptr) {
	if m := heapMapping(maps, at); m.contains(at) {
		start = max(from, m.start) &^ (pageSize - 1)
		end = max(start, min(to, m.end))
		madvise(start, end-start, madvPopulateWrite)
	}
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
		if m, ok := parseMapping(bytesString(data[:i])); ok {
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
