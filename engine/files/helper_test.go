package files

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/test/testenv"
)

// The test binary doubles as the workload: with CRTOOLS_FILES_HELPER set it
// runs helpers[mode], which sets up kernel objects, prints "READY fd..." and
// waits for "check" on stdin; then it verifies that its objects are intact
// (nothing consumed by the dump) and prints PASS or FAIL.

type helperFunc func(arg string) (fds []int, check func() error)

var helpers = map[string]helperFunc{}

func TestMain(m *testing.M) {
	if mode := os.Getenv("CRTOOLS_FILES_HELPER"); mode != "" {
		runHelper(mode, os.Getenv("CRTOOLS_FILES_HELPER_ARG"))
		return
	}
	if os.Geteuid() == 0 {
		// Helpers we kill must not linger as zombies of PID 1.
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	}
	os.Exit(m.Run())
}

func runHelper(mode, arg string) {
	h, ok := helpers[mode]
	if !ok {
		fmt.Println("FAIL unknown helper", mode)
		os.Exit(2)
	}
	fds, check := h(arg)
	var s []string
	for _, fd := range fds {
		s = append(s, strconv.Itoa(fd))
	}
	fmt.Println("READY " + strings.Join(s, " "))
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	if strings.TrimSpace(line) != "check" {
		os.Exit(0)
	}
	if err := check(); err != nil {
		fmt.Println("FAIL " + err.Error())
		os.Exit(1)
	}
	fmt.Println("PASS")
	os.Exit(0)
}

type helperProc struct {
	t     *testing.T
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	Pid   int
	Fds   []int
	ended bool
}

func requireRoot(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t, "pidfd_getfd of another process")
}

func startHelper(t *testing.T, mode, arg string) *helperProc {
	t.Helper()
	requireRoot(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CRTOOLS_FILES_HELPER="+mode, "CRTOOLS_FILES_HELPER_ARG="+arg)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helperProc{t: t, cmd: cmd, in: in, out: bufio.NewReader(outp), Pid: cmd.Process.Pid}
	t.Cleanup(h.kill)
	lineCh := make(chan string, 1)
	go func() { l, _ := h.out.ReadString('\n'); lineCh <- l }()
	var line string
	select {
	case line = <-lineCh:
	case <-time.After(20 * time.Second):
		t.Fatalf("helper %s: no READY line", mode)
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(line), "READY")
	if !ok {
		t.Fatalf("helper %s: %q", mode, line)
	}
	for _, f := range strings.Fields(rest) {
		n, _ := strconv.Atoi(f)
		h.Fds = append(h.Fds, n)
	}
	return h
}

// check asks the helper to verify its state and fails the test if it does
// not print PASS.
func (h *helperProc) check() {
	h.t.Helper()
	fmt.Fprintln(h.in, "check")
	l, _ := h.out.ReadString('\n')
	h.cmd.Wait()
	h.ended = true
	if strings.TrimSpace(l) != "PASS" {
		h.t.Fatalf("helper after dump: %q", strings.TrimSpace(l))
	}
}

func (h *helperProc) kill() {
	if h.ended {
		return
	}
	h.ended = true
	h.cmd.Process.Kill()
	h.cmd.Wait()
}

func newTestDumper(t *testing.T, opts Options) *Dumper {
	opts.Log = zerolog.New(zerolog.NewTestWriter(t))
	d := NewDumper(opts)
	t.Cleanup(func() { d.Close() })
	return d
}

func dumpAll(t *testing.T, d *Dumper, pid int, fds []int) []*Collected {
	t.Helper()
	var out []*Collected
	for _, fd := range fds {
		c, err := d.Dump(pid, fd)
		if err != nil {
			t.Fatalf("dump fd %d: %v", fd, err)
		}
		out = append(out, c)
	}
	return out
}

func mustPipe(flags int) [2]int {
	var p [2]int
	if err := unix.Pipe2(p[:], flags); err != nil {
		panic(err)
	}
	return p
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// readAllNonblock reads what is available from fd without blocking.
func readAllNonblock(fd int) ([]byte, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, err
	}
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EAGAIN || n == 0 {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, buf[:n]...)
	}
}

func expectBytes(what string, got, want []byte) error {
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s: got %d bytes, want %d (equal prefix %d)", what, len(got), len(want), commonPrefix(got, want))
	}
	return nil
}

func commonPrefix(a, b []byte) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}

// roundTrip writes the set's images (files.img included) into a temporary
// directory and reads them back, so every restore test also proves that the
// images carry everything restore needs.
func roundTrip(t *testing.T, set *Set) *Set {
	t.Helper()
	dir := t.TempDir()
	var msgs []proto.Message
	for _, e := range set.Files {
		msgs = append(msgs, e)
	}
	if err := image.WriteFile(dir, image.Files, 0, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := WriteImages(dir, set); err != nil {
		t.Fatalf("write images: %v", err)
	}
	es, err := image.ReadFile(dir, image.Files, 0)
	if err != nil {
		t.Fatal(err)
	}
	var files []*pb.FileEntry
	for _, e := range es {
		files = append(files, e.Msg.(*pb.FileEntry))
	}
	out, err := ReadImages(dir, files)
	if err != nil {
		t.Fatalf("read images: %v", err)
	}
	return out
}
