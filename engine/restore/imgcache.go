package restore

import (
	"errors"
	"io"

	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image"
)

// imageCache decodes each distinct content of an image kind once. The
// tasks of a tree forked from one program have byte-identical mm, fs and
// fd images (in a 50-task tree: 2 distinct mm images of 50, 1 fs, 1
// fdinfo), and decoding them is most of Load's work: protobuf allocates
// every optional field of every VMA. The decoded messages are shared by
// the tasks, which only read them.
//
// Files bigger than maxWhole (imgread.go) are read as usual, entry by
// entry, under the image package's limits, without being held in memory
// whole.
type imageCache struct {
	memo image.ContentMemo[string, cached] // by kind name, then content
}

// cached is what one content decoded to.
type cached struct {
	msgs []proto.Message
	err  error
}

// get decodes the content b (of the image at path) with decode, once per
// distinct content of kind.
func (c *imageCache) get(kind *image.Kind, b []byte, decode func() ([]proto.Message, error)) ([]proto.Message, error) {
	r := c.memo.Get(kind.Name, b, func() cached {
		msgs, err := decode()
		return cached{msgs, err}
	})
	return r.msgs, r.err
}

// readOne is image.ReadOne through the cache: it returns the decoded
// message, which newMsg makes (a fresh one when the content is new).
func (c *imageCache) readOne(r *imageReader, kind *image.Kind, id uint64, newMsg func() proto.Message) (proto.Message, error) {
	msgs, err := c.read(r, kind, id, func(r *image.Reader) ([]proto.Message, error) {
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
func (c *imageCache) readAll(r *imageReader, kind *image.Kind, id uint64, newMsg func() proto.Message) ([]proto.Message, error) {
	return c.read(r, kind, id, func(r *image.Reader) ([]proto.Message, error) {
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

// read decodes the image of kind with id with decode: once per distinct
// content when r read the file whole, else straight from the file.
func (c *imageCache) read(r *imageReader, kind *image.Kind, id uint64, decode func(*image.Reader) ([]proto.Message, error)) ([]proto.Message, error) {
	rd, data, err := r.open(kind, id)
	if err != nil {
		return nil, err
	}
	if data == nil {
		defer rd.Close()
		return decode(rd)
	}
	return c.get(kind, data, func() ([]proto.Message, error) { return decode(rd) })
}
