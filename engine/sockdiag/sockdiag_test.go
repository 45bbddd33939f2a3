package sockdiag

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func inoOf(t *testing.T, fd int) uint32 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatalf("fstat %d: %v", fd, err)
	}
	return uint32(st.Ino)
}

func mustSocket(t *testing.T, typ int) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestUnixSocketsReportsPairsListenersAndNames(t *testing.T) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[0])
	defer unix.Close(pair[1])
	if _, err := unix.Write(pair[0], []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Shutdown(pair[1], unix.SHUT_WR); err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(t.TempDir(), "listen.sock")
	l := mustSocket(t, unix.SOCK_STREAM)
	if err := unix.Bind(l, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(l, 7); err != nil {
		t.Fatal(err)
	}
	c1 := mustSocket(t, unix.SOCK_STREAM)
	c2 := mustSocket(t, unix.SOCK_STREAM)
	for _, c := range []int{c1, c2} {
		if err := unix.Connect(c, &unix.SockaddrUnix{Name: path}); err != nil {
			t.Fatal(err)
		}
	}
	abs := mustSocket(t, unix.SOCK_DGRAM)
	absName := "@crtools-sockdiag-test-" + filepath.Base(t.TempDir())
	if err := unix.Bind(abs, &unix.SockaddrUnix{Name: absName}); err != nil {
		t.Fatal(err)
	}

	all, err := UnixSockets()
	if err != nil {
		t.Fatal(err)
	}
	a, b := all[inoOf(t, pair[0])], all[inoOf(t, pair[1])]
	if a == nil || b == nil {
		t.Fatalf("socketpair not reported")
	}
	if a.Peer != b.Ino || b.Peer != a.Ino || a.Type != unix.SOCK_STREAM || a.State != TCPEstablished {
		t.Errorf("pair: a=%+v b=%+v", a, b)
	}
	if b.RQueue != 5 {
		t.Errorf("receive queue of b = %d, want 5", b.RQueue)
	}
	if b.Shutdown != 2 || a.Shutdown != 1 {
		t.Errorf("shutdown bits a=%d b=%d, want 1 and 2", a.Shutdown, b.Shutdown)
	}

	ls := all[inoOf(t, l)]
	if ls == nil || !ls.Listening() {
		t.Fatalf("listener: %+v", ls)
	}
	if string(ls.Name) != path || !ls.HasVFS {
		t.Errorf("listener name %q vfs %v", ls.Name, ls.HasVFS)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if uint64(ls.VFSIno) != st.Ino {
		t.Errorf("vfs ino %d, stat ino %d", ls.VFSIno, st.Ino)
	}
	want := []uint32{inoOf(t, c1), inoOf(t, c2)}
	if !slices.Equal(ls.Icons, want) {
		t.Errorf("icons %v, want %v", ls.Icons, want)
	}
	if ls.RQueue != 2 || ls.WQueue != 7 {
		t.Errorf("listener rqlen %d/%d, want 2/7", ls.RQueue, ls.WQueue)
	}
	// A pending client's peer is the embryo socket waiting in the queue,
	// which has no inode: the listener's icons are the only link.
	if cs := all[inoOf(t, c1)]; cs == nil || cs.Peer != 0 || cs.State != TCPEstablished {
		t.Errorf("client peer: %+v", cs)
	}

	as := all[inoOf(t, abs)]
	if as == nil || !bytes.Equal(as.Name, append([]byte{0}, absName[1:]...)) || as.HasVFS {
		t.Errorf("abstract socket: %+v", as)
	}
	if as.UID != uint32(os.Getuid()) || !as.HasUID {
		t.Errorf("uid %d", as.UID)
	}
}

func TestParseReplyRejectsBadLengths(t *testing.T) {
	out := map[uint32]*UnixSocket{}
	for _, b := range [][]byte{
		{0xff, 0xff, 0, 0, 20, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0},
		{3, 0, 0, 0, 20, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0},
	} {
		if _, err := parseDumpReply("unix", b, 1, unixMsgInto(out)); err == nil {
			t.Errorf("parseDumpReply(%x): no error", b)
		}
	}
	msg := make([]byte, unixDiagMsgSize+4)
	msg[unixDiagMsgSize] = 0xff // attribute longer than the message
	if _, err := parseUnixMsg(msg); err == nil {
		t.Error("parseUnixMsg accepted an overlong attribute")
	}
	if _, err := parseUnixMsg(msg[:3]); err == nil {
		t.Error("parseUnixMsg accepted a short message")
	}
}
