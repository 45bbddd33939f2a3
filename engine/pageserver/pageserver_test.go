package pageserver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image"
)

func testLog(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel)
}

type result struct {
	stats Stats
	err   error
}

// startServer starts a page server on an ephemeral loopback port and
// serves one session in the background.
func startServer(t testing.TB, opts ServerOptions) (string, <-chan result) {
	t.Helper()
	opts.Address = "127.0.0.1"
	opts.Port = 0
	if opts.ImagesDir == "" {
		opts.ImagesDir = t.TempDir()
	}
	opts.Log = testLog(t)
	srv, err := Listen(opts)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	ch := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	go func() {
		defer cancel()
		st, err := srv.Serve(ctx)
		ch <- result{st, err}
	}()
	return srv.Addr().String(), ch
}

func wait(t testing.TB, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("page server did not end its session")
		return result{}
	}
}

// fakeVMA is a run of pages of a fake address space; present lists which
// of its pages are sent (the others were never touched).
type fakeVMA struct {
	start   uint64
	pages   int
	present func(i int) bool
}

type fakeTask struct {
	kind *image.Kind
	id   uint64
	vmas []fakeVMA
	mem  map[uint64][]byte // page address -> contents sent
}

func (ft *fakeTask) fill(rng *rand.Rand) {
	ft.mem = map[uint64][]byte{}
	for _, v := range ft.vmas {
		for i := range v.pages {
			if v.present(i) {
				p := make([]byte, image.PageSize)
				for j := range p {
					p[j] = byte(rng.Uint32())
				}
				ft.mem[v.start+uint64(i)*image.PageSize] = p
			}
		}
	}
}

// runs yields the present pages of ft as maximal runs.
func (ft *fakeTask) runs() [][2]uint64 {
	addrs := make([]uint64, 0, len(ft.mem))
	for a := range ft.mem {
		addrs = append(addrs, a)
	}
	slices.Sort(addrs)
	var out [][2]uint64
	for _, a := range addrs {
		if n := len(out); n > 0 && out[n-1][0]+out[n-1][1]*image.PageSize == a {
			out[n-1][1]++
			continue
		}
		out = append(out, [2]uint64{a, 1})
	}
	return out
}

func (ft *fakeTask) data(vaddr, n uint64) []byte {
	b := make([]byte, 0, n*image.PageSize)
	for i := range n {
		b = append(b, ft.mem[vaddr+i*image.PageSize]...)
	}
	return b
}

func fakeTasks() []*fakeTask {
	all := func(int) bool { return true }
	tasks := []*fakeTask{
		{kind: image.Pagemap, id: 4242, vmas: []fakeVMA{
			{0x400000, 3, all}, // text
			{0x600000, 8, func(i int) bool { return i%3 != 1 }},       // data with holes
			{0x7f0000000000, 40, func(i int) bool { return i < 37 }},  // heap
			{0x7ffffffde000, 33, func(i int) bool { return i >= 30 }}, // stack
		}},
		{kind: image.Pagemap, id: 77, vmas: []fakeVMA{
			{0x10000, 1, all},
			{0x7f1234560000, 300, func(i int) bool { return i%50 < 45 }},
		}},
		{kind: image.ShmemPagemap, id: 9, vmas: []fakeVMA{{0, 5, all}}},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, ft := range tasks {
		ft.fill(rng)
	}
	return tasks
}

// checkImages decodes the pagemaps of tasks in dir with engine/image and
// compares every page, and checks that nothing else is in dir.
func checkImages(t *testing.T, dir string, tasks []*fakeTask) {
	t.Helper()
	want := map[string]bool{}
	for _, ft := range tasks {
		pr, err := image.OpenPages(dir, ft.kind, ft.id)
		if err != nil {
			t.Fatalf("OpenPages %s: %v", ft.kind.FileName(ft.id), err)
		}
		want[ft.kind.FileName(ft.id)] = true
		want[image.Pages.FileName(uint64(pr.Index.PagesID))] = true
		if got, exp := pr.Index.PagesSize, int64(len(ft.mem))*image.PageSize; got != exp {
			t.Errorf("%s: %d bytes of pages, want %d", ft.kind.FileName(ft.id), got, exp)
		}
		if got, exp := len(pr.Index.Runs), len(ft.runs()); got != exp {
			t.Errorf("%s: %d runs, want %d (adjacent runs merged)", ft.kind.FileName(ft.id), got, exp)
		}
		for _, v := range ft.vmas {
			for i := range v.pages {
				a := v.start + uint64(i)*image.PageSize
				b := make([]byte, image.PageSize)
				missing, err := pr.ReadAt(b, a)
				if err != nil {
					t.Fatalf("ReadAt %#x: %v", a, err)
				}
				exp, ok := ft.mem[a]
				if !ok {
					if missing != image.PageSize {
						t.Errorf("%s: page %#x was never sent but is in the image", ft.kind.FileName(ft.id), a)
					}
					continue
				}
				if missing != 0 || !bytes.Equal(b, exp) {
					t.Fatalf("%s: page %#x differs (missing %d)", ft.kind.FileName(ft.id), a, missing)
				}
			}
		}
		pr.Close()
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !want[e.Name()] {
			t.Errorf("unexpected file %s left in the images dir", e.Name())
		}
	}
	if len(ents) != len(want) {
		t.Errorf("images dir has %d files, want %d", len(ents), len(want))
	}
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("file %s left in the images dir", e.Name())
	}
}

// send sends tasks through c. With interleave, runs of the tasks alternate.
func send(t *testing.T, c *Client, tasks []*fakeTask, interleave bool) {
	t.Helper()
	sinks := make([]PageSink, len(tasks))
	for i, ft := range tasks {
		s, err := c.CreatePages(ft.kind, ft.id)
		if err != nil {
			t.Fatalf("CreatePages: %v", err)
		}
		sinks[i] = s
	}
	runs := make([][][2]uint64, len(tasks))
	for i, ft := range tasks {
		runs[i] = ft.runs()
	}
	for k := 0; ; k++ {
		more := false
		for i, ft := range tasks {
			if k >= len(runs[i]) {
				continue
			}
			more = true
			todo := runs[i][k:]
			if interleave {
				todo = todo[:1]
			}
			for _, r := range todo {
				if err := sinks[i].AddRun(r[0], ft.data(r[0], r[1]), r[1]); err != nil {
					t.Fatalf("AddRun: %v", err)
				}
			}
			if !interleave {
				runs[i] = nil
			}
		}
		if !more {
			break
		}
	}
	for _, s := range sinks {
		if err := s.Close(); err != nil {
			t.Fatalf("sink Close: %v", err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, interleave := range []bool{false, true} {
		t.Run(map[bool]string{false: "sequential", true: "interleaved"}[interleave], func(t *testing.T) {
			// Split runs into small frames too, as runs over MaxFramePages are.
			defer func(v uint64) { clientFramePages = v }(clientFramePages)
			clientFramePages = 7

			dir := t.TempDir()
			addr, ch := startServer(t, ServerOptions{ImagesDir: dir})
			c, err := Dial(context.Background(), addr, testLog(t))
			if err != nil {
				t.Fatal(err)
			}
			tasks := fakeTasks()
			send(t, c, tasks, interleave)
			if err := c.Close(); err != nil {
				t.Fatalf("client Close: %v", err)
			}
			r := wait(t, ch)
			if r.err != nil {
				t.Fatalf("server: %v", r.err)
			}
			var pages uint64
			for _, ft := range tasks {
				pages += uint64(len(ft.mem))
			}
			if r.stats.Pagemaps != len(tasks) || r.stats.Pages != pages || r.stats.Bytes != int64(pages)*image.PageSize {
				t.Errorf("stats %+v, want %d pagemaps, %d pages", r.stats, len(tasks), pages)
			}
			if got := c.BytesSent(); got != int64(pages)*image.PageSize {
				t.Errorf("client sent %d bytes, want %d", got, pages*image.PageSize)
			}
			checkImages(t, dir, tasks)
		})
	}
}

// A client that disconnects in the middle of a run leaves nothing behind.
func TestDisconnectMidStream(t *testing.T) {
	dir := t.TempDir()
	addr, ch := startServer(t, ServerOptions{ImagesDir: dir})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	dst, _ := EncodeDstID(image.Pagemap, 100)
	var b [HeaderSize]byte
	Header{Cmd: CmdOpen2, DstID: dst}.Marshal(b[:])
	conn.Write(b[:])
	var reply [1]byte
	if _, err := io.ReadFull(conn, reply[:]); err != nil || reply[0] != 0 {
		t.Fatalf("OPEN2 answer %v, %v", reply, err)
	}
	// One complete run, then half of the next.
	Header{Cmd: CmdAdd, NrPages: 2, Vaddr: 0x1000, DstID: dst}.Marshal(b[:])
	conn.Write(b[:])
	conn.Write(make([]byte, 2*image.PageSize))
	Header{Cmd: CmdAdd, NrPages: 4, Vaddr: 0x10000, DstID: dst}.Marshal(b[:])
	conn.Write(b[:])
	conn.Write(make([]byte, image.PageSize+100))
	conn.Close()

	r := wait(t, ch)
	if r.err == nil || !strings.Contains(r.err.Error(), "page data missing") {
		t.Fatalf("server error %v, want one about missing page data", r.err)
	}
	assertEmptyDir(t, dir)
}

// Abort (a failed dump) makes the server discard what it received.
func TestClientAbort(t *testing.T) {
	dir := t.TempDir()
	addr, ch := startServer(t, ServerOptions{ImagesDir: dir})
	c, err := Dial(context.Background(), addr, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	send(t, c, fakeTasks(), false)
	c.Abort()
	if err := c.Close(); err == nil {
		t.Error("Close after Abort succeeded")
	}
	r := wait(t, ch)
	if r.err == nil || !strings.Contains(r.err.Error(), "without a FLUSH") {
		t.Fatalf("server error %v, want one about a missing FLUSH", r.err)
	}
	assertEmptyDir(t, dir)
}

// Something that is not a page-server client gets a clear error.
func TestGarbageClient(t *testing.T) {
	dir := t.TempDir()
	addr, ch := startServer(t, ServerOptions{ImagesDir: dir})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"))
	r := wait(t, ch)
	conn.Close()
	if !errors.Is(r.err, ErrProtocol) || !strings.Contains(r.err.Error(), "unknown command") {
		t.Fatalf("server error %v, want a protocol error about an unknown command", r.err)
	}
	assertEmptyDir(t, dir)
}

// A page server never replaces images already in its directory.
func TestRefusesExistingPagemap(t *testing.T) {
	dir := t.TempDir()
	old := []byte("an earlier dump")
	if err := os.WriteFile(filepath.Join(dir, "pagemap-77.img"), old, 0o600); err != nil {
		t.Fatal(err)
	}
	addr, ch := startServer(t, ServerOptions{ImagesDir: dir})
	c, err := Dial(context.Background(), addr, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Abort()
	_, err = c.CreatePages(image.Pagemap, 77)
	if err == nil || !strings.Contains(err.Error(), "closed the connection") {
		t.Fatalf("CreatePages over an existing pagemap: %v", err)
	}
	r := wait(t, ch)
	if r.err == nil || !strings.Contains(r.err.Error(), "already holds") {
		t.Fatalf("server error %v, want one saying the dir already holds the pagemap", r.err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "pagemap-77.img")); !bytes.Equal(b, old) {
		t.Error("existing pagemap changed")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("images dir has %d entries, want only the old pagemap", len(ents))
	}
}

// The server picks pages file numbers that do not clash with files in
// the directory.
func TestPagesIDAvoidsExisting(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"pages-1.img", "pages-2.img"} {
		os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600)
	}
	addr, ch := startServer(t, ServerOptions{ImagesDir: dir})
	c, err := Dial(context.Background(), addr, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	tasks := fakeTasks()[:1]
	send(t, c, tasks, false)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if r := wait(t, ch); r.err != nil {
		t.Fatal(r.err)
	}
	pm, err := image.ReadPagemap(dir, image.Pagemap, tasks[0].id)
	if err != nil {
		t.Fatal(err)
	}
	if pm.PagesID != 3 {
		t.Errorf("pages id %d, want 3 (1 and 2 are taken)", pm.PagesID)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "pages-1.img")); string(b) != "x" {
		t.Error("pages-1.img changed")
	}
}

// rw is a stream made of what a client sends and what the server answers.
type rw struct {
	io.Reader
	out bytes.Buffer
}

func (s *rw) Write(b []byte) (int, error) { return s.out.Write(b) }

func frame(h Header, data ...byte) []byte {
	b := make([]byte, HeaderSize, HeaderSize+len(data))
	h.Marshal(b)
	return append(b, data...)
}

// A byte stream exactly as CRIU's dump sends it: the legacy ADD, ADD_F
// with flags, PARENT, FLUSH; and the answers CRIU expects.
func TestCRIUStream(t *testing.T) {
	dir := t.TempDir()
	dst := uint64(1234)<<8 | 1
	page := func(c byte) []byte { return bytes.Repeat([]byte{c}, image.PageSize) }
	// C senders may leave garbage in the header's padding.
	frame := func(h Header, data ...byte) []byte {
		b := frame(h, data...)
		copy(b[4:8], []byte{0xde, 0xad, 0xbe, 0xef})
		return b
	}
	var in []byte
	in = append(in, frame(Header{Cmd: CmdParent, DstID: dst})...)
	in = append(in, frame(Header{Cmd: CmdOpen2, DstID: dst})...)
	in = append(in, frame(Header{Cmd: CmdAdd, NrPages: 1, Vaddr: 0x1000, DstID: dst}, page('a')...)...)
	in = append(in, frame(Header{Cmd: CmdAddF | (image.PEPresent|image.PELazy)<<16, NrPages: 2, Vaddr: 0x5000, DstID: dst},
		append(page('b'), page('c')...)...)...)
	in = append(in, frame(Header{Cmd: CmdFlush})...)
	s := &rw{Reader: bytes.NewReader(in)}
	st, err := ServeConn(context.Background(), s, ServerOptions{ImagesDir: dir, Log: testLog(t)})
	if err != nil {
		t.Fatalf("ServeConn: %v", err)
	}
	// PARENT: i32 0; OPEN2: one byte 0; FLUSH: i32 0.
	if want := []byte{0, 0, 0, 0, 0, 0, 0, 0, 0}; !bytes.Equal(s.out.Bytes(), want) {
		t.Errorf("answers %v, want %v", s.out.Bytes(), want)
	}
	if st.Pages != 3 || st.Pagemaps != 1 {
		t.Errorf("stats %+v", st)
	}
	pr, err := image.OpenPages(dir, image.Pagemap, 1234)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	// PE_LAZY is dropped: crtools restores every present page eagerly.
	if len(pr.Index.Runs) != 2 || pr.Index.Runs[1].Flags != image.PEPresent {
		t.Errorf("runs %+v", pr.Index.Runs)
	}
	b := make([]byte, 3*image.PageSize)
	if _, err := pr.ReadAt(b[:image.PageSize], 0x1000); err != nil {
		t.Fatal(err)
	}
	if _, err := pr.ReadAt(b[image.PageSize:], 0x5000); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, append(page('a'), append(page('b'), page('c')...)...)) {
		t.Error("page contents differ")
	}
}

func TestProtocolErrors(t *testing.T) {
	dst := uint64(10)<<8 | TypePagemap
	open := frame(Header{Cmd: CmdOpen, DstID: dst})
	page := make([]byte, image.PageSize)
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "before anything"},
		{"short header", []byte{1, 2, 3}, "inside a header"},
		{"unknown command", frame(Header{Cmd: 0x77}), "unknown command"},
		{"hole", frame(Header{Cmd: CmdHole, NrPages: 1, DstID: dst}), "parent image"},
		{"parent flag", frame(Header{Cmd: CmdAddF | image.PEParent<<16, NrPages: 1, DstID: dst}), "parent image"},
		{"lazy only", frame(Header{Cmd: CmdAddF | image.PELazy<<16, NrPages: 1, DstID: dst}), "lazy"},
		{"get", frame(Header{Cmd: CmdGet, NrPages: 1, DstID: dst}), "lazy"},
		{"unknown flags", frame(Header{Cmd: CmdAddF | (image.PEPresent|0x100)<<16, NrPages: 1, DstID: dst}), "unknown page flags"},
		{"bad type", frame(Header{Cmd: CmdOpen2, DstID: 10<<8 | 99}), "unknown pagemap type"},
		{"pid zero", frame(Header{Cmd: CmdOpen2, DstID: TypePagemap}), "pid 0"},
		{"huge pid", frame(Header{Cmd: CmdOpen2, DstID: 1<<40 | TypePagemap}), "outside"},
		{"empty run", frame(Header{Cmd: CmdAdd, DstID: dst}), "empty page run"},
		{"misaligned", frame(Header{Cmd: CmdAdd, NrPages: 1, Vaddr: 0x1001, DstID: dst}), "not page aligned"},
		{"too many pages", frame(Header{Cmd: CmdAdd, NrPages: MaxFramePages + 1, DstID: dst}), "over the limit"},
		{"beyond user space", frame(Header{Cmd: CmdAdd, NrPages: 2, Vaddr: maxUserAddr - image.PageSize, DstID: dst}), "largest user address"},
		{"wrapping", frame(Header{Cmd: CmdAdd, NrPages: 2, Vaddr: ^uint64(0) &^ (image.PageSize - 1), DstID: dst}), "largest user address"},
		{"huge count", frame(Header{Cmd: CmdAdd, NrPages: 1 << 62, DstID: dst}), "over the limit"},
		{"open twice", append(slices.Clone(open), open...), "opened twice"},
		{"out of order", slices.Concat(open,
			frame(Header{Cmd: CmdAdd, NrPages: 1, Vaddr: 0x3000, DstID: dst}), page,
			frame(Header{Cmd: CmdAdd, NrPages: 1, Vaddr: 0x2000, DstID: dst}), page), "out of order"},
		{"no flush", slices.Concat(open, frame(Header{Cmd: CmdAdd, NrPages: 1, Vaddr: 0x3000, DstID: dst}), page), "without a FLUSH"},
		{"truncated data", slices.Concat(open, frame(Header{Cmd: CmdAdd, NrPages: 2, Vaddr: 0x3000, DstID: dst}), page), "page data missing"},
		{"over MaxBytes", slices.Concat(open, frame(Header{Cmd: CmdAdd, NrPages: 3, DstID: dst})), "limit of 8192 bytes"},
		{"reopen after flush", slices.Concat(open, frame(Header{Cmd: CmdFlush}), open), "after it was flushed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := &rw{Reader: bytes.NewReader(tc.in)}
			_, err := ServeConn(context.Background(), s, ServerOptions{ImagesDir: dir, Log: testLog(t), MaxBytes: 2 * image.PageSize})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), ".") || tc.name != "reopen after flush" {
					t.Errorf("left %s in the images dir", e.Name())
				}
			}
		})
	}
}

// The wire header is CRIU 4.x's struct page_server_iov: 32 bytes,
// little-endian cmd at 0, padding at 4 (ignored: C leaves it undefined),
// nr_pages at 8, vaddr at 16, dst_id at 24.
func TestHeaderLayout(t *testing.T) {
	var b [HeaderSize]byte
	h := Header{Cmd: 0x00040006, NrPages: 0x1122334455667788, Vaddr: 0x0102030405060708, DstID: 0xa1a2a3a4a5a6a7a8}
	h.Marshal(b[:])
	want := []byte{
		0x06, 0x00, 0x04, 0x00,
		0, 0, 0, 0,
		0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
		0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
		0xa8, 0xa7, 0xa6, 0xa5, 0xa4, 0xa3, 0xa2, 0xa1,
	}
	if !bytes.Equal(b[:], want) {
		t.Errorf("marshal % x, want % x", b, want)
	}
	b[4], b[7] = 0xde, 0xad // garbage padding from a C sender
	if got := UnmarshalHeader(b[:]); got != h {
		t.Errorf("unmarshal %+v, want %+v", got, h)
	}
	if h.Command() != CmdAddF || h.Flags() != image.PEPresent {
		t.Errorf("command %#x flags %#x", h.Command(), h.Flags())
	}
}

func TestDstID(t *testing.T) {
	for _, k := range []*image.Kind{image.Pagemap, image.ShmemPagemap} {
		dst, err := EncodeDstID(k, 4321)
		if err != nil {
			t.Fatal(err)
		}
		gk, id, err := DecodeDstID(dst)
		if err != nil || gk != k || id != 4321 {
			t.Errorf("%v: decode(%#x) = %v %d %v", k, dst, gk, id, err)
		}
	}
	if _, err := EncodeDstID(image.Core, 1); err == nil {
		t.Error("encoded a dst_id for a core image")
	}
	// CRIU 1.x-3.x sent their file-type numbers.
	if k, id, err := DecodeDstID(55<<8 | 11); err != nil || k != image.Pagemap || id != 55 {
		t.Errorf("legacy type 11: %v %d %v", k, id, err)
	}
}

func TestDialServer(t *testing.T) {
	if _, err := DialServer(context.Background(), &engine.PageServer{Address: "127.0.0.1"}, testLog(t)); err == nil || !strings.Contains(err.Error(), "--port") {
		t.Errorf("no port: %v", err)
	}
	// A port nobody listens on: take an ephemeral one and free it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	_, err = DialServer(context.Background(), &engine.PageServer{Address: "127.0.0.1", Port: port}, testLog(t))
	if err == nil || !strings.Contains(err.Error(), "page-server` running") {
		t.Errorf("nobody listening: %v", err)
	}
}

func TestServeCancel(t *testing.T) {
	dir := t.TempDir()
	srv, err := Listen(ServerOptions{ImagesDir: dir, Address: "127.0.0.1", Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { _, err := srv.Serve(ctx); ch <- err }()
	// A client that opens a pagemap and then hangs.
	c, err := Dial(context.Background(), srv.Addr().String(), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Abort()
	if _, err := c.CreatePages(image.Pagemap, 5); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-ch:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	assertEmptyDir(t, dir)
}

func TestListenErrors(t *testing.T) {
	if _, err := Listen(ServerOptions{ImagesDir: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("listen with a missing images dir")
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o600)
	if _, err := Listen(ServerOptions{ImagesDir: f}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("listen with a file as images dir: %v", err)
	}
}

// memDir is an empty directory in memory if the machine has /dev/shm:
// fuzzing creates, fsyncs and removes files thousands of times a second,
// which a disk with discard turns into one exec a second.
func memDir(t testing.TB) string {
	dir, err := os.MkdirTemp("/dev/shm", "pageserver-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// validStream is a complete good session for the fuzz corpus.
func validStream() []byte {
	dst := uint64(3)<<8 | TypePagemap
	var in []byte
	in = append(in, frame(Header{Cmd: CmdOpen2, DstID: dst})...)
	in = append(in, frame(Header{Cmd: CmdAdd, NrPages: 1, Vaddr: 0x1000, DstID: dst}, make([]byte, image.PageSize)...)...)
	in = append(in, frame(Header{Cmd: CmdAddF | image.PEPresent<<16, NrPages: 1, Vaddr: 0x3000, DstID: dst}, bytes.Repeat([]byte{7}, image.PageSize)...)...)
	return append(in, frame(Header{Cmd: CmdFlush})...)
}

// FuzzSession feeds arbitrary client streams to a session: it must never
// panic or hang, must leave no temporary files, and whatever it stored
// must decode.
func FuzzSession(f *testing.F) {
	good := validStream()
	f.Add(good)
	f.Add(good[:len(good)-5])
	f.Add(good[:HeaderSize+10])
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"))
	f.Add(frame(Header{Cmd: CmdParent, DstID: 1<<8 | 2}))
	f.Fuzz(func(t *testing.T, in []byte) {
		dir := memDir(t)
		s := &rw{Reader: bytes.NewReader(in)}
		_, err := ServeConn(context.Background(), s, ServerOptions{
			ImagesDir: dir, Log: zerolog.Nop(), MaxBytes: 1 << 20, MaxPagemaps: 8,
		})
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") {
				t.Fatalf("temporary %s left behind (err %v)", e.Name(), err)
			}
			k, id, ok := image.KindByFilename(e.Name())
			if !ok {
				t.Fatalf("unexpected file %s", e.Name())
			}
			if k == image.Pages {
				continue
			}
			pr, derr := image.OpenPages(dir, k, id)
			if derr != nil {
				t.Fatalf("stored %s does not decode: %v", e.Name(), derr)
			}
			pr.Close()
		}
		if err == nil && len(ents) == 0 && bytes.Count(in, []byte{0x23, 0x10}) == 0 {
			t.Fatalf("session without a FLUSH succeeded")
		}
	})
}
