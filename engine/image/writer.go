package image

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/proc"
)

// Writer writes one image file: the header, then entries and payloads.
// Writes are buffered; Close flushes and closes (SyncDir makes a whole
// set durable once).
type Writer struct {
	kind *Kind
	name string
	f    *fdFile // nil when writing to a plain io.Writer
	w    *bufio.Writer
	n    int
	buf  []byte
	err  error // first error; sticky
}

// Create creates (or truncates) the image of kind with id in dir and
// writes its header.
func Create(dir string, kind *Kind, id uint64) (*Writer, error) {
	return CreatePath(kind.Path(dir, id), kind)
}

// CreatePath creates (or truncates) the file at path as an image of kind.
func CreatePath(path string, kind *Kind) (*Writer, error) {
	fd, err := proc.OpenNoPoll(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create image: %w", err)
	}
	f := &fdFile{fd: fd, name: path}
	// Image files are small (the big pages go through PagesWriter); a
	// dump writes hundreds of them, so their buffers are pooled rather
	// than allocated and zeroed for each. Larger writes bypass the buffer
	// anyway.
	bw := imageBufs.get()
	bw.Reset(f)
	w := &Writer{kind: kind, name: path, f: f, w: bw, buf: entryBufs.get()}
	if err := w.writeHeader(); err != nil {
		f.Close()
		return nil, err
	}
	return w, nil
}

// imageBufs are the buffers of file-backed Writers, back in the list once
// Close flushed them.
var imageBufs = freeList[*bufio.Writer]{make: func() *bufio.Writer { return bufio.NewWriterSize(nil, 32<<10) }}

// entryBufs are the buffers file-backed Writers encode entries into (a
// core entry is 1-3 KiB), back in the list at Close.
var entryBufs = freeList[[]byte]{make: func() []byte { return make([]byte, 0, 4<<10) }}

// freeList keeps a few buffers for reuse. Not a sync.Pool: a pool's Get
// finds only what was Put on the same P (or stolen from another's shared
// list), and a dump's goroutine, blocking in a syscall for every file,
// moves between Ps: a 50-task dump allocated new 32 KiB buffers again and
// again, each a few fresh pages (a page fault each on this kind of host).
type freeList[T any] struct {
	mu    sync.Mutex
	items []T
	make  func() T
}

// freeListMax bounds what a freeList keeps.
const freeListMax = 8

func (l *freeList[T]) get() T {
	l.mu.Lock()
	if n := len(l.items); n > 0 {
		x := l.items[n-1]
		l.items = l.items[:n-1]
		l.mu.Unlock()
		return x
	}
	l.mu.Unlock()
	return l.make()
}

func (l *freeList[T]) put(x T) {
	l.mu.Lock()
	if len(l.items) < freeListMax {
		l.items = append(l.items, x)
	}
	l.mu.Unlock()
}

// createFile creates (or truncates) path for writing (openFile).
func createFile(path string) (*os.File, error) {
	return openFile(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, 0o600)
}

// openFile opens path (O_CLOEXEC added) with unix.Open and os.NewFile
// rather than os.OpenFile, which tries every file for the poller (fcntl
// calls and an epoll_ctl that fails for regular files): a dump creates
// hundreds of images, a restore of 50 tasks opens some 350. Errors are
// *os.PathError, as os.OpenFile's.
func openFile(path string, flags int, perm uint32) (*os.File, error) {
	fd, err := proc.OpenNoPoll(path, flags, perm)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

// fdFile is an image file written with plain write(2) calls: os.NewFile
// costs an fcntl a file, and a dump writes hundreds of images, almost all
// in one write each. Errors are *os.PathError, as the os package's.
type fdFile struct {
	fd   int
	name string
}

func (f *fdFile) Write(b []byte) (int, error) {
	done := 0
	for done < len(b) {
		n, err := unix.Write(f.fd, b[done:])
		if err == unix.EINTR {
			continue
		}
		if err == nil && n == 0 {
			err = io.ErrShortWrite
		}
		if err != nil {
			return done, &os.PathError{Op: "write", Path: f.name, Err: err}
		}
		done += n
	}
	return done, nil
}

// ReadFrom copies r through an *os.File on a duplicate of the descriptor
// (the same open file, so the same offset), for the kernel's copy paths
// (copy_file_range, sendfile) that os.File.ReadFrom takes: large ghost
// files (WriteExtra's bufio.Writer hands them here).
func (f *fdFile) ReadFrom(r io.Reader) (int64, error) {
	d, err := unix.FcntlInt(uintptr(f.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return 0, &os.PathError{Op: "dup", Path: f.name, Err: err}
	}
	of := os.NewFile(uintptr(d), f.name)
	defer of.Close()
	return of.ReadFrom(r)
}

func (f *fdFile) Close() error {
	if err := unix.Close(f.fd); err != nil {
		return &os.PathError{Op: "close", Path: f.name, Err: err}
	}
	return nil
}

// NewWriter writes an image of kind to w (name is used in errors). Close
// flushes but does not close w.
func NewWriter(w io.Writer, name string, kind *Kind) (*Writer, error) {
	iw := &Writer{kind: kind, name: name, w: bufio.NewWriterSize(w, 4<<10)} // w is usually a buffer already
	if err := iw.writeHeader(); err != nil {
		return nil, err
	}
	return iw, nil
}

func (w *Writer) writeHeader() error {
	var b [8]byte
	switch w.kind.Header {
	case HeaderNone:
		return nil
	case HeaderOwn:
		binary.LittleEndian.PutUint32(b[:], w.kind.Magic)
		return w.write(b[:4])
	case HeaderService:
		binary.LittleEndian.PutUint32(b[:], ServiceMagic)
	default:
		binary.LittleEndian.PutUint32(b[:], CommonMagic)
	}
	binary.LittleEndian.PutUint32(b[4:], w.kind.Magic)
	return w.write(b[:])
}

func (w *Writer) write(b []byte) error {
	if w.err != nil {
		return w.err
	}
	if _, err := w.w.Write(b); err != nil {
		w.err = fmt.Errorf("write %s: %w", w.name, err)
	}
	return w.err
}

// Write appends one entry. The message must be of the kind's entry type
// (the head type for the first entry of a pagemap), so that a mix-up is
// caught when writing rather than when restoring.
func (w *Writer) Write(msg proto.Message) error {
	if w.err != nil {
		return w.err
	}
	if w.kind.entry == nil {
		return fmt.Errorf("write entry to %s: raw %s image has no entries", w.name, w.kind.Name)
	}
	if w.kind.Single && w.n > 0 {
		return fmt.Errorf("write entry %d to %s: a %s image holds one entry", w.n, w.name, w.kind.Name)
	}
	want := w.kind.entry
	if w.n == 0 && w.kind.head != nil {
		want = w.kind.head
	}
	if !want.is(msg) && !w.isChunk(msg) {
		return fmt.Errorf("write entry %d to %s: got a %s, want a %s", w.n, w.name,
			msg.ProtoReflect().Descriptor().FullName(), want.name())
	}
	var err error
	w.buf, err = appendEntry(w.buf[:0], msg)
	if err != nil {
		return fmt.Errorf("encode entry %d of %s: %w", w.n, w.name, err)
	}
	size := len(w.buf) - 4
	if size > DefaultMaxEntry {
		return fmt.Errorf("encode entry %d of %s: %d bytes is over the %d limit readers enforce", w.n, w.name, size, DefaultMaxEntry)
	}
	if err := w.write(w.buf); err != nil {
		return err
	}
	w.n++
	return nil
}

// Ghost files may carry chunk entries after their head entry, SysV
// message queue images a queue's messages after its entry.
func (w *Writer) isChunk(msg proto.Message) bool {
	switch msg.(type) {
	case *pb.GhostChunkEntry:
		return w.kind == GhostFile && w.n > 0
	case *pb.IpcMsg:
		return w.kind == IPCMsg && w.n > 0
	}
	return false
}

// WriteExtra appends payload bytes after the last entry (pipe data, queue
// data, file contents); their length must be the one the entry declares.
func (w *Writer) WriteExtra(b []byte) error { return w.write(b) }

// ReadFrom copies r to the file as payload (for large ghost files).
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.w.ReadFrom(r)
	if err != nil {
		w.err = fmt.Errorf("write %s: %w", w.name, err)
	}
	return n, w.err
}

// Name is the file's path.
func (w *Writer) Name() string { return w.name }

// Close flushes and closes the file. It reports the first error of any
// earlier write. It does not fsync: see SyncDir.
func (w *Writer) Close() error {
	err := w.err
	if w.w != nil {
		if ferr := w.w.Flush(); err == nil && ferr != nil {
			err = fmt.Errorf("write %s: %w", w.name, ferr)
		}
	}
	if w.f != nil {
		// The buffer of a file-backed writer goes back to the pool.
		w.w.Reset(nil)
		imageBufs.put(w.w)
		w.w = nil
		if cap(w.buf) <= 64<<10 { // one huge entry does not pin its buffer
			entryBufs.put(w.buf[:0])
		}
		w.buf = nil
		if cerr := w.f.Close(); err == nil && cerr != nil && !errors.Is(cerr, os.ErrClosed) {
			err = fmt.Errorf("close %s: %w", w.name, cerr)
		}
		w.f = nil
	}
	if w.err == nil {
		w.err = errors.New("write to closed image " + w.name)
	}
	return err
}

// WriteFile creates the image of kind with id in dir holding msgs.
func WriteFile(dir string, kind *Kind, id uint64, msgs ...proto.Message) error {
	w, err := Create(dir, kind, id)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if err := w.Write(m); err != nil {
			w.Close()
			return err
		}
	}
	return w.Close()
}
