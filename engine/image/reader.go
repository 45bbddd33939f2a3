package image

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/proc"
)

// Default limits. CRIU's biggest entries (a core with full xstate, an mm
// with thousands of VMAs) are far below 64 MiB; anything bigger is hostile
// or corrupt, and we must not allocate it.
const (
	DefaultMaxEntry   = 64 << 20
	DefaultMaxPayload = 1 << 30
)

// Limits bound what a Reader accepts.
type Limits struct {
	MaxEntry   int   // largest entry message; 0: DefaultMaxEntry
	MaxPayload int64 // largest payload after one entry; 0: DefaultMaxPayload
}

func (l Limits) entry() int {
	if l.MaxEntry <= 0 {
		return DefaultMaxEntry
	}
	return l.MaxEntry
}

func (l Limits) payload() int64 {
	if l.MaxPayload <= 0 {
		return DefaultMaxPayload
	}
	return l.MaxPayload
}

// Reader reads the entries of one image file in order.
type Reader struct {
	kind   *Kind
	name   string
	r      *bufio.Reader
	c      io.Closer
	size   int64 // total size, or -1 if unknown
	off    int64
	n      int // entries read so far
	limits Limits
	buf    []byte

	// mem: the whole file is data (ResetBytes); r is nil, and
	// entries are decoded from data in place.
	mem  bool
	data []byte
}

// Open opens the image of kind with the given id in dir and checks its
// header.
func Open(dir string, kind *Kind, id uint64) (*Reader, error) {
	return OpenPath(kind.Path(dir, id), kind)
}

// OpenPath opens the file at path as an image of kind (nil: find the kind
// from the header, and from the name for raw files).
//
// The file is opened with O_NONBLOCK, so that a FIFO in an images
// directory (or given to show -f) with no writer does not block crtools
// for ever in open, and O_NONBLOCK is cleared again before the reads: a
// FIFO without a writer then reads as empty, a pipe (show -f /dev/stdin)
// as a stream of unknown size.
func OpenPath(path string, kind *Kind) (*Reader, error) {
	fd, err := proc.OpenNoPoll(path, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open image: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, 0); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open image: %w", &os.PathError{Op: "fcntl", Path: path, Err: err})
	}
	f := os.NewFile(uintptr(fd), path)
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open image: %w", err)
	}
	if st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("open image %s: is a directory", path)
	}
	size := st.Size()
	if !st.Mode().IsRegular() {
		size = -1 // a pipe or a device: its size says nothing of its data
	}
	if kind == nil {
		if k, _, ok := KindByFilename(path); ok && k.Header == HeaderNone {
			kind = k
		}
	}
	r, err := newReader(f, f, path, kind, size, Limits{})
	if err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

// NewReader reads an image of kind (nil: from its header) from r. name is
// used in errors; size is the total length of r, or -1 if unknown (a known
// size lets the reader refuse absurd lengths before allocating).
func NewReader(r io.Reader, name string, kind *Kind, size int64, limits Limits) (*Reader, error) {
	return newReader(r, nil, name, kind, size, limits)
}

func newReader(r io.Reader, c io.Closer, name string, kind *Kind, size int64, limits Limits) (*Reader, error) {
	bufSize := 64 << 10
	if size >= 0 && size < int64(bufSize) {
		bufSize = int(size) // small files are the common case: don't over-allocate
	}
	rd := &Reader{kind: kind, name: name, r: bufio.NewReaderSize(r, bufSize), c: c, size: size, limits: limits}
	if err := rd.readHeader(); err != nil {
		return nil, err
	}
	return rd, nil
}

// ResetBytes makes r a reader of an image of kind (nil: from its header)
// held whole in data, read from the file name (used in errors), without
// allocating a Reader: a reader of many files in turn reuses one (r must
// not be a reader that opened its file: it is not closed). Entries are
// decoded from data in place, with no buffer and no copy; the decoded
// messages do not refer to data (the generated decoders copy bytes and
// strings), and payloads are copies, so data may be reused once the
// reader is done. Errors are those of a Reader on the file itself.
func (r *Reader) ResetBytes(data []byte, name string, kind *Kind, limits Limits) error {
	*r = Reader{kind: kind, name: name, size: int64(len(data)), limits: limits, mem: true, data: data}
	return r.readHeader()
}

// fill reads len(b) bytes at the reader's offset, as io.ReadFull does
// (io.EOF when none is left, io.ErrUnexpectedEOF when some but not all
// are), without moving the offset.
func (r *Reader) fill(b []byte) (int, error) {
	if !r.mem {
		return io.ReadFull(r.r, b)
	}
	n := copy(b, r.data[min(r.off, int64(len(r.data))):])
	switch {
	case n == len(b):
		return n, nil
	case n == 0:
		return 0, io.EOF
	default:
		return n, io.ErrUnexpectedEOF
	}
}

// entriesLeft counts the entries of at least 4 bytes left in a bytes
// reader, by their sizes, or returns 0 for a reader on a stream. It sizes
// what decoding them will append to (pagemap runs): each counted entry
// takes 8 bytes of the file or more, whatever the sizes say.
func (r *Reader) entriesLeft() int {
	if !r.mem {
		return 0
	}
	n := 0
	for off := r.off; off+4 <= int64(len(r.data)); {
		size := int64(binary.LittleEndian.Uint32(r.data[off:]))
		off += 4 + size
		if size >= 4 {
			n++
		}
	}
	return n
}

// SetLimits changes the limits for the entries still to be read.
func (r *Reader) SetLimits(l Limits) { r.limits = l }

// Kind is the kind of the file.
func (r *Reader) Kind() *Kind { return r.kind }

// Name is the file name used in errors.
func (r *Reader) Name() string { return r.name }

// Offset is the number of bytes consumed so far.
func (r *Reader) Offset() int64 { return r.off }

// Close closes the file, if the reader opened it.
func (r *Reader) Close() error {
	if r.c == nil {
		return nil
	}
	return r.c.Close()
}

func (r *Reader) readU32(what string) (uint32, error) {
	var b [4]byte
	n, err := r.fill(b[:])
	if err != nil {
		if err == io.EOF {
			return 0, io.EOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, &TruncatedError{File: r.name, Offset: r.off, What: what, Want: 4, Got: int64(n)}
		}
		return 0, fmt.Errorf("read %s of %s: %w", what, r.name, err)
	}
	r.off += 4
	return binary.LittleEndian.Uint32(b[:]), nil
}

func (r *Reader) readHeader() error {
	if r.kind != nil && r.kind.Header == HeaderNone {
		return nil
	}
	first, err := r.readU32("header")
	if err == io.EOF {
		return &TruncatedError{File: r.name, Offset: 0, What: "header", Want: 4, Got: 0}
	}
	if err != nil {
		return err
	}
	if r.kind == nil {
		if k, ok := KindByMagic(first, 0); ok && k.Header == HeaderOwn {
			r.kind = k
			return nil
		}
		if first != CommonMagic && first != ServiceMagic {
			return &UnknownImageError{File: r.name, First: first}
		}
		second, err := r.readU32("header")
		if err == io.EOF {
			err = &TruncatedError{File: r.name, Offset: 4, What: "header", Want: 4, Got: 0}
		}
		if err != nil {
			return err
		}
		k, ok := KindByMagic(first, second)
		if !ok {
			return &UnknownImageError{File: r.name, First: first, Second: second}
		}
		// Several kinds share a magic; the name tells them apart.
		if kn, _, ok := KindByFilename(r.name); ok && kn.Magic == k.Magic && kn.Header == k.Header {
			k = kn
		}
		r.kind = k
		return nil
	}
	k := r.kind
	switch k.Header {
	case HeaderOwn:
		if first != k.Magic {
			return &BadMagicError{File: r.name, Kind: k.Name, Got: first, Want: k.Magic}
		}
		return nil
	case HeaderService:
		if first != ServiceMagic {
			return &BadMagicError{File: r.name, Kind: k.Name, Got: first, Want: ServiceMagic, Header: true}
		}
	default:
		if first != CommonMagic {
			return &BadMagicError{File: r.name, Kind: k.Name, Got: first, Want: CommonMagic, Header: true}
		}
	}
	second, err := r.readU32("header")
	if err == io.EOF {
		err = &TruncatedError{File: r.name, Offset: 4, What: "header", Want: 4, Got: 0}
	}
	if err != nil {
		return err
	}
	if second != k.Magic {
		return &BadMagicError{File: r.name, Kind: k.Name, Got: second, Want: k.Magic}
	}
	return nil
}

// Next reads the next entry into msg. It returns io.EOF (unwrapped) at the
// clean end of the file, and a typed error (*TruncatedError, *DecodeError,
// *LimitError) naming the file otherwise.
func (r *Reader) Next(msg proto.Message) error {
	return r.next(msg, func(b []byte) error { return unmarshalEntry(b, msg) })
}

// next reads the next entry's bytes and decodes them into msg with decode.
func (r *Reader) next(msg proto.Message, decode func([]byte) error) error {
	if r.kind != nil && r.kind.Header == HeaderNone {
		return fmt.Errorf("read entry of %s: raw %s image has no entries", r.name, r.kind.Name)
	}
	start := r.off
	size, err := r.readU32("entry size")
	if err != nil {
		return err
	}
	if int64(size) > int64(r.limits.entry()) {
		return &LimitError{File: r.name, Offset: start, What: fmt.Sprintf("entry %d", r.n), Size: int64(size), Limit: int64(r.limits.entry())}
	}
	if r.size >= 0 && int64(size) > r.size-r.off {
		return &TruncatedError{File: r.name, Offset: r.off, What: fmt.Sprintf("entry %d", r.n), Want: int64(size), Got: r.size - r.off}
	}
	var b []byte
	var n int
	if r.mem {
		// The size check above makes the entry lie in data.
		b, n = r.data[r.off:r.off+int64(size)], int(size)
	} else {
		if cap(r.buf) < int(size) {
			r.buf = make([]byte, size)
		}
		b = r.buf[:size]
		n, err = io.ReadFull(r.r, b)
	}
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF {
			return &TruncatedError{File: r.name, Offset: r.off, What: fmt.Sprintf("entry %d", r.n), Want: int64(size), Got: int64(n)}
		}
		return fmt.Errorf("read entry %d of %s: %w", r.n, r.name, err)
	}
	r.off += int64(size)
	if err := decode(b); err != nil {
		return &DecodeError{File: r.name, Offset: start, Entry: r.n, Type: string(msg.ProtoReflect().Descriptor().Name()), Err: err}
	}
	r.n++
	return nil
}

// ReadExtra reads n bytes of payload that follow the last entry.
func (r *Reader) ReadExtra(n int64) ([]byte, error) {
	what := fmt.Sprintf("payload of entry %d", r.n-1)
	if n < 0 || n > r.limits.payload() {
		return nil, &LimitError{File: r.name, Offset: r.off, What: what, Size: n, Limit: r.limits.payload()}
	}
	if r.size >= 0 && n > r.size-r.off {
		return nil, &TruncatedError{File: r.name, Offset: r.off, What: what, Want: n, Got: r.size - r.off}
	}
	b := make([]byte, n)
	got, err := r.fill(b)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF {
			return nil, &TruncatedError{File: r.name, Offset: r.off, What: what, Want: n, Got: int64(got)}
		}
		return nil, fmt.Errorf("read %s of %s: %w", what, r.name, err)
	}
	r.off += n
	return b, nil
}

// ReadRest reads everything up to the end of the file (bounded by the
// payload limit).
func (r *Reader) ReadRest() ([]byte, error) {
	lim := r.limits.payload()
	var b []byte
	var err error
	if r.mem {
		b = append([]byte(nil), r.data[min(r.off, int64(len(r.data))):]...)
		if int64(len(b)) > lim {
			b = b[:lim+1]
		}
	} else {
		b, err = io.ReadAll(io.LimitReader(r.r, lim+1))
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", r.name, err)
	}
	if int64(len(b)) > lim {
		return nil, &LimitError{File: r.name, Offset: r.off, What: "trailing data", Size: int64(len(b)), Limit: lim}
	}
	r.off += int64(len(b))
	return b, nil
}

// Entry is one decoded entry with the payload that followed it.
type Entry struct {
	Msg proto.Message
	// Payload is the data that follows the entry (pipe or socket queue
	// data, ghost file contents, TCP queues), nil if none.
	Payload []byte
	// Chunks, for a chunked ghost file, describe where each part of
	// Payload goes in the file (their lengths add up to len(Payload)).
	Chunks []*pb.GhostChunkEntry
	// Messages are a SysV message queue's messages, in queue order.
	Messages []IPCMessage
}

// IPCMessage is one message of a SysV message queue image.
type IPCMessage struct {
	Msg  *pb.IpcMsg
	Text []byte // Msg.Msize bytes
}

// SemValues decodes the payload of a SysV semaphore set entry: its
// semaphores' values.
func SemValues(e *pb.IpcSemEntry, payload []byte) ([]uint16, error) {
	n := int(e.GetNsems())
	if len(payload) < 2*n {
		return nil, fmt.Errorf("semaphore set %d: %d bytes of values for %d semaphores", e.GetDesc().GetId(), len(payload), n)
	}
	v := make([]uint16, n)
	for i := range v {
		v[i] = binary.LittleEndian.Uint16(payload[2*i:])
	}
	return v, nil
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// ReadEntry reads the next entry as the kind's message type together with
// its payload. It returns io.EOF at the end.
func (r *Reader) ReadEntry() (*Entry, error) {
	if r.kind == nil || r.kind.entry == nil {
		return nil, fmt.Errorf("read entry of %s: raw image has no entries", r.name)
	}
	msg := r.kind.NewEntry(r.n == 0)
	if err := r.Next(msg); err != nil {
		return nil, err
	}
	e := &Entry{Msg: msg}
	var err error
	switch r.kind.Payload {
	case PayloadPipeData:
		e.Payload, err = r.ReadExtra(int64(msg.(*pb.PipeDataEntry).GetBytes()))
	case PayloadSkQueue:
		e.Payload, err = r.ReadExtra(int64(msg.(*pb.SkPacketEntry).GetLength()))
	case PayloadTCPStream:
		t := msg.(*pb.TcpStreamEntry)
		e.Payload, err = r.ReadExtra(int64(t.GetInqLen()) + int64(t.GetOutqLen()))
	case PayloadGhost:
		g := msg.(*pb.GhostFileEntry)
		if g.GetChunks() {
			e.Payload, e.Chunks, err = r.readGhostChunks()
		} else {
			e.Payload, err = r.ReadRest()
		}
	case PayloadRest:
		e.Payload, err = r.ReadRest()
	case PayloadIPCShm:
		if m := msg.(*pb.IpcShmEntry); !m.GetInPagemaps() {
			e.Payload, err = r.ReadExtra(roundUp(int64(m.GetSize()), 4))
		}
	case PayloadIPCSem:
		e.Payload, err = r.ReadExtra(roundUp(2*int64(msg.(*pb.IpcSemEntry).GetNsems()), 8))
	case PayloadIPCMsg:
		q := msg.(*pb.IpcMsgEntry)
		for i := uint32(0); i < q.GetQnum() && err == nil; i++ {
			m := &pb.IpcMsg{}
			if err = r.Next(m); err == io.EOF {
				err = &TruncatedError{File: r.name, Offset: r.off, What: fmt.Sprintf("message %d of queue %d", i, q.GetDesc().GetId()), Want: 1}
			}
			if err != nil {
				break
			}
			var b []byte
			if b, err = r.ReadExtra(roundUp(int64(m.GetMsize()), 8)); err == nil {
				e.Messages = append(e.Messages, IPCMessage{Msg: m, Text: b[:m.GetMsize()]})
			}
		}
	}
	if err != nil {
		return nil, err
	}
	return e, nil
}

func (r *Reader) readGhostChunks() ([]byte, []*pb.GhostChunkEntry, error) {
	var data []byte
	var chunks []*pb.GhostChunkEntry
	for {
		c := &pb.GhostChunkEntry{}
		err := r.Next(c)
		if err == io.EOF {
			return data, chunks, nil
		}
		if err != nil {
			return nil, nil, err
		}
		if c.GetLen() > uint64(r.limits.payload())-uint64(len(data)) {
			return nil, nil, &LimitError{File: r.name, Offset: r.off, What: "ghost file contents", Size: int64(len(data)) + int64(min(c.GetLen(), 1<<62)), Limit: r.limits.payload()}
		}
		b, err := r.ReadExtra(int64(c.GetLen()))
		if err != nil {
			return nil, nil, err
		}
		data = append(data, b...)
		chunks = append(chunks, c)
	}
}

// ReadAll reads every remaining entry with its payload.
// Kinds that hold a single entry must hold exactly one.
func (r *Reader) ReadAll() ([]*Entry, error) {
	var out []*Entry
	for {
		start := r.off
		e, err := r.ReadEntry()
		if err == io.EOF {
			if r.kind.Single && len(out) == 0 {
				return nil, &TruncatedError{File: r.name, Offset: r.off, What: "entry 0", Want: 4}
			}
			return out, nil
		}
		if err == nil && r.kind.Single && len(out) == 1 {
			return out, &DecodeError{File: r.name, Offset: start, Entry: 1, Type: string(r.kind.EntryName().Name()), Err: errors.New("a second entry in an image that holds one")}
		}
		if err != nil {
			return out, err
		}
		out = append(out, e)
	}
}

// ReadFile opens the image of kind with id in dir and reads all of it.
func ReadFile(dir string, kind *Kind, id uint64) ([]*Entry, error) {
	r, err := Open(dir, kind, id)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.ReadAll()
}

// ReadOne reads an image that holds exactly one entry (inventory, core,
// mm, ids, fs, ...) into msg.
func ReadOne(dir string, kind *Kind, id uint64, msg proto.Message) error {
	r, err := Open(dir, kind, id)
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.Next(msg); err != nil {
		if err == io.EOF {
			return &TruncatedError{File: r.name, Offset: r.off, What: "entry 0", Want: 4}
		}
		return err
	}
	return nil
}

// Exists reports whether the image of kind with id is present in dir (a
// stat(2) as os.Stat's, without its FileInfo: restore's load asks for
// every optional image kind).
func Exists(dir string, kind *Kind, id uint64) bool {
	path := filepath.Join(dir, kind.FileName(id))
	var st unix.Stat_t
	for {
		err := unix.Stat(path, &st)
		if err != unix.EINTR {
			return err == nil
		}
	}
}
