//go:build linux && amd64

package prefault

// Huge text: crtools' code and read-only data on huge pages.
//
// On the virtual machines crtools is measured on, the first touch of a
// 4 KiB page of the binary costs 1-2 us even once populated (the host
// fills its shadow page table page by page; 9 us for an anonymous page),
// and crtools touches many (after main, ~700 in a threads50 dump, ~550 in
// a restore: smaps Referenced); a 2 MiB huge page costs one fill. The
// page cache of a regular file can hold huge folios (ext4 since Linux
// 6.16, XFS): then the kernel maps each whole, 2 MiB-aligned 2 MiB of a
// mapping whose addresses are congruent to its file offsets modulo 2 MiB
// with one page table entry (FilePmdMapped in smaps), at the first fault,
// with no help from crtools. crtools' text starts at
// 0x400000 at offset 0 and its read-only data follow with the same delta,
// so 3 ranges of its ~6.4 MiB of text and 2 of its ~7 MiB of read-only
// data qualify (the partial ranges around them stay in 4 KiB pages).
//
// But the page cache holds a binary in small folios after go build, cp or
// an install, and after exec read it back from disk: huge folios are read
// only for a mapping with MADV_HUGEPAGE, into a range of the file the page
// cache does not hold. So hugeText first populates those ranges and asks
// PAGEMAP_SCAN whether they are mapped by huge pages (the steady state:
// that is all). Where not, it heals the page cache for the runs that follow:
// it moves the ranges onto anonymous huge pages filled from the file
// (pread: the kernel copies from the page cache; a copy from the old
// mapping would touch every old page) and mremaps them over the file
// mapping, the same bytes at the same addresses, so that this process no
// longer maps those file pages; it then drops them from the page cache
// (POSIX_FADV_DONTNEED: the kernel keeps those another process maps) and
// reads them again through a MADV_HUGEPAGE mapping, in huge folios.
// Such a run costs 7-33 ms more (the copy, then ~10 MiB read back from
// the disk; the most on a busy host), once. The kernel drops no dirty
// page, so a run that finds them dirty (up to 30 s after the binary was
// written) only starts their write-back (sync_file_range, 1 ms) and
// leaves the rest to the next. A run also stops moving at a huge page
// slow to get, and pages another crtools (or a handoff holder) maps stay:
// after a build it took 2-3 runs here. After that the check is all:
// 0.4-1.1 ms, where populating the same ranges page by page took ~0.75.
//
// Risks, and what is done about them:
//   - A huge page may take long to get (defrag=madvise compacts
//     synchronously; on the test host a block the guest freed and reported
//     to the host costs 9-17 ms to touch again): populateHuge stops after
//     the first that took over slowHugePage, and the rest stay in the
//     file mapping (healed by a later run).
//   - THP off ("never", PR_SET_THP_DISABLE), a kernel before 6.16 (ext4
//     large folios; PAGEMAP_SCAN is 6.7, cachestat 6.5), another file system, a PIE
//     build, an unexpected layout, or any failing system call: the file
//     mapping is left as it was. Each range is moved all or nothing: the
//     kernel checks mremap's arguments and limits before it unmaps the
//     destination (only a failed allocation of a few bytes inside the move
//     could leave a hole, and crtools would crash at start-up).
//   - Where the heal never takes, every run pays the move: a file system
//     whose page cache holds no huge folio for the binary although it is
//     ext4 or XFS (data=journal, fscrypt, verity), or, for as long as it
//     runs, a crtools that maps ranges of small folios (a page server
//     started before the heal, which did not move them).
//   - While a run has moved ranges, they are anonymous memory: ~10 MiB of
//     RSS more for that process, and perf or a debugger sees the text as
//     anonymous (they read symbols from the file; addresses are
//     unchanged). Runs after the heal map the file, shared.
//   - Code runs during the mremap: it is the same before and after, so
//     execution continues; other threads faulting meanwhile wait for the
//     mmap lock and then find the new mapping.
//   - CRTOOLS_NO_HUGETEXT=1 turns the move and the heal off
//     (NoHugeTextEnv). Where an earlier run healed the page cache, the
//     kernel still maps its huge folios: that mapping is the file's.

// System calls and their constants (asm/unistd_64.h, linux/mman.h,
// linux/fs.h) hugeText makes.
const (
	sysMmap          = 9
	sysMprotect      = 10
	sysMunmap        = 11
	sysIoctl         = 16
	sysPread64       = 17
	sysMremap        = 25
	sysUname         = 63
	sysFstatfs       = 138
	sysFadvise64     = 221
	sysSyncFileRange = 277
	sysCachestat     = 451
	sysPrctl         = 157
	sysClockGettime  = 228

	protNone  = 0x0
	protRead  = 0x1
	protWrite = 0x2
	protExec  = 0x4

	mapPrivate   = 0x2
	mapFixed     = 0x10
	mapAnonymous = 0x20
	mapNoreserve = 0x4000

	mremapMaymove = 1
	mremapFixed   = 2

	fadvDontneed = 4

	syncFileRangeWrite = 2

	clockMonotonic = 1

	// PAGEMAP_SCAN = _IOWR('f', 16, struct pm_scan_arg) and two page
	// categories (engine/pagemap).
	ioctlPagemapScan = 0xc0606610
	pageIsPresent    = 1 << 3
	pageIsHuge       = 1 << 6
)

var (
	pagemapPath = [...]byte{'/', 'p', 'r', 'o', 'c', '/', 's', 'e', 'l', 'f', '/', 'p', 'a', 'g', 'e', 'm', 'a', 'p', 0}
	environPath = [...]byte{'/', 'p', 'r', 'o', 'c', '/', 's', 'e', 'l', 'f', '/', 'e', 'n', 'v', 'i', 'r', 'o', 'n', 0}
)

// NoHugeTextEnv turns hugeText off when set to anything but "" or "0":
// it then neither moves nor heals.
const NoHugeTextEnv = "CRTOOLS_NO_HUGETEXT"

// hugeChunk is one 2 MiB range of the binary hugeText moves onto a huge
// page: its address, the file offset of its bytes and its protection.
type hugeChunk struct {
	addr uintptr
	off  uint64
	prot uintptr
}

// hugeChunks holds the ranges hugeText found (static: it allocates
// nothing). crtools' text and read-only data span some 14 MiB.
var hugeChunks [16]hugeChunk

// hugeText maps the whole 2 MiB ranges of the binary's text and
// read-only data with huge pages. Where the page cache holds them in huge
// folios, populating the file mapping maps each with one page table entry,
// and that is all. Where it does not (the first run after the binary was
// written or its pages evicted), it moves them onto anonymous huge pages
// filled from the file, then has the page cache read them again in huge
// folios for the runs that follow (healCache). It returns how many ranges
// were mapped from huge folios, moved, and read again in huge folios.
func hugeText(maps []byte, binPath string, fd int, h []byte) (mapped, moved, healed int) {
	if h == nil || !thpAllowed() || hugeTextOff() {
		return 0, 0, 0
	}
	if !largeFolioFS(fd) {
		return 0, 0, 0
	}
	chunks := textChunks(fd, h, maps, binPath)
	pm := openPath(&pagemapPath[0])
	if len(chunks) == 0 || pm < 0 {
		return 0, 0, 0
	}
	defer closeFd(pm)
	todo := chunks[:0]
	for _, c := range chunks {
		madvise(c.addr, hugePage, madvPopulateRead)
		if scanHuge(pm, c.addr, c.addr+hugePage) {
			mapped++
		} else {
			todo = append(todo, c)
		}
	}
	if len(todo) == 0 {
		return mapped, 0, 0
	}
	// The kernel drops no dirty page from the page cache: after go build,
	// cp or an install the binary's are dirty until written back (up to
	// 30 s), and a heal then would move the ranges for nothing. Have them
	// written now for the runs that follow.
	first, last := todo[0].off, todo[len(todo)-1].off+hugePage
	if dirty(fd, first, last-first) {
		rawSyscall6(sysSyncFileRange, uintptr(fd), uintptr(first), uintptr(last-first), syncFileRangeWrite, 0, 0)
		return mapped, 0, 0
	}
	moved = moveChunks(fd, pm, todo)
	healed = healCache(fd, pm, todo[:moved])
	return mapped, moved, healed
}

// moveChunks moves the first of chunks onto anonymous huge pages filled
// from the file fd, and returns how many it moved: a run stops at the
// first huge page it could not get, or after one that was slow to get.
func moveChunks(fd, pm int, chunks []hugeChunk) int {
	size := uintptr(len(chunks)) * hugePage
	region := rawSyscall6(sysMmap, 0, size+hugePage, protRead|protWrite, mapPrivate|mapAnonymous|mapNoreserve, ^uintptr(0), 0)
	if region > ^uintptr(4095) {
		return 0
	}
	defer rawSyscall3(sysMunmap, region, size+hugePage, 0) // what was not moved
	base := (region + hugePage - 1) &^ (hugePage - 1)
	madvise(base, size, madvHugepage)
	moved := 0
	for i := 0; i < len(chunks); {
		j := nextRun(chunks, i)
		at := base + uintptr(i)*hugePage
		n, stop := populateHuge(pm, at, j-i)
		if n == 0 || !moveText(fd, at, chunks[i], n) {
			break
		}
		moved += n
		if stop || n < j-i {
			break
		}
		i = j
	}
	return moved
}

// nextRun returns the end of the run of chunks that starts at i: chunks
// next to each other in memory and in the file, with one protection,
// which are moved, or read, in one go.
func nextRun(chunks []hugeChunk, i int) int {
	j := i + 1
	for j < len(chunks) && chunks[j].addr == chunks[j-1].addr+hugePage &&
		chunks[j].off == chunks[j-1].off+hugePage && chunks[j].prot == chunks[i].prot {
		j++
	}
	return j
}

// healCache has the page cache hold the file pages of chunks, which this
// process no longer maps, in huge folios: it drops them (the kernel keeps
// those another process maps) and reads them again through a mapping
// with MADV_HUGEPAGE, at addresses congruent to their file offsets modulo
// 2 MiB, whose read-ahead then allocates folios of 2 MiB. It returns how
// many of chunks were read so.
func healCache(fd, pm int, chunks []hugeChunk) int {
	if len(chunks) == 0 {
		return 0
	}
	size := uintptr(len(chunks)) * hugePage
	region := rawSyscall6(sysMmap, 0, size+hugePage, protNone, mapPrivate|mapAnonymous|mapNoreserve, ^uintptr(0), 0)
	if region > ^uintptr(4095) {
		return 0
	}
	defer rawSyscall3(sysMunmap, region, size+hugePage, 0)
	base := (region + hugePage - 1) &^ (hugePage - 1)
	healed := 0
	for i := 0; i < len(chunks); {
		j := nextRun(chunks, i)
		c, n := chunks[i], uintptr(j-i)*hugePage
		i = j
		rawSyscall6(sysFadvise64, uintptr(fd), uintptr(c.off), n, fadvDontneed, 0, 0)
		at := base // congruent: c.off is 2 MiB-aligned (textChunks)
		if rawSyscall6(sysMmap, at, n, protRead, mapPrivate|mapFixed, uintptr(fd), uintptr(c.off)) != at {
			continue
		}
		madvise(at, n, madvHugepage)
		madvise(at, n, madvPopulateRead)
		for a := at; a < at+n; a += hugePage {
			if scanHuge(pm, a, a+hugePage) {
				healed++
			}
		}
	}
	return healed
}

// populateHuge populates up to n huge pages at at, one at a time, and
// returns how many it did. It stops at the first that is not a huge page
// (THP disabled, or none free), which it does not count, and after the
// first that took longer than slowHugePage (stop then says so).
func populateHuge(pm int, at uintptr, n int) (done int, stop bool) {
	for done < n {
		a := at + uintptr(done)*hugePage
		t0 := nanotime()
		madvise(a, hugePage, madvPopulateWrite)
		slow := nanotime()-t0 > slowHugePage
		if !scanHuge(pm, a, a+hugePage) {
			return done, true
		}
		done++
		if slow {
			return done, true
		}
	}
	return done, false
}

// moveText fills the n huge pages at at with the file's bytes for c and
// the chunks after it, gives them c's protection, and moves them over c:
// the same bytes at the same addresses. It reports whether it did; when
// not, the binary's mapping is as it was.
func moveText(fd int, at uintptr, c hugeChunk, n int) bool {
	size := uintptr(n) * hugePage
	if preadFull(fd, at, size, c.off) != size {
		return false
	}
	if rawSyscall3(sysMprotect, at, size, c.prot) != 0 {
		return false
	}
	return rawSyscall6(sysMremap, at, size, size, mremapMaymove|mremapFixed, c.addr, 0) == c.addr
}

// slowHugePage is how long a 2 MiB huge page may take to get (0.1-0.3 ms
// when one is free) before hugeText stops: past it, the kernel compacted
// memory to make one, or the host had to back it again, and would for
// the next.
const slowHugePage = 2e6

// preadFull reads n bytes at off of fd to addr; it returns the count.
func preadFull(fd int, addr, n uintptr, off uint64) uintptr {
	done := uintptr(0)
	for done < n {
		r := rawSyscall6(sysPread64, uintptr(fd), addr+done, n-done, uintptr(off)+done, 0, 0)
		if int(r) == -eintr {
			continue
		}
		if int(r) <= 0 {
			break
		}
		done += r
	}
	return done
}

// phdrBuf holds the program headers textChunks reads.
var phdrBuf [4 << 10]byte

// textChunks returns the 2 MiB-aligned ranges of the read-only loadable
// segments of the executable fd, whose ELF header is h (execHeader), each
// checked against maps: mapped from binPath with the segment's
// protection, as the kernel mapped them at exec.
func textChunks(fd int, h []byte, maps []byte, binPath string) []hugeChunk {
	phoff, phentsize, phnum := le64(h[0x20:]), le16(h[0x36:]), le16(h[0x38:])
	if phentsize != 56 || phnum*56 > len(phdrBuf) {
		return nil
	}
	phdrs := phdrBuf[:phnum*56]
	if readAt(fd, phoff, phdrs) != len(phdrs) {
		return nil
	}
	n := 0
	for i := range phnum {
		p := phdrs[i*56 : i*56+56]
		const ptLoad, pfX, pfW, pfR = 1, 1, 2, 4
		flags := le32(p[4:])
		if le32(p) != ptLoad || flags&pfW != 0 || flags&pfR == 0 {
			continue
		}
		off, vaddr, filesz := le64(p[8:]), uintptr(le64(p[16:])), uintptr(le64(p[32:]))
		// Only a segment whose addresses are congruent to its file
		// offsets modulo 2 MiB can be mapped from huge folios.
		if off%hugePage != uint64(vaddr%hugePage) {
			continue
		}
		perms, prot := "r--p", uintptr(protRead)
		if flags&pfX != 0 {
			perms, prot = "r-xp", protRead|protExec
		}
		// The mapping ends with the page of the segment's last byte.
		end := (vaddr + filesz + pageSize - 1) &^ (pageSize - 1)
		lo, hi := (vaddr+hugePage-1)&^(hugePage-1), end&^(hugePage-1)
		if lo >= hi || !mappedAs(maps, binPath, perms, lo, hi) {
			continue
		}
		for a := lo; a < hi && n < len(hugeChunks); a += hugePage {
			hugeChunks[n] = hugeChunk{addr: a, off: off + uint64(a-vaddr), prot: prot}
			n++
		}
	}
	return hugeChunks[:n]
}

// mappedAs reports whether one mapping of maps from path with perms
// holds [lo, hi).
func mappedAs(maps []byte, path, perms string, lo, hi uintptr) bool {
	ok := false
	forEachMapping(maps, func(m mapping) {
		if m.path == path && m.perms == perms && m.start <= lo && hi <= m.end {
			ok = true
		}
	})
	return ok
}

// largeFolioFS reports whether the file fd is on a file system whose page
// cache holds large folios (ext4 since Linux 6.16, XFS): elsewhere the
// page cache cannot hold the binary in huge folios, and moving its pages
// onto anonymous huge pages each run costs more than it saves (see the
// package comment).
func largeFolioFS(fd int) bool {
	const ext4Magic, xfsMagic = 0xef53, 0x58465342
	if !kernelAtLeast(6, 16) {
		return false
	}
	switch fsType(fd) {
	case ext4Magic, xfsMagic:
		return true
	}
	return false
}

// utsBuf holds struct utsname: six strings of 65 bytes, the release the
// third.
var utsBuf [6 * 65]byte

// kernelAtLeast reports whether the running kernel's release is at least
// major.minor.
func kernelAtLeast(major, minor int) bool {
	if rawSyscall3(sysUname, sliceAddr(utsBuf[:]), 0, 0) != 0 {
		return false
	}
	rel := utsBuf[2*65 : 3*65]
	var v [2]int
	i := 0
	for k := range v {
		for ; i < len(rel) && rel[i] >= '0' && rel[i] <= '9'; i++ {
			v[k] = v[k]*10 + int(rel[i]-'0')
		}
		if i >= len(rel) || rel[i] != '.' {
			break
		}
		i++
	}
	return v[0] > major || v[0] == major && v[1] >= minor
}

// hugeTextOff reports whether NoHugeTextEnv is set in crtools'
// environment to anything but "" or "0". It reads /proc/self/environ,
// the environment crtools was started with: package os, which would
// tell, has inits of its own that must not run first.
func hugeTextOff() bool {
	fd := openPath(&environPath[0])
	if fd < 0 {
		return false
	}
	defer closeFd(fd)
	const prefix = NoHugeTextEnv + "="
	// pos counts the bytes of the current entry ("NAME=value\x00");
	// match says its first bytes are prefix so far.
	pos, match := 0, true
	var value [2]byte
	for {
		n := read(fd, smallBuf[:])
		if n <= 0 {
			return false
		}
		for _, c := range smallBuf[:n] {
			switch {
			case c == 0:
				if match && pos >= len(prefix) {
					vlen := pos - len(prefix)
					return vlen > 1 || vlen == 1 && value[0] != '0'
				}
				pos, match = 0, true
				continue
			case !match:
			case pos < len(prefix):
				match = c == prefix[pos]
			case pos-len(prefix) < len(value):
				value[pos-len(prefix)] = c
			}
			pos++
		}
	}
}
