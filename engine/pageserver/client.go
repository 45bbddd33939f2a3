package pageserver

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image"
)

// DefaultClientTimeout bounds each exchange with the page server (sending
// one run, waiting for an answer). The final FLUSH gets longer, since the
// server fsyncs everything before it answers.
const DefaultClientTimeout = 2 * time.Minute

// clientFramePages is the most pages the client puts in one ADD (a
// variable so that tests can make the split happen with little memory).
var clientFramePages uint64 = MaxFramePages

// smallFrame: runs up to this size are gathered in the client's buffer;
// larger ones go to the socket directly with their header in one writev.
const smallFrame = 128 << 10

// Client sends the pages of a dump to a page server: the dump engine
// opens one sink per pagemap with CreatePages, adds runs, closes the
// sinks, and finally calls Close, which asks the server to make
// everything durable and reports whether it did. On failure call Abort:
// the server then discards everything it received.
//
// A Client is safe for concurrent use; runs of different pagemaps may be
// added from different goroutines (each run goes out in one piece).
type Client struct {
	conn    net.Conn
	log     zerolog.Logger
	timeout time.Duration

	mu    sync.Mutex
	bw    *bufio.Writer
	err   error // sticky: the first failure ends the session
	open  map[uint64]bool
	bytes int64
	hdr   [HeaderSize]byte
	done  bool
}

// DialServer connects to the page server named by a dump's options. An
// empty address means this machine.
func DialServer(ctx context.Context, ps *engine.PageServer, log zerolog.Logger) (*Client, error) {
	if ps == nil {
		return nil, errors.New("connect to page server: no page server given")
	}
	if ps.Port <= 0 || ps.Port > 65535 {
		return nil, fmt.Errorf("connect to page server: port %d: give --port 1..65535", ps.Port)
	}
	host := ps.Address
	if host == "" {
		host = "localhost"
	}
	return Dial(ctx, net.JoinHostPort(host, strconv.Itoa(ps.Port)), log)
}

// Dial connects to the page server at addr ("host:port").
func Dial(ctx context.Context, addr string, log zerolog.Logger) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to page server %s: %w (is `crtools page-server` running there?)", addr, err)
	}
	c := &Client{
		conn:    conn,
		log:     log.With().Str("page_server", addr).Logger(),
		timeout: DefaultClientTimeout,
		bw:      bufio.NewWriterSize(conn, 1<<20),
		open:    map[uint64]bool{},
	}
	c.log.Debug().Msg("connected to page server")
	return c, nil
}

// BytesSent is the page data sent so far.
func (c *Client) BytesSent() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// CreatePages opens the pagemap of kind with id on the server.
func (c *Client) CreatePages(kind *image.Kind, id uint64) (PageSink, error) {
	dst, err := EncodeDstID(kind, id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usable(); err != nil {
		return nil, err
	}
	if c.open[dst] {
		return nil, fmt.Errorf("open %s on page server: already opened", kind.FileName(id))
	}
	if err := c.sendLocked(Header{Cmd: CmdOpen2, DstID: dst}, nil); err != nil {
		return nil, err
	}
	var hasParent [1]byte
	if err := c.recvLocked(hasParent[:], c.timeout); err != nil {
		return nil, c.fail(fmt.Errorf("open %s on page server: %w", kind.FileName(id), err))
	}
	c.open[dst] = true
	return &remotePagemap{c: c, kind: kind, id: id, dst: dst}, nil
}

// Close asks the server to store everything it received (FLUSH), waits
// for its answer and closes the connection. Only a nil error means the
// pages are durable on the server.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return c.err
	}
	if err := c.usable(); err != nil {
		c.finish()
		return err
	}
	err := c.sendLocked(Header{Cmd: CmdFlush}, nil)
	if err == nil {
		var st [4]byte
		// The server fsyncs everything before it answers.
		if rerr := c.recvLocked(st[:], 10*c.timeout); rerr != nil {
			err = fmt.Errorf("wait for the page server to store the pages: %w", rerr)
		} else if status := int32(binary.LittleEndian.Uint32(st[:])); status != 0 {
			err = fmt.Errorf("page server could not store the pages (status %d): see its log", status)
		}
	}
	if err != nil {
		c.err = err
	}
	c.finish()
	if err == nil {
		c.log.Info().Int64("bytes", c.bytes).Msg("pages stored by the page server")
	}
	return err
}

// Abort ends the session without a FLUSH: the server discards what it
// received. Safe to call after Close (then it does nothing).
func (c *Client) Abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return
	}
	if c.err == nil {
		c.err = errors.New("page server session aborted")
	}
	c.finish()
}

func (c *Client) finish() {
	c.done = true
	c.conn.Close()
}

func (c *Client) usable() error {
	if c.err != nil {
		return c.err
	}
	if c.done {
		return errors.New("page server session already closed")
	}
	return nil
}

// fail records err as the session's end; the server will see the
// connection drop and discard everything.
func (c *Client) fail(err error) error {
	if c.err == nil {
		c.err = err
	}
	c.finish()
	return err
}

// sendLocked sends a header and its data. Small frames are gathered in
// the buffer; large ones flush it and go out with one writev.
func (c *Client) sendLocked(h Header, data []byte) error {
	h.Marshal(c.hdr[:])
	c.conn.SetWriteDeadline(time.Now().Add(c.timeout))
	var err error
	if len(data) <= smallFrame {
		if _, err = c.bw.Write(c.hdr[:]); err == nil {
			_, err = c.bw.Write(data)
		}
	} else if err = c.bw.Flush(); err == nil {
		bufs := net.Buffers{c.hdr[:], data}
		_, err = bufs.WriteTo(c.conn)
	}
	if err != nil {
		return c.fail(fmt.Errorf("send to page server: %w", err))
	}
	return nil
}

// recvLocked flushes what is buffered and reads an answer.
func (c *Client) recvLocked(b []byte, timeout time.Duration) error {
	if err := c.bw.Flush(); err != nil {
		return fmt.Errorf("send to page server: %w", err)
	}
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	if _, err := io.ReadFull(c.conn, b); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return errors.New("page server closed the connection (see its log)")
		}
		return err
	}
	return nil
}

// remotePagemap is one pagemap being sent.
type remotePagemap struct {
	c      *Client
	kind   *image.Kind
	id     uint64
	dst    uint64
	end    uint64
	closed bool
}

// AddRun sends npages pages at vaddr. data must hold them: a page server
// cannot be filled behind the client's back.
func (p *remotePagemap) AddRun(vaddr uint64, data []byte, npages uint64) error {
	name := p.kind.FileName(p.id)
	switch {
	case p.closed:
		return fmt.Errorf("add pages to %s: pagemap already closed", name)
	case data == nil:
		return fmt.Errorf("add pages at %#x to %s: a page-server pagemap needs the data", vaddr, name)
	case npages == 0 || uint64(len(data)) != npages*image.PageSize:
		return fmt.Errorf("add pages at %#x to %s: %d bytes for %d pages", vaddr, name, len(data), npages)
	case vaddr%image.PageSize != 0:
		return fmt.Errorf("add pages at %#x to %s: not page aligned", vaddr, name)
	case vaddr < p.end:
		return fmt.Errorf("add pages at %#x to %s: before the end of the previous run (%#x)", vaddr, name, p.end)
	}
	c := p.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usable(); err != nil {
		return err
	}
	for npages > 0 {
		n := min(npages, clientFramePages)
		chunk := data[:n*image.PageSize]
		h := Header{Cmd: CmdAddF | image.PEPresent<<cmdBits, NrPages: n, Vaddr: vaddr, DstID: p.dst}
		if err := c.sendLocked(h, chunk); err != nil {
			return fmt.Errorf("add pages at %#x to %s: %w", vaddr, name, err)
		}
		c.bytes += int64(len(chunk))
		vaddr += n * image.PageSize
		data = data[len(chunk):]
		npages -= n
	}
	p.end = vaddr
	return nil
}

// Close ends the pagemap on the client side; the server stores it when
// the Client is closed (CRIU's protocol has no per-pagemap close).
func (p *remotePagemap) Close() error {
	p.closed = true
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	return p.c.err
}
