package pageserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image"
)

// recvBuffer is the size of the buffer page data is received through;
// the idle deadline is refreshed for each fill.
const recvBuffer = 4 << 20

// session is the server side of one connection.
type session struct {
	opts ServerOptions
	log  zerolog.Logger
	rw   io.ReadWriter
	dl   deadliner // nil if rw has no deadlines

	// cancelled is set (under mu) when the session's context ends, so
	// that refreshDeadline cannot undo the past deadline set then.
	mu        sync.Mutex
	cancelled bool

	tmp       string              // hidden directory for files not yet flushed; "" until needed
	pending   map[uint64]*pmState // opened since the last flush, by dst_id
	committed map[uint64]bool     // flushed in this session
	pagesIDs  map[uint32]bool     // pages ids taken in this session
	nextID    uint32
	flushes   int
	frames    int

	stats        Stats
	lastProgress time.Time
	hdr          [HeaderSize]byte
	buf          []byte // receive buffer, grown up to recvBuffer as runs need
}

// pmState is one pagemap being received.
type pmState struct {
	kind    *image.Kind
	id      uint64
	pagesID uint32
	w       *image.PagesWriter
	end     uint64 // the next run must start at or after this address
}

func newSession(rw io.ReadWriter, opts ServerOptions) *session {
	ss := &session{
		opts:      opts,
		rw:        rw,
		pending:   map[uint64]*pmState{},
		committed: map[uint64]bool{},
		pagesIDs:  map[uint32]bool{},
	}
	ss.dl, _ = rw.(deadliner)
	ss.stats.Peer = "stream"
	if c, ok := rw.(net.Conn); ok {
		ss.stats.Peer = c.RemoteAddr().String()
	}
	ss.log = opts.Log.With().Str("peer", ss.stats.Peer).Logger()
	return ss
}

// run reads and executes headers until the session ends.
func (ss *session) run() error {
	ss.log.Info().Msg("page server session started")
	for {
		h, err := ss.readHeader()
		if err == io.EOF {
			return ss.endOfStream()
		}
		if err != nil {
			return err
		}
		ss.frames++
		data, err := h.Check()
		if err != nil {
			return err
		}
		switch h.Command() {
		case CmdOpen, CmdOpen2:
			if err := ss.open(h.DstID); err != nil {
				return err
			}
			if h.Command() == CmdOpen2 {
				// "has parent": never, crtools makes no incremental dumps.
				if err := ss.reply([]byte{0}); err != nil {
					return err
				}
			}
		case CmdParent:
			if err := ss.reply(binary.LittleEndian.AppendUint32(nil, 0)); err != nil {
				return err
			}
		case CmdAdd, CmdAddF:
			if !data {
				return &ProtocolError{Header: &h, Reason: "page run without data"}
			}
			if err := ss.add(h); err != nil {
				return err
			}
		case CmdFlush, CmdFlushNClose:
			cerr := ss.commit()
			status := int32(0)
			if cerr != nil {
				status = -1
			}
			if err := ss.reply(binary.LittleEndian.AppendUint32(nil, uint32(status))); err != nil && cerr == nil {
				cerr = err
			}
			if cerr != nil {
				return cerr
			}
			if h.Command() == CmdFlushNClose {
				return nil
			}
		}
	}
}

// readHeader reads the next header; io.EOF means the peer closed the
// connection cleanly between two headers.
func (ss *session) readHeader() (Header, error) {
	ss.refreshDeadline()
	n, err := io.ReadFull(ss.rw, ss.hdr[:])
	switch {
	case err == io.EOF:
		return Header{}, io.EOF
	case err == io.ErrUnexpectedEOF:
		return Header{}, &ProtocolError{Reason: fmt.Sprintf("connection closed inside a header (%d of %d bytes)", n, HeaderSize)}
	case err != nil:
		return Header{}, fmt.Errorf("read header: %w", err)
	}
	return UnmarshalHeader(ss.hdr[:]), nil
}

func (ss *session) refreshDeadline() {
	if ss.dl == nil {
		return
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !ss.cancelled {
		ss.dl.SetReadDeadline(time.Now().Add(ss.opts.IdleTimeout))
	}
}

// cancel makes every pending and later read or write fail at once.
func (ss *session) cancel() {
	if ss.dl == nil {
		return
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.cancelled = true
	ss.dl.SetDeadline(time.Unix(1, 0))
}

func (ss *session) reply(b []byte) error {
	if ss.dl != nil {
		ss.mu.Lock()
		if !ss.cancelled {
			ss.dl.SetWriteDeadline(time.Now().Add(ss.opts.IdleTimeout))
		}
		ss.mu.Unlock()
	}
	if _, err := ss.rw.Write(b); err != nil {
		return fmt.Errorf("answer the client: %w", err)
	}
	return nil
}

// endOfStream judges a connection the peer closed between headers.
func (ss *session) endOfStream() error {
	if len(ss.pending) > 0 {
		return fmt.Errorf("connection closed without a FLUSH: %d pagemap(s) discarded (did the dump fail?)", len(ss.pending))
	}
	if ss.flushes == 0 {
		if ss.frames == 0 {
			return errors.New("connection closed before anything was sent")
		}
		return errors.New("connection closed without a FLUSH")
	}
	return nil
}

func (ss *session) open(dst uint64) error {
	kind, id, err := DecodeDstID(dst)
	if err != nil {
		return err
	}
	if ss.pending[dst] != nil {
		return &ProtocolError{Reason: fmt.Sprintf("%s opened twice", kind.FileName(id))}
	}
	if ss.committed[dst] {
		return &ProtocolError{Reason: fmt.Sprintf("%s opened again after it was flushed", kind.FileName(id))}
	}
	if len(ss.pending)+len(ss.committed) >= ss.opts.MaxPagemaps {
		return &ProtocolError{Reason: fmt.Sprintf("more than %d pagemaps in one session", ss.opts.MaxPagemaps)}
	}
	final := kind.Path(ss.opts.ImagesDir, id)
	if _, err := os.Lstat(final); err == nil {
		return fmt.Errorf("open %s: the images dir already holds one (from an earlier dump?); give the page server an empty directory", final)
	}
	if ss.tmp == "" {
		tmp, err := os.MkdirTemp(ss.opts.ImagesDir, ".page-server-")
		if err != nil {
			return fmt.Errorf("create the session's temporary directory: %w", err)
		}
		ss.tmp = tmp
	}
	pagesID, err := ss.newPagesID()
	if err != nil {
		return err
	}
	w, err := image.CreatePages(ss.tmp, kind, id, pagesID)
	if err != nil {
		return fmt.Errorf("open %s: %w", kind.FileName(id), err)
	}
	ss.pending[dst] = &pmState{kind: kind, id: id, pagesID: pagesID, w: w}
	ss.log.Debug().Str("pagemap", kind.FileName(id)).Uint32("pages_id", pagesID).Msg("pagemap opened")
	return nil
}

// newPagesID picks a pages file number that neither this session nor any
// file already in the images dir uses.
func (ss *session) newPagesID() (uint32, error) {
	for range 1 << 20 {
		ss.nextID++
		if ss.nextID == 0 {
			ss.nextID = 1
		}
		id := ss.nextID
		if ss.pagesIDs[id] {
			continue
		}
		if _, err := os.Lstat(image.Pages.Path(ss.opts.ImagesDir, uint64(id))); err == nil {
			continue
		}
		ss.pagesIDs[id] = true
		return id, nil
	}
	return 0, errors.New("no free pages file number in the images dir")
}

func (ss *session) add(h Header) error {
	st := ss.pending[h.DstID]
	if st == nil {
		if ss.committed[h.DstID] {
			return &ProtocolError{Header: &h, Reason: "pages for a pagemap that was already flushed"}
		}
		// CRIU's server opens a pagemap on its first run when the client
		// sent no OPEN (clients older than OPEN); so do we.
		if err := ss.open(h.DstID); err != nil {
			return err
		}
		st = ss.pending[h.DstID]
	}
	if h.Vaddr < st.end {
		return &ProtocolError{Header: &h, Reason: fmt.Sprintf("run out of order: previous run of %s ended at %#x", st.kind.FileName(st.id), st.end)}
	}
	n := int64(h.Len())
	if ss.stats.Bytes+n > ss.opts.MaxBytes {
		return &ProtocolError{Header: &h, Reason: fmt.Sprintf("session over the limit of %d bytes of pages", ss.opts.MaxBytes)}
	}
	if err := st.w.AddRun(h.Vaddr, nil, h.NrPages); err != nil {
		return fmt.Errorf("record run of %s: %w", st.kind.FileName(st.id), err)
	}
	if err := st.w.Flush(); err != nil {
		return err
	}
	if err := ss.receive(st.w.PagesFile(), n); err != nil {
		return fmt.Errorf("receive %d pages at %#x of %s: %w", h.NrPages, h.Vaddr, st.kind.FileName(st.id), err)
	}
	st.end = h.Vaddr + h.Len()
	ss.stats.Pages += h.NrPages
	ss.stats.Bytes += n
	ss.progress(false)
	return nil
}

// receive copies n bytes of page data from the connection to f through
// a 4 MiB buffer. (Splicing socket -> pipe -> file, which os.File.ReadFrom
// does for a *net.TCPConn, measured 1.5-2x slower over loopback here: the
// pipe moves the socket's many small fragments one by one.)
func (ss *session) receive(f *os.File, n int64) error {
	if want := min(n, recvBuffer); int64(len(ss.buf)) < want {
		ss.buf = make([]byte, want)
	}
	for n > 0 {
		b := ss.buf[:min(n, int64(len(ss.buf)))]
		ss.refreshDeadline()
		got, err := io.ReadFull(ss.rw, b)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return &ProtocolError{Reason: fmt.Sprintf("connection closed with %d bytes of page data missing", n-int64(got))}
		}
		if err != nil {
			return err
		}
		if _, err := f.Write(b); err != nil {
			return fmt.Errorf("write %s: %w", f.Name(), err)
		}
		n -= int64(got)
	}
	return nil
}

func (ss *session) progress(final bool) {
	now := time.Now()
	if !final && now.Sub(ss.lastProgress) < time.Second {
		return
	}
	ss.lastProgress = now
	if ss.opts.Progress != nil {
		ss.opts.Progress(ss.stats.Bytes)
	}
	ss.log.Info().Int64("bytes", ss.stats.Bytes).Uint64("pages", ss.stats.Pages).Msg("pages received")
}

// commit makes every pending pagemap durable and visible: close both
// files, make them durable (image.SyncDir of the temporary dir), rename the
// pages file and then the pagemap into the images dir without replacing
// anything, fsync the dir. On failure what this commit renamed is removed
// again.
func (ss *session) commit() error {
	ss.flushes++
	dsts := make([]uint64, 0, len(ss.pending))
	for dst := range ss.pending {
		dsts = append(dsts, dst)
	}
	sort.Slice(dsts, func(i, j int) bool { return dsts[i] < dsts[j] })
	var err error
	for _, dst := range dsts {
		st := ss.pending[dst]
		if cerr := st.w.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("flush %s: %w", st.kind.FileName(st.id), cerr)
		}
		st.w = nil
	}
	if err == nil && len(dsts) > 0 {
		err = image.SyncDir(ss.tmp)
	}
	var moved []string
	for _, dst := range dsts {
		if err != nil {
			break
		}
		st := ss.pending[dst]
		for _, name := range []string{image.Pages.FileName(uint64(st.pagesID)), st.kind.FileName(st.id)} {
			final := filepath.Join(ss.opts.ImagesDir, name)
			if rerr := renameNoReplace(filepath.Join(ss.tmp, name), final); rerr != nil {
				err = fmt.Errorf("move %s into the images dir: %w", name, rerr)
				break
			}
			moved = append(moved, final)
		}
	}
	if err == nil && len(moved) > 0 {
		err = syncDir(ss.opts.ImagesDir)
	}
	if err != nil {
		// Pagemaps first, so that no pagemap outlives its pages file.
		for i := len(moved) - 1; i >= 0; i-- {
			os.Remove(moved[i])
		}
		return err
	}
	for _, dst := range dsts {
		st := ss.pending[dst]
		ss.committed[dst] = true
		ss.stats.Pagemaps++
		delete(ss.pending, dst)
		ss.log.Debug().Str("pagemap", st.kind.FileName(st.id)).Uint32("pages_id", st.pagesID).Msg("pagemap stored")
	}
	ss.progress(true)
	return nil
}

// cleanup closes what is still open and removes the temporary directory
// with everything not flushed in it.
func (ss *session) cleanup() error {
	for dst, st := range ss.pending {
		if st.w != nil {
			st.w.Close()
		}
		delete(ss.pending, dst)
	}
	if ss.tmp == "" {
		return nil
	}
	if err := os.RemoveAll(ss.tmp); err != nil {
		return fmt.Errorf("remove the session's temporary directory: %w", err)
	}
	ss.tmp = ""
	return nil
}

func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if err == unix.EINTR {
		err = unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	}
	if err != nil {
		return &os.LinkError{Op: "renameat2", Old: from, New: to, Err: err}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync images dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync images dir: %w", err)
	}
	return nil
}
