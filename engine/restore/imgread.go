package restore

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
)

// imageDir is the images directory as load reads it: files are opened
// relative to the directory's descriptor (one path component to look up,
// not the whole path), and each is read whole in one read(2) into the
// reading goroutine's buffer (imageReader) and decoded from there. Per
// file that is openat, fstat, read and close, where image.Open costs an
// fcntl, a second read for the end of the file, a bufio buffer and a copy
// of every entry besides; load reads some 300 files for a 50-task tree.
type imageDir struct {
	dir   string
	fd    int
	cache *imageCache      // imgcache.go
	cores *image.CoreShare // shared parts of the core entries
}

// openImageDir opens dir for load. The caller closes it.
func openImageDir(dir string) (*imageDir, error) {
	// O_PATH: a directory one may search but not list serves too, as
	// it did when each file was opened by its whole path.
	const flags = unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC
	fd, err := unix.Open(dir, flags, 0)
	for err == unix.EINTR {
		fd, err = unix.Open(dir, flags, 0)
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return &imageDir{dir: dir, fd: fd, cache: &imageCache{}, cores: &image.CoreShare{}}, nil
}

func (d *imageDir) close() { unix.Close(d.fd) }

// reader returns a reader of d for one goroutine.
func (d *imageDir) reader() *imageReader { return &imageReader{d: d} }

// size is the size of the file name in d, as os.Stat says it.
func (d *imageDir) size(name string) (int64, error) {
	var st unix.Stat_t
	for {
		err := unix.Fstatat(d.fd, name, &st, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, &os.PathError{Op: "stat", Path: filepath.Join(d.dir, name), Err: err}
		}
		return st.Size, nil
	}
}

// maxWhole bounds the files read whole; bigger ones (a pagemap of a huge
// sparse mapping, say) are read by image.Open, entry by entry.
const maxWhole = 4 << 20

// imageReader reads images of an imageDir on one goroutine, into a buffer
// it reuses from file to file.
type imageReader struct {
	d   *imageDir
	buf []byte
	rd  image.Reader // open's reader of buf, reused too
}

// open opens the image of kind with id as image.Open does, with the same
// errors. data is the file's content when it was read whole (the reader
// decodes from it; both stay valid until the next open), nil when the
// reader reads the file itself (the caller closes it then).
func (r *imageReader) open(kind *image.Kind, id uint64) (rd *image.Reader, data []byte, err error) {
	name := kind.FileName(id)
	// O_NONBLOCK: a FIFO in place of an image must not block the open
	// for ever (it is refused below); reads of a regular file ignore it.
	fd, err := unix.Openat(r.d.fd, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	for err == unix.EINTR {
		fd, err = unix.Openat(r.d.fd, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	}
	path := filepath.Join(r.d.dir, name)
	if err != nil {
		return nil, nil, fmt.Errorf("open image: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, nil, fmt.Errorf("open image: %w", &os.PathError{Op: "stat", Path: path, Err: err})
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return nil, nil, fmt.Errorf("open image %s: is a directory", path)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, nil, fmt.Errorf("open image %s: not a regular file", path)
	}
	if st.Size > maxWhole {
		rd, err := image.Open(r.d.dir, kind, id)
		return rd, nil, err
	}
	if int64(cap(r.buf)) < st.Size {
		r.buf = make([]byte, st.Size)
	}
	b := r.buf[:st.Size]
	if b == nil {
		b = []byte{} // data is never nil for a file read whole
	}
	n := 0
	for n < len(b) {
		m, err := unix.Read(fd, b[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read image %s: %w", path, err)
		}
		if m == 0 {
			break // shrank meanwhile: the decoder says what is missing
		}
		n += m
	}
	b = b[:n]
	if err := r.rd.ResetBytes(b, path, kind, image.Limits{}); err != nil {
		return nil, nil, err
	}
	return &r.rd, b, nil
}

// closeIfFile closes rd when open returned no data (a reader on the file).
func closeIfFile(rd *image.Reader, data []byte) {
	if data == nil {
		rd.Close()
	}
}

// readOne is image.ReadOne through r.
func (r *imageReader) readOne(kind *image.Kind, id uint64, msg proto.Message) error {
	rd, data, err := r.open(kind, id)
	if err != nil {
		return err
	}
	defer closeIfFile(rd, data)
	if err := rd.Next(msg); err != nil {
		if err == io.EOF {
			return &image.TruncatedError{File: rd.Name(), Offset: rd.Offset(), What: "entry 0", Want: 4}
		}
		return err
	}
	return nil
}

// readFile is image.ReadFile through r.
func (r *imageReader) readFile(kind *image.Kind, id uint64) ([]*image.Entry, error) {
	rd, data, err := r.open(kind, id)
	if err != nil {
		return nil, err
	}
	defer closeIfFile(rd, data)
	return rd.ReadAll()
}

// readPagemap is image.ReadPagemap through r.
func (r *imageReader) readPagemap(kind *image.Kind, id uint64) (*image.PageIndex, error) {
	rd, data, err := r.open(kind, id)
	if err != nil {
		return nil, err
	}
	defer closeIfFile(rd, data)
	return image.DecodePagemap(rd)
}

// readCore reads core-<tid>.img, sharing the identical parts of the cores
// of the tree.
func (r *imageReader) readCore(tid int, c *pb.CoreEntry) error {
	rd, data, err := r.open(image.Core, uint64(tid))
	if err != nil {
		return err
	}
	defer closeIfFile(rd, data)
	if err := rd.NextCore(c, r.d.cores); err != nil {
		if err == io.EOF {
			return &image.TruncatedError{File: rd.Name(), Offset: rd.Offset(), What: "entry 0", Want: 4}
		}
		return err
	}
	return nil
}
