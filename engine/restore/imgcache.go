package restore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image"
	procfs "github.com/crtools/crtools/engine/proc"
)

// imageCache decodes each distinct content of an image kind once. The
// tasks of a tree forked from one program have byte-identical mm, fs and
// fd images (in a 50-task tree: 2 distinct mm images of 50, 1 fs, 1
// fdinfo), and decoding them is most of Load's work: protobuf allocates
// every optional field of every VMA. The decoded messages are shared by
// the tasks, which only read them.
//
// Files bigger than cacheMaxFile are read as usual, entry by entry, under
// the image package's limits, without being held in memory whole.
type imageCache struct {
	mu sync.Mutex
	m  map[cacheKey]*cached
}

type cacheKey struct {
	kind    string
	content string
}

// cached is one decoded content; once guards the decoding, so that two
// tasks with the same image wait for one decoder.
type cached struct {
	once sync.Once
	msgs []proto.Message
	err  error
}

// cacheMaxFile bounds the files read whole: an mm image of a few
// thousand VMAs is far smaller.
const cacheMaxFile = 1 << 20

// readImageFile returns the content of the image of kind with id in dir,
// or ok false when it is too big to be cached. Plain system calls: an
// os.File would cost a poller registration attempt and a finalizer per
// file, for some 300 files in a 50-task tree.
func readImageFile(dir string, kind *image.Kind, id uint64) (b []byte, path string, ok bool, err error) {
	path = kind.Path(dir, id)
	fd, err := procfs.OpenNoPoll(path, unix.O_RDONLY, 0)
	if err != nil {
		return nil, path, false, fmt.Errorf("open image: %w", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, path, false, fmt.Errorf("open image %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size > cacheMaxFile {
		return nil, path, false, nil
	}
	b = make([]byte, st.Size)
	for n := 0; n < len(b); {
		m, err := unix.Read(fd, b[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, path, false, fmt.Errorf("read image %s: %w", path, err)
		}
		if m == 0 {
			b = b[:n] // shrank meanwhile: the decoder says what is missing
			break
		}
		n += m
	}
	return b, path, true, nil
}

// get decodes the content b (of the image at path) with decode, once per
// distinct content of kind.
func (c *imageCache) get(kind *image.Kind, b []byte, decode func() ([]proto.Message, error)) ([]proto.Message, error) {
	key := cacheKey{kind: kind.Name, content: string(b)}
	c.mu.Lock()
	if c.m == nil {
		c.m = map[cacheKey]*cached{}
	}
	e, ok := c.m[key]
	if !ok {
		e = &cached{}
		c.m[key] = e
	}
	c.mu.Unlock()
	e.once.Do(func() { e.msgs, e.err = decode() })
	return e.msgs, e.err
}

// readOne is image.ReadOne through the cache: it returns the decoded
// message, which newMsg makes (a fresh one when the content is new).
func (c *imageCache) readOne(dir string, kind *image.Kind, id uint64, newMsg func() proto.Message) (proto.Message, error) {
	msgs, err := c.read(dir, kind, id, func(r *image.Reader) ([]proto.Message, error) {
		m := newMsg()
		if err := r.Next(m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, &image.TruncatedError{File: r.Name(), Offset: r.Offset(), What: "entry 0", Want: 4}
			}
			return nil, err
		}
		return []proto.Message{m}, nil
	})
	if err != nil {
		return nil, err
	}
	return msgs[0], nil
}

// readAll reads every entry of an image through the cache (newMsg makes
// an entry).
func (c *imageCache) readAll(dir string, kind *image.Kind, id uint64, newMsg func() proto.Message) ([]proto.Message, error) {
	return c.read(dir, kind, id, func(r *image.Reader) ([]proto.Message, error) {
		var out []proto.Message
		for {
			m := newMsg()
			err := r.Next(m)
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		}
	})
}

// read decodes the image of kind with id in dir with decode: once per
// distinct content when the file is small enough to be cached, else
// straight from the file.
func (c *imageCache) read(dir string, kind *image.Kind, id uint64, decode func(*image.Reader) ([]proto.Message, error)) ([]proto.Message, error) {
	b, path, ok, err := readImageFile(dir, kind, id)
	if err != nil {
		return nil, err
	}
	if !ok {
		r, err := image.Open(dir, kind, id)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		return decode(r)
	}
	return c.get(kind, b, func() ([]proto.Message, error) {
		r, err := image.NewReader(bytes.NewReader(b), path, kind, int64(len(b)), image.Limits{})
		if err != nil {
			return nil, err
		}
		return decode(r)
	})
}
