package pageserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/rs/zerolog"
)

// Defaults of ServerOptions.
const (
	DefaultIdleTimeout = 5 * time.Minute
	DefaultMaxBytes    = 1 << 40 // 1 TiB of pages in one session
	DefaultMaxPagemaps = 1 << 16
)

// ServerOptions configure a page server.
type ServerOptions struct {
	// ImagesDir receives pagemap-*.img and pages-*.img. It must exist.
	ImagesDir string
	// Address to listen on; empty: every address (as CRIU).
	Address string
	// Port to listen on; 0: one the kernel picks (as CRIU), see Addr.
	Port int
	Log  zerolog.Logger
	// IdleTimeout ends a session whose peer sends nothing for this long
	// (0: DefaultIdleTimeout).
	IdleTimeout time.Duration
	// MaxBytes bounds the page data of one session (0: DefaultMaxBytes).
	MaxBytes int64
	// MaxPagemaps bounds the pagemaps of one session (0: DefaultMaxPagemaps).
	MaxPagemaps int
	// Progress, if set, is called now and then with the bytes of page
	// data received so far.
	Progress func(bytes int64)
}

func (o *ServerOptions) setDefaults() {
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxPagemaps <= 0 {
		o.MaxPagemaps = DefaultMaxPagemaps
	}
}

// Stats describe one session.
type Stats struct {
	Peer     string
	Pagemaps int    // pagemaps stored (flushed)
	Pages    uint64 // pages received
	Bytes    int64  // page bytes received
	Duration time.Duration
}

// Server is a listening page server.
type Server struct {
	opts ServerOptions
	ln   *net.TCPListener
}

// Listen checks the images directory and starts listening.
func Listen(opts ServerOptions) (*Server, error) {
	opts.setDefaults()
	st, err := os.Stat(opts.ImagesDir)
	if err != nil {
		return nil, fmt.Errorf("start page server: images dir: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("start page server: images dir %s is not a directory", opts.ImagesDir)
	}
	if opts.Port < 0 || opts.Port > 65535 {
		return nil, fmt.Errorf("start page server: port %d out of range 0..65535", opts.Port)
	}
	addr := net.JoinHostPort(opts.Address, strconv.Itoa(opts.Port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("start page server on %s: %w", addr, err)
	}
	return &Server{opts: opts, ln: ln.(*net.TCPListener)}, nil
}

// Addr is the address the server listens on (with the port the kernel
// picked if Port was 0).
func (s *Server) Addr() *net.TCPAddr { return s.ln.Addr().(*net.TCPAddr) }

// Close stops listening. It does not end a session being served; cancel
// Serve's context for that.
func (s *Server) Close() error {
	err := s.ln.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Serve accepts one connection, stops listening, and serves that session
// until the peer closes it after a FLUSH (success) or anything goes wrong
// (error; what was not flushed is removed). Cancelling ctx ends it.
func (s *Server) Serve(ctx context.Context) (Stats, error) {
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	conn, err := s.ln.AcceptTCP()
	stop()
	s.ln.Close()
	if err != nil {
		if ctx.Err() != nil {
			return Stats{}, fmt.Errorf("page server stopped before a dump connected: %w", context.Cause(ctx))
		}
		return Stats{}, fmt.Errorf("page server: accept: %w", err)
	}
	defer conn.Close()
	return ServeConn(ctx, conn, s.opts)
}

// ServeConn serves one session on conn, which may be any stream (a
// *net.TCPConn gets zero-copy receives and deadlines).
func ServeConn(ctx context.Context, conn io.ReadWriter, opts ServerOptions) (Stats, error) {
	opts.setDefaults()
	ss := newSession(conn, opts)
	stop := context.AfterFunc(ctx, ss.cancel)
	defer stop()
	start := time.Now()
	err := ss.run()
	if ctx.Err() != nil && err != nil {
		err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	if cerr := ss.cleanup(); err == nil && cerr != nil {
		err = cerr
	}
	ss.stats.Duration = time.Since(start)
	if err != nil {
		return ss.stats, fmt.Errorf("page server session from %s: %w", ss.stats.Peer, err)
	}
	return ss.stats, nil
}

type deadliner interface {
	SetDeadline(time.Time) error
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}
