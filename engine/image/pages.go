package image

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image/pb"
)

// PageSize is the page size of the images (x86-64).
const PageSize = 4096

// Pagemap entry flags (CRIU's PE_*).
const (
	PEParent  = 1 << 0 // the pages are in the parent image (incremental dumps)
	PELazy    = 1 << 1 // may be restored lazily; still present in pages-*.img
	PEPresent = 1 << 2 // the pages are in pages-<pages_id>.img
)

// Runs of at least this many bytes are written to the pages file
// directly rather than through the buffer.
const directWrite = 64 << 10

// PageRun is one pagemap entry: a run of pages starting at Vaddr.
type PageRun struct {
	Vaddr   uint64
	NrPages uint64
	Flags   uint32
	// Offset of the run's first page in the pages file, or -1 when the
	// run's pages are not in this image (PEParent, or not present).
	Offset int64
}

// End is the address just past the run.
func (r PageRun) End() uint64 { return r.Vaddr + r.NrPages*PageSize }

// PageIndex is a decoded pagemap-*.img: which pages of which addresses are in
// pages-<PagesID>.img, and where.
type PageIndex struct {
	File    string
	PagesID uint32
	Runs    []PageRun // in file order, which is address order
	// PagesSize is the number of bytes of the pages file the runs use.
	PagesSize int64
}

// ReadPagemap reads pagemap-<id>.img (or pagemap-shmem-<id>.img with kind
// ShmemPagemap) from dir.
func ReadPagemap(dir string, kind *Kind, id uint64) (*PageIndex, error) {
	r, err := Open(dir, kind, id)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return DecodePagemap(r)
}

// DecodePagemap reads a pagemap from r, checking that runs are in address
// order, do not overlap, and do not overflow.
func DecodePagemap(r *Reader) (*PageIndex, error) {
	head := &pb.PagemapHead{}
	if err := r.Next(head); err != nil {
		if err == io.EOF {
			return nil, &TruncatedError{File: r.name, Offset: r.off, What: "pagemap head", Want: 4}
		}
		return nil, err
	}
	pm := &PageIndex{File: r.name, PagesID: head.GetPagesId()}
	if n := r.entriesLeft(); n > 0 {
		pm.Runs = make([]PageRun, 0, n)
	}
	var off int64
	var prevEnd uint64
	e := &pb.PagemapEntry{} // each Next resets it
	for i := 0; ; i++ {
		start := r.off
		err := r.Next(e)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		bad := func(format string, a ...any) error {
			return &DecodeError{File: r.name, Offset: start, Entry: i + 1, Type: "pagemap_entry", Err: fmt.Errorf(format, a...)}
		}
		if e.Blocks != nil {
			return nil, bad("compressed pages: %w", ErrUnsupported)
		}
		if len(e.UnknownBytes()) > 0 {
			// A field we do not know may move the pages (as
			// compression does): refuse rather than misplace them.
			return nil, bad("fields unknown to crtools: %w", ErrUnsupported)
		}
		n := e.GetNrPages()
		if n == 0 {
			n = uint64(e.GetCompatNrPages())
		}
		flags := e.GetFlags()
		if e.Flags == nil {
			// Images older than the flags field: present unless in_parent.
			flags = PEPresent
			if e.GetInParent() {
				flags = PEParent
			}
		}
		if e.GetVaddr()%PageSize != 0 {
			return nil, bad("vaddr %#x is not page aligned", e.GetVaddr())
		}
		if n == 0 || n > (1<<52)/PageSize || e.GetVaddr() > ^uint64(0)-n*PageSize {
			return nil, bad("bad page count %d at %#x", n, e.GetVaddr())
		}
		if len(pm.Runs) > 0 && e.GetVaddr() < prevEnd {
			return nil, bad("run at %#x overlaps or precedes the previous one (ends at %#x)", e.GetVaddr(), prevEnd)
		}
		run := PageRun{Vaddr: e.GetVaddr(), NrPages: n, Flags: flags, Offset: -1}
		if flags&PEPresent != 0 && flags&PEParent == 0 {
			run.Offset = off
			off += int64(n) * PageSize
		}
		prevEnd = run.End()
		pm.Runs = append(pm.Runs, run)
	}
	pm.PagesSize = off
	return pm, nil
}

// Segment is a part of an address range and where its bytes are.
type Segment struct {
	Vaddr  uint64
	Len    uint64
	Offset int64 // offset in the pages file, -1 if not there (hole or parent)
	Flags  uint32
}

// Lookup maps [vaddr, vaddr+length) to segments: runs of the pages file,
// and holes (Offset -1) for addresses no run covers or whose pages are not
// in this image.
func (pm *PageIndex) Lookup(vaddr, length uint64) []Segment {
	var out []Segment
	end := vaddr + length
	if end < vaddr {
		end = ^uint64(0)
	}
	i := sort.Search(len(pm.Runs), func(i int) bool { return pm.Runs[i].End() > vaddr })
	cur := vaddr
	for ; i < len(pm.Runs) && cur < end; i++ {
		r := pm.Runs[i]
		if r.Vaddr >= end {
			break
		}
		if r.Vaddr > cur {
			out = append(out, Segment{Vaddr: cur, Len: r.Vaddr - cur, Offset: -1})
			cur = r.Vaddr
		}
		segEnd := min(r.End(), end)
		s := Segment{Vaddr: cur, Len: segEnd - cur, Offset: -1, Flags: r.Flags}
		if r.Offset >= 0 {
			s.Offset = r.Offset + int64(cur-r.Vaddr)
		}
		out = append(out, s)
		cur = segEnd
	}
	if cur < end {
		out = append(out, Segment{Vaddr: cur, Len: end - cur, Offset: -1})
	}
	return out
}

// pagesBufs are the buffers of PagesWriters, back in the list on Close (a
// freeList, not a sync.Pool: see freeList).
var pagesBufs = freeList[*bufio.Writer]{make: func() *bufio.Writer { return bufio.NewWriterSize(nil, 4*directWrite) }}

// PagesWriter writes a pagemap image and its pages file together. Runs are
// added in increasing address order; adjacent runs with the same flags are
// merged into one pagemap entry. Page data goes to the pages file through a
// large buffer (and straight through for big runs), so there is no
// per-page system call.
type PagesWriter struct {
	pm      *Writer
	pages   *os.File
	pw      *bufio.Writer
	cur     *pb.PagemapEntry // run being built, not yet written
	written int64
	err     error
}

// CreatePages creates pagemap-<id>.img (kind Pagemap or ShmemPagemap) and
// pages-<pagesID>.img in dir.
func CreatePages(dir string, kind *Kind, id uint64, pagesID uint32) (*PagesWriter, error) {
	pm, err := Create(dir, kind, id)
	if err != nil {
		return nil, err
	}
	if err := pm.Write(&pb.PagemapHead{PagesId: proto.Uint32(pagesID)}); err != nil {
		pm.Close()
		return nil, err
	}
	path := Pages.Path(dir, uint64(pagesID))
	f, err := createFile(path)
	if err != nil {
		pm.Close()
		return nil, fmt.Errorf("create pages image: %w", err)
	}
	// Runs of directWrite bytes or more skip the buffer, so it only
	// gathers small runs: a few times directWrite is plenty, and a tree
	// of many small tasks takes its buffers from a pool instead of
	// allocating (and zeroing) one per task.
	pw := pagesBufs.get()
	pw.Reset(f)
	return &PagesWriter{pm: pm, pages: f, pw: pw}, nil
}

// PagesFile is the pages file, for callers that fill it themselves (e.g.
// with splice). They must add the run with AddRun(vaddr, nil, n) first and
// write exactly n pages at Written() before the next call.
func (w *PagesWriter) PagesFile() *os.File { return w.pages }

// Written is the number of bytes of page data accepted so far.
func (w *PagesWriter) Written() int64 { return w.written }

// AddRun records npages pages at vaddr as present and, if data is not
// nil, writes them (len(data) must be npages*PageSize).
func (w *PagesWriter) AddRun(vaddr uint64, data []byte, npages uint64) error {
	if w.err != nil {
		return w.err
	}
	if data != nil && uint64(len(data)) != npages*PageSize {
		return fmt.Errorf("add page run at %#x: %d bytes for %d pages", vaddr, len(data), npages)
	}
	if err := w.add(vaddr, npages, PEPresent); err != nil {
		return err
	}
	if data != nil {
		if err := w.writeData(data); err != nil {
			return err
		}
	}
	w.written += int64(npages) * PageSize
	return nil
}

// writeData appends page data to the pages file. Big writes skip the
// buffer: one copy (into the kernel) instead of two.
func (w *PagesWriter) writeData(data []byte) error {
	var err error
	if len(data) >= directWrite {
		if err = w.pw.Flush(); err == nil {
			_, err = w.pages.Write(data)
		}
	} else {
		_, err = w.pw.Write(data)
	}
	if err != nil {
		w.err = fmt.Errorf("write %s: %w", w.pages.Name(), err)
	}
	return w.err
}

// AddRuns records several present runs whose pages lie back to back in
// data (as one process_vm_readv batch leaves them) and writes data with one
// write. Only Vaddr and NrPages of each run are used.
func (w *PagesWriter) AddRuns(data []byte, runs []PageRun) error {
	if w.err != nil {
		return w.err
	}
	var n uint64
	for _, r := range runs {
		n += r.NrPages
	}
	if n*PageSize != uint64(len(data)) {
		return fmt.Errorf("add page runs: %d bytes for %d pages", len(data), n)
	}
	for _, r := range runs {
		if err := w.add(r.Vaddr, r.NrPages, PEPresent); err != nil {
			return err
		}
	}
	if err := w.writeData(data); err != nil {
		return err
	}
	w.written += int64(len(data))
	return nil
}

// AddEntry records a run with explicit flags and no data in this pages
// file (e.g. PEParent).
func (w *PagesWriter) AddEntry(vaddr, npages uint64, flags uint32) error {
	if flags&PEPresent != 0 && flags&PEParent == 0 {
		return fmt.Errorf("add pagemap entry at %#x: present pages need data (AddRun)", vaddr)
	}
	return w.add(vaddr, npages, flags)
}

func (w *PagesWriter) add(vaddr, npages uint64, flags uint32) error {
	if w.err != nil {
		return w.err
	}
	if vaddr%PageSize != 0 || npages == 0 {
		return fmt.Errorf("add page run at %#x (%d pages): not page aligned or empty", vaddr, npages)
	}
	if c := w.cur; c != nil {
		end := c.GetVaddr() + c.GetNrPages()*PageSize
		if vaddr < end {
			return fmt.Errorf("add page run at %#x: before the end of the previous run (%#x)", vaddr, end)
		}
		if vaddr == end && c.GetFlags() == flags {
			c.NrPages = proto.Uint64(c.GetNrPages() + npages)
			return nil
		}
		if err := w.flushEntry(); err != nil {
			return err
		}
	}
	w.cur = &pb.PagemapEntry{Vaddr: proto.Uint64(vaddr), CompatNrPages: proto.Uint32(0), NrPages: proto.Uint64(npages), Flags: proto.Uint32(flags)}
	return nil
}

func (w *PagesWriter) flushEntry() error {
	if w.cur == nil {
		return nil
	}
	err := w.pm.Write(w.cur)
	w.cur = nil
	if err != nil {
		w.err = err
	}
	return err
}

// Flush writes buffered page data to the pages file (needed before
// writing into PagesFile directly).
func (w *PagesWriter) Flush() error {
	if w.err != nil {
		return w.err
	}
	if err := w.pw.Flush(); err != nil {
		w.err = fmt.Errorf("write %s: %w", w.pages.Name(), err)
	}
	return w.err
}

// Close writes the last entry and closes both files (no fsync: see
// SyncDir).
func (w *PagesWriter) Close() error {
	if w.pw == nil {
		return fmt.Errorf("close %s: closed already", w.pages.Name())
	}
	err := w.flushEntry()
	if ferr := w.pw.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("write %s: %w", w.pages.Name(), ferr)
	}
	w.pw.Reset(nil)
	pagesBufs.put(w.pw)
	w.pw = nil
	if cerr := w.pages.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close %s: %w", w.pages.Name(), cerr)
	}
	if perr := w.pm.Close(); err == nil && perr != nil {
		err = perr
	}
	if err == nil {
		err = w.err
	}
	if w.err == nil {
		w.err = fmt.Errorf("write to closed pages image %s", w.pages.Name())
	}
	return err
}

// PagesReader reads page data of a pagemap from its pages file.
type PagesReader struct {
	Index *PageIndex
	f     *os.File
}

// OpenPages reads pagemap-<id>.img (or the shmem one, per kind) and opens
// the pages file it refers to, checking that the file is large enough.
func OpenPages(dir string, kind *Kind, id uint64) (*PagesReader, error) {
	pm, err := ReadPagemap(dir, kind, id)
	if err != nil {
		return nil, err
	}
	path := Pages.Path(dir, uint64(pm.PagesID))
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open pages of %s: %w", pm.File, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open pages of %s: %w", pm.File, err)
	}
	if st.Size() < pm.PagesSize {
		f.Close()
		return nil, &TruncatedError{File: path, Offset: st.Size(), What: "pages of " + pm.File, Want: pm.PagesSize, Got: st.Size()}
	}
	return &PagesReader{Index: pm, f: f}, nil
}

// File is the open pages file (for preadv or mmap by the restorer).
func (p *PagesReader) File() *os.File { return p.f }

// ReadRun reads the data of run i.
func (p *PagesReader) ReadRun(i int) ([]byte, error) {
	r := p.Index.Runs[i]
	if r.Offset < 0 {
		return nil, fmt.Errorf("read pages of run %d of %s: not in this image (flags %#x)", i, p.Index.File, r.Flags)
	}
	b := make([]byte, r.NrPages*PageSize)
	if _, err := p.f.ReadAt(b, r.Offset); err != nil {
		return nil, fmt.Errorf("read pages at %#x from %s: %w", r.Vaddr, p.f.Name(), err)
	}
	return b, nil
}

// ReadAt reads len(b) bytes of memory at vaddr; bytes of pages not in the
// image are left zero and reported by the returned count of missing bytes.
func (p *PagesReader) ReadAt(b []byte, vaddr uint64) (missing int, err error) {
	pos := 0
	for _, s := range p.Index.Lookup(vaddr, uint64(len(b))) {
		dst := b[pos : pos+int(s.Len)]
		if s.Offset < 0 {
			clear(dst)
			missing += len(dst)
		} else if _, err := p.f.ReadAt(dst, s.Offset); err != nil {
			return missing, fmt.Errorf("read pages at %#x from %s: %w", s.Vaddr, p.f.Name(), err)
		}
		pos += int(s.Len)
	}
	return missing, nil
}

// Close closes the pages file.
func (p *PagesReader) Close() error { return p.f.Close() }
