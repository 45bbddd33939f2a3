package dump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/pagemap"
	"github.com/crtools/crtools/engine/proc"
)

// VMA status bits of CRIU's images (criu/include/image.h, VMA_AREA_*).
const (
	vmaAreaRegular  = 1 << 0
	vmaAreaStack    = 1 << 1
	vmaAreaVsyscall = 1 << 2
	vmaAreaVDSO     = 1 << 3
	vmaAreaHeap     = 1 << 5
	vmaFilePrivate  = 1 << 6
	vmaFileShared   = 1 << 7
	vmaAnonShared   = 1 << 8
	vmaAnonPrivate  = 1 << 9
	vmaAreaSysVIPC  = 1 << 10
	vmaAreaVVAR     = 1 << 12
	vmaAreaMemfd    = 1 << 14
)

const pageSize = 4096

// pageRange is a run of pages of a task to save.
type pageRange struct {
	start, end uint64
	// viaMem: the task may not read these pages itself (PROT_NONE with
	// contents), so process_vm_readv fails; /proc/PID/mem reads them.
	viaMem bool
}

// shmemObj is a shared anonymous (or memfd) object mapped by the tree;
// its pages are saved once, in pagemap-shmem-<ino>.img.
type shmemObj struct {
	ino    uint64
	size   uint64 // highest offset any VMA maps
	pid    int    // a task mapping it, and its range: how we open it
	start  uint64
	end    uint64
	pgoff  uint64
	ranges []pageRange // offsets in the object, filled when written

	// A memfd's inode entry (memfd.go), and the link it is read through
	// when no mapping was seen first.
	inode    *pb.MemfdInodeEntry
	openPath string
	// file, if set, is the object open already (a SysV segment of a
	// dumped IPC namespace, sysv.go), closed once its pages are written.
	file *os.File
}

// madvFlags maps smaps VmFlags to MADV_* bits of VmaEntry.madv.
var madvFlags = map[string]uint{
	"rr": unix.MADV_RANDOM, "sr": unix.MADV_SEQUENTIAL, "dc": unix.MADV_DONTFORK,
	"mg": unix.MADV_MERGEABLE, "hg": unix.MADV_HUGEPAGE, "nh": unix.MADV_NOHUGEPAGE,
	"dd": unix.MADV_DONTDUMP, "wf": unix.MADV_WIPEONFORK,
}

// collectMemory builds the VMA list of pid and picks the mappings whose
// pages scanPages then finds (the page ranges to save).
//
// The two are apart so that the scan can run while the tracer injects
// (collectMid): only the VMA list must be read before the injections map
// their batch memory; the scan covers the mappings of that list only
// (splitRuns cuts away whatever a scan of a run finds between them), and
// the injections touch no page of theirs.
func (s *dumpState) collectMemory(pid int) ([]*pb.VmaEntry, []scanVMA, error) {
	maps, err := s.readSmaps(pid) // collect.go: read ahead on another CPU
	if err != nil {
		return nil, nil, fmt.Errorf("read memory map of pid %d: %w", pid, err)
	}
	var vmas []*pb.VmaEntry
	var want []scanVMA // the mappings whose pages are scanned, in order
	var sysv []sysvAttach
	for i := range maps {
		m := &maps[i]
		v := &pb.VmaEntry{
			Start: proto.Uint64(m.Start), End: proto.Uint64(m.End),
			Pgoff: proto.Uint64(0), Shmid: proto.Uint64(0),
			Prot: proto.Uint32(prot(m)), Fd: proto.Int64(-1),
		}
		flags := uint32(unix.MAP_PRIVATE)
		if m.Shared {
			flags = unix.MAP_SHARED
		}
		if m.Flag("gd") {
			flags |= unix.MAP_GROWSDOWN
		}
		if m.Flag("nr") {
			flags |= unix.MAP_NORESERVE
		}
		// mlock, mlockall: restore locks it again. Not a lock on fault
		// ("lf" too: MLOCK_ONFAULT, MCL_ONFAULT), which the images have
		// no bit for: a full lock would fault in every page of what may
		// be a large, mostly untouched region, so such a VMA comes back
		// unlocked.
		if m.Flag("lo") && !m.Flag("lf") {
			flags |= unix.MAP_LOCKED
		}
		var madv uint64
		for f, bit := range madvFlags {
			if m.Flag(f) {
				madv |= 1 << bit
			}
		}
		if madv != 0 {
			v.Madv = proto.Uint64(madv)
		}
		var status uint32
		dumpPrivate := false
		switch {
		case m.Path == "[vsyscall]":
			status, flags = vmaAreaVsyscall|vmaAnonPrivate, flags|unix.MAP_ANONYMOUS
		case m.Path == "[vdso]":
			status, flags = vmaAreaRegular|vmaAreaVDSO|vmaAnonPrivate, flags|unix.MAP_ANONYMOUS
		case m.Path == "[vvar]" || m.Path == "[vvar_vclock]":
			status, flags = vmaAreaRegular|vmaAreaVVAR|vmaAnonPrivate, flags|unix.MAP_ANONYMOUS
		case m.Path == "[uprobes]":
			return nil, nil, fmt.Errorf("pid %d has a [uprobes] mapping; uprobes are not supported", pid)
		case strings.HasPrefix(m.Path, "/memfd:"):
			// As CRIU: a file mapping of a MEMFD file entry, whose
			// memfd object (contents, seals) is saved once (memfd.go).
			id, fdflags, err := s.mappedMemfd(pid, m)
			if err != nil {
				return nil, nil, err
			}
			v.Shmid = proto.Uint64(uint64(id))
			v.Pgoff = proto.Uint64(m.Offset)
			v.Fdflags = proto.Uint32(fdflags)
			if m.Shared {
				status = vmaAreaRegular | vmaFileShared | vmaAreaMemfd
			} else {
				// Copied-on-write pages are the task's own.
				status = vmaAreaRegular | vmaFilePrivate | vmaAreaMemfd
				dumpPrivate = true
			}
		case isSharedAnon(m):
			obj, err := s.addShmem(pid, m)
			if err != nil {
				return nil, nil, err
			}
			status, flags = vmaAreaRegular|vmaAnonShared, flags|unix.MAP_ANONYMOUS
			v.Shmid = proto.Uint64(obj.ino)
			v.Pgoff = proto.Uint64(m.Offset)
		case m.Shared && isSysV(m):
			// SysV shared memory (sysv.go): the segment holds the
			// pages; shmid is its id, the mapping's inode.
			key, _ := sysvKey(m.Path)
			if sysv, err = addSysV(sysv, pid, m, key); err != nil {
				return nil, nil, err
			}
			status = vmaAreaRegular | vmaAreaSysVIPC
			v.Shmid = proto.Uint64(m.Inode)
			v.Pgoff = proto.Uint64(m.Offset)
		case !m.IsFile() || (!m.Shared && m.Path == "/dev/zero"):
			// Private anonymous memory: heap, stack, [anon:NAME], and
			// private mappings of /dev/zero, which are anonymous too.
			status, flags = vmaAreaRegular|vmaAnonPrivate, flags|unix.MAP_ANONYMOUS
			if m.Path == "[heap]" {
				status |= vmaAreaHeap
			}
			dumpPrivate = true
		default:
			id, fdflags, err := s.mappedFile(pid, m)
			if err != nil {
				return nil, nil, err
			}
			v.Shmid = proto.Uint64(uint64(id))
			v.Pgoff = proto.Uint64(m.Offset)
			v.Fdflags = proto.Uint32(fdflags)
			if m.Shared {
				status = vmaAreaRegular | vmaFileShared
			} else {
				status = vmaAreaRegular | vmaFilePrivate
				dumpPrivate = true
			}
		}
		v.Flags = proto.Uint32(flags)
		v.Status = proto.Uint32(status)
		vmas = append(vmas, v)
		if !dumpPrivate || m.Flag("io") || m.Flag("pf") {
			continue
		}
		if m.Rss == 0 && m.Swap == 0 {
			continue // nothing there; skip the scan
		}
		// A run of scanned mappings goes on while no other mapping
		// lies between them (holes do not matter). A large anonymous
		// mapping is scanned alone: a run with a file mapping asks for
		// the file category (scanIoctl), which costs a struct page
		// lookup for each present page.
		big := !m.IsFile() && m.Rss+m.Swap > bigAnonScan
		newRun := len(want) == 0 || want[len(want)-1].index != i-1 || big || want[len(want)-1].big
		want = append(want, scanVMA{start: m.Start, end: m.End, file: m.IsFile(), viaMem: !m.Read, index: i, newRun: newRun, big: big})
	}
	if err := checkSysVWhole(sysv); err != nil {
		return nil, nil, err
	}
	s.addSysVAttachments(sysv)
	return vmas, want, nil
}

// scanPages finds the pages to save of the mappings of pid that
// collectMemory picked.
func (s *dumpState) scanPages(pid int, want []scanVMA) ([]pageRange, error) {
	if len(want) == 0 {
		return nil, nil
	}
	// Opened without Go's poller (five syscalls a file that /proc does
	// not need); the scan buffer is the dump's, reused for every task.
	pm, err := proc.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, fmt.Errorf("open pagemap of pid %d: %w", pid, err)
	}
	defer pm.Close()
	if s.scanVec == nil {
		s.scanVec = make([]pagemap.Region, 1024)
	}
	scanner := &pageScanner{f: pm, vec: s.scanVec}
	pages, err := scanner.scanAll(want)
	if err != nil {
		return nil, fmt.Errorf("scan pages of pid %d: %w", pid, err)
	}
	return pages, nil
}

// scanVMA is a mapping whose pages collectMemory scans.
type scanVMA struct {
	start, end uint64
	file       bool // backed by a file (scanRead tells page-cache pages)
	viaMem     bool // pageRange.viaMem of its pages
	index      int  // in the task's list of mappings
	// newRun: another mapping lies between this one and the last
	// scanned one, or one of the two is big.
	newRun bool
	big    bool // anonymous and over bigAnonScan bytes
}

// bigAnonScan is the size from which an anonymous mapping is scanned on
// its own, without the file category (16 MiB: some 4,000 struct page
// lookups, under 0.1 ms, when merged with file mappings).
const bigAnonScan = 16 << 20

// scanAll scans the pages of vmas (sorted), one PAGEMAP_SCAN for each run
// of them with no other mapping in between (a task's private mappings
// mostly follow each other: one or two calls instead of one a mapping,
// some 13 for a small C program), and splits what it finds at the
// mappings' bounds: the same ranges as a scan of each mapping. Without
// PAGEMAP_SCAN it reads each mapping's pagemap entries.
func (p *pageScanner) scanAll(vmas []scanVMA) ([]pageRange, error) {
	var out []pageRange
	for i := 0; i < len(vmas); {
		j := i + 1
		for j < len(vmas) && !vmas[j].newRun {
			j++
		}
		run := vmas[i:j]
		i = j
		if !p.noScan {
			file := false
			for _, v := range run {
				file = file || v.file
			}
			rs, err := p.scanIoctl(run[0].start, run[len(run)-1].end, file)
			if err == nil {
				out = splitRuns(out, rs, run)
				continue
			}
			if !errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.EINVAL) {
				return nil, fmt.Errorf("at %#x-%#x: %w", run[0].start, run[len(run)-1].end, err)
			}
			p.noScan = true
		}
		for _, v := range run {
			rs, err := p.scanRead(v.start, v.end, v.file)
			if err != nil {
				return nil, fmt.Errorf("at %#x-%#x: %w", v.start, v.end, err)
			}
			for _, r := range rs {
				r.viaMem = v.viaMem
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// splitRuns appends to out the parts of rs (sorted, disjoint) that lie in
// each mapping of run (sorted), with the mapping's viaMem.
func splitRuns(out, rs []pageRange, run []scanVMA) []pageRange {
	k := 0
	for _, v := range run {
		for k < len(rs) && rs[k].end <= v.start {
			k++
		}
		for x := k; x < len(rs) && rs[x].start < v.end; x++ {
			r := pageRange{start: max(rs[x].start, v.start), end: min(rs[x].end, v.end), viaMem: v.viaMem}
			if r.end > r.start {
				out = append(out, r)
			}
		}
	}
	return out
}

func prot(m *proc.Mapping) uint32 {
	var p uint32
	if m.Read {
		p |= unix.PROT_READ
	}
	if m.Write {
		p |= unix.PROT_WRITE
	}
	if m.Exec {
		p |= unix.PROT_EXEC
	}
	return p
}

// isSharedAnon tells shared anonymous memory from shared file mappings by
// the names the kernel gives shmem objects (memfds are told apart before).
func isSharedAnon(m *proc.Mapping) bool {
	if !m.Shared {
		return false
	}
	return m.Path == "/dev/zero (deleted)" || strings.HasPrefix(m.Path, "[anon_shmem:")
}

func (s *dumpState) addShmem(pid int, m *proc.Mapping) (*shmemObj, error) {
	if s.shmem == nil {
		s.shmem = map[uint64]*shmemObj{}
	}
	obj := s.shmem[m.Inode]
	if obj == nil {
		obj = &shmemObj{ino: m.Inode, pid: pid, start: m.Start, end: m.End, pgoff: m.Offset}
		s.shmem[m.Inode] = obj
		s.shmemOrder = append(s.shmemOrder, obj)
	}
	if e := m.Offset + m.Size(); e > obj.size {
		obj.size = e
	}
	return obj, nil
}

// pageScanner finds the pages of a private mapping that hold data of
// their own: present or swapped, not the shared zero page, and (for file
// mappings) not the file's page-cache page, i.e. copied-on-write.
type pageScanner struct {
	f        *os.File
	vec      []pagemap.Region
	noScan   bool // PAGEMAP_SCAN missing: read pagemap entries
	entryBuf []byte
}

func (p *pageScanner) scanIoctl(start, end uint64, file bool) ([]pageRange, error) {
	if p.vec == nil {
		p.vec = make([]pagemap.Region, 1024)
	}
	var out []pageRange
	// A page matches when it is present or swapped, and neither a
	// page-cache (file) page nor the zero page.
	filter := pagemap.Filter{
		Inverted: pagemap.PageIsPFNZero,
		Mask:     pagemap.PageIsPFNZero,
		AnyOf:    pagemap.PageIsPresent | pagemap.PageIsSwapped,
		Return:   pagemap.PageIsPresent | pagemap.PageIsSwapped,
	}
	// Only a mapping with a file (file: it has an inode) can hold
	// page-cache pages; a mapping without one holds anonymous pages and
	// the zero page only. Asking for PAGE_IS_FILE makes the kernel look
	// up each present page's struct page (a cache miss a page: 14-20 ms
	// for 1 GiB here, against 1.6 ms without), so it is asked only of
	// file mappings.
	if file {
		filter.Inverted |= pagemap.PageIsFile
		filter.Mask |= pagemap.PageIsFile
	}
	start0 := start
	for start < end {
		n, walkEnd, err := pagemap.Scan(int(p.f.Fd()), start, end, p.vec, filter)
		if err != nil {
			return nil, err
		}
		for _, r := range p.vec[:n] {
			// A walk that stopped because vec was full may report
			// again, on the next call, pages it already reported
			// (huge pages are walked whole): keep each page once.
			if k := len(out); k > 0 && r.Start < out[k-1].end {
				r.Start = out[k-1].end
			}
			if r.Start < start0 {
				r.Start = start0
			}
			if r.End > end {
				r.End = end
			}
			if r.End <= r.Start {
				continue
			}
			if k := len(out); k > 0 && out[k-1].end == r.Start {
				out[k-1].end = r.End // present and swapped neighbours
				continue
			}
			out = append(out, pageRange{start: r.Start, end: r.End})
		}
		if walkEnd <= start {
			return nil, fmt.Errorf("PAGEMAP_SCAN made no progress at %#x", start)
		}
		start = walkEnd
		if k := len(out); k > 0 && out[k-1].end > start {
			start = out[k-1].end
		}
	}
	return out, nil
}

// Bits of a /proc/PID/pagemap entry (Documentation/admin-guide/mm/pagemap.rst).
const (
	pmPresent    = 1 << 63
	pmSwapped    = 1 << 62
	pmFileShared = 1 << 61
)

func (p *pageScanner) scanRead(start, end uint64, file bool) ([]pageRange, error) {
	var out []pageRange
	const chunk = 4096 // entries per read
	if p.entryBuf == nil {
		p.entryBuf = make([]byte, chunk*8)
	}
	for addr := start; addr < end; {
		n := (end - addr) / pageSize
		if n > chunk {
			n = chunk
		}
		buf := p.entryBuf[:n*8]
		if _, err := p.f.ReadAt(buf, int64(addr/pageSize*8)); err != nil && err != io.EOF {
			return nil, err
		}
		for i := uint64(0); i < n; i++ {
			e := binary.LittleEndian.Uint64(buf[i*8:])
			keep := e&(pmPresent|pmSwapped) != 0
			if keep && e&pmFileShared != 0 {
				keep = false // page cache page (file mappings) or shared
			}
			a := addr + i*pageSize
			if !keep {
				continue
			}
			if k := len(out); k > 0 && out[k-1].end == a {
				out[k-1].end += pageSize
			} else {
				out = append(out, pageRange{start: a, end: a + pageSize})
			}
		}
		addr += n * pageSize
	}
	_ = file
	return out, nil
}
