package files

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/netlock"
	"github.com/crtools/crtools/engine/sockdiag"
)

// These tests dump descriptors of the test process itself (pidfd_getfd
// works on oneself), close the originals as a kill would, and restore from
// the images written to a temporary directory.

func requireRootInet(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("inet socket tests need root (CAP_NET_ADMIN for TCP_REPAIR and nftables); CI runs as root")
	}
}

func tcpSocket(t *testing.T, family int) int {
	t.Helper()
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func localPort(t *testing.T, fd int) int {
	t.Helper()
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	t.Fatalf("socket name %T", sa)
	return 0
}

// inetRoundTrip dumps fds of this process, closes them, writes and reads the
// images and returns a restorer and the collected entries.
func inetRoundTrip(t *testing.T, opts Options, fds ...int) (*Restorer, []*Collected, *Dumper) {
	t.Helper()
	opts.Log = zerolog.Nop()
	d := NewDumper(opts)
	t.Cleanup(func() { d.Close() })
	var cs []*Collected
	for _, fd := range fds {
		c, err := d.Dump(os.Getpid(), fd)
		if err != nil {
			d.Rollback()
			t.Fatalf("dump fd %d: %v", fd, err)
		}
		cs = append(cs, c)
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	if err := d.ReleaseTCP(true); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := WriteImages(dir, d.Set()); err != nil {
		t.Fatal(err)
	}
	set, err := ReadImages(dir, d.Set().Files)
	if err != nil {
		t.Fatal(err)
	}
	r := NewRestorer(set, zerolog.Nop())
	r.TCPEstablished = opts.TCPEstablished
	t.Cleanup(func() { r.Close() })
	return r, cs, d
}

func TestInetListenerAndUDPOptions(t *testing.T) {
	requireRootInet(t)
	ln := tcpSocket(t, unix.AF_INET)
	unix.SetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	unix.SetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_RCVBUF, 50000)
	unix.SetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(ln, 7); err != nil {
		t.Fatal(err)
	}
	wantRcv, _ := unix.GetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_RCVBUF)
	lport := localPort(t, ln)

	ln6 := tcpSocket(t, unix.AF_INET6)
	unix.SetsockoptInt(ln6, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
	if err := unix.Bind(ln6, &unix.SockaddrInet6{Addr: netip.IPv6Loopback().As16()}); err != nil {
		t.Fatal(err)
	}
	unix.Listen(ln6, 3)
	lport6 := localPort(t, ln6)

	// A UDP socket bound and connected to a peer that stays.
	peer, _ := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	defer unix.Close(peer)
	unix.Bind(peer, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	pport := localPort(t, peer)
	udp, _ := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	unix.Bind(udp, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	if err := unix.Connect(udp, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: pport}); err != nil {
		t.Fatal(err)
	}
	uport := localPort(t, udp)
	// Datagrams queued on it at dump time (one empty, one big).
	udpQueue := [][]byte{[]byte("first"), {}, pattern(3000)}
	for _, m := range udpQueue {
		if err := unix.Sendto(peer, m, 0, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: uport}); err != nil {
			t.Fatal(err)
		}
	}

	r, cs, d := inetRoundTrip(t, Options{}, ln, ln6, udp)
	if err := sameDgrams("saved UDP queue", func() (out [][]byte) {
		for _, p := range d.Set().Queues[cs[2].ID] {
			out = append(out, p.Data)
		}
		return
	}(), udpQueue); err != nil {
		t.Error(err)
	}
	for i, c := range cs {
		if c.Kind != pb.FdTypes_INETSK || c.Entry.GetIsk() == nil {
			t.Fatalf("socket %d dumped as %v", i, c.Kind)
		}
	}
	if e := cs[0].Entry.GetIsk(); e.GetState() != tcpListen || e.GetBacklog() != 7 || !e.GetOpts().GetReuseaddr() || e.GetSrcPort() != uint32(lport) {
		t.Fatalf("listener entry: %v", e)
	}

	f, err := r.Open(cs[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	if p := localPort(t, fd); p != lport {
		t.Errorf("restored listener on port %d, want %d", p, lport)
	}
	if v, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF); v != wantRcv {
		t.Errorf("SO_RCVBUF %d, want %d", v, wantRcv)
	}
	if v, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE); v != 1 {
		t.Errorf("SO_KEEPALIVE %d, want 1", v)
	}
	if v, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR); v != 1 {
		t.Errorf("SO_REUSEADDR %d, want 1", v)
	}
	diag, err := sockdiag.InetSockets(unix.AF_INET, unix.IPPROTO_TCP)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	unix.Fstat(fd, &st)
	if s := diag[uint32(st.Ino)]; s == nil || s.State != tcpListen || s.WQueue != 7 || s.Src.Port() != uint16(lport) {
		t.Errorf("sock_diag of restored listener: %+v", s)
	}
	// It accepts.
	cl := tcpSocket(t, unix.AF_INET)
	defer unix.Close(cl)
	if err := unix.Connect(cl, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: lport}); err != nil {
		t.Fatalf("connect to restored listener: %v", err)
	}
	if nfd, _, err := unix.Accept(fd); err != nil {
		t.Fatalf("accept on restored listener: %v", err)
	} else {
		unix.Close(nfd)
	}

	f6, err := r.Open(cs[1].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p := localPort(t, int(f6.Fd())); p != lport6 {
		t.Errorf("restored IPv6 listener on port %d, want %d", p, lport6)
	}
	if v, _ := unix.GetsockoptInt(int(f6.Fd()), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); v != 1 {
		t.Errorf("IPV6_V6ONLY %d, want 1", v)
	}

	fu, err := r.Open(cs[2].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	ufd := int(fu.Fd())
	if p := localPort(t, ufd); p != uport {
		t.Errorf("restored UDP socket on port %d, want %d", p, uport)
	}
	if fl, _ := unix.FcntlInt(uintptr(ufd), unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
		t.Errorf("restored UDP socket lost O_NONBLOCK (flags %#x)", fl)
	}
	got, err := recvAllDgrams(ufd)
	if err == nil {
		err = sameDgrams("restored UDP queue", got, udpQueue)
	}
	if err != nil {
		t.Error(err)
	}
	if _, err := unix.Write(ufd, []byte("dgram")); err != nil {
		t.Fatalf("send on restored connected UDP socket: %v", err)
	}
	buf := make([]byte, 16)
	unix.SetsockoptTimeval(peer, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
	n, from, err := unix.Recvfrom(peer, buf, 0)
	if err != nil || string(buf[:n]) != "dgram" || from.(*unix.SockaddrInet4).Port != uport {
		t.Fatalf("peer got %q from %v (%v)", buf[:max(n, 0)], from, err)
	}
}

// tcpPair returns a connected client and the accepted server side on the
// loopback address of family.
func tcpPair(t *testing.T, family int) (cl, srv int) {
	t.Helper()
	ln := tcpSocket(t, family)
	defer unix.Close(ln)
	var addr func(port int) unix.Sockaddr
	if family == unix.AF_INET6 {
		addr = func(port int) unix.Sockaddr {
			return &unix.SockaddrInet6{Addr: netip.IPv6Loopback().As16(), Port: port}
		}
	} else {
		addr = func(port int) unix.Sockaddr { return &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port} }
	}
	if err := unix.Bind(ln, addr(0)); err != nil {
		t.Fatal(err)
	}
	unix.Listen(ln, 1)
	cl = tcpSocket(t, family)
	if err := unix.Connect(cl, addr(localPort(t, ln))); err != nil {
		t.Fatal(err)
	}
	srv, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	return cl, srv
}

func readN(t *testing.T, fd, n int) []byte {
	t.Helper()
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 10})
	var got []byte
	buf := make([]byte, n)
	for len(got) < n {
		k, err := unix.Read(fd, buf[:n-len(got)])
		if err != nil || k == 0 {
			t.Fatalf("read %d bytes: got %d (%q...), then %d, %v", n, len(got), got[:min(len(got), 40)], k, err)
		}
		got = append(got, buf[:k]...)
	}
	return got
}

func TestInetEstablishedRefusedWithoutOption(t *testing.T) {
	requireRootInet(t)
	cl, srv := tcpPair(t, unix.AF_INET)
	defer unix.Close(cl)
	defer unix.Close(srv)
	d := NewDumper(Options{Log: zerolog.Nop()})
	defer d.Close()
	_, err := d.Dump(os.Getpid(), cl)
	local, peer, _ := sockAddrs(cl)
	if err == nil || !strings.Contains(err.Error(), "--tcp-established") || !strings.Contains(err.Error(), fmt.Sprintf("fd %d of pid %d", cl, os.Getpid())) ||
		!strings.Contains(err.Error(), local.String()) || !strings.Contains(err.Error(), peer.String()) {
		t.Fatalf("dump of an established connection without TCPEstablished: %v", err)
	}
	// Nothing was changed: the connection still works both ways.
	unix.Write(cl, []byte("ok"))
	if got := readN(t, srv, 2); string(got) != "ok" {
		t.Fatalf("after refusal read %q", got)
	}
}

// An established connection with data queued both ways is dumped, its
// socket closed (silently, in repair mode), the peer sends while the
// connection is locked, and the restored socket gets everything, in order,
// once, and can send.
func TestInetEstablishedRoundTrip(t *testing.T) {
	requireRootInet(t)
	t.Run("IPv4", func(t *testing.T) { testEstablishedRoundTrip(t, unix.AF_INET) })
	t.Run("IPv6", func(t *testing.T) { testEstablishedRoundTrip(t, unix.AF_INET6) })
}

func testEstablishedRoundTrip(t *testing.T, family int) {
	cl, srv := tcpPair(t, family)
	defer unix.Close(srv)
	local, peer, _ := sockAddrs(cl)
	conn := netlock.Conn{Local: local, Remote: peer}
	defer netlock.Unlock(conn)

	unix.Write(srv, []byte("unread by the client;"))
	// Large enough to fill more than one segment.
	big := bytes.Repeat([]byte("0123456789"), 20000)
	if _, err := unix.Write(cl, big); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)

	r, cs, _ := inetRoundTrip(t, Options{TCPEstablished: true}, cl)
	e := cs[0].Entry.GetIsk()
	if e.GetState() != tcpEstablished {
		t.Fatalf("entry state %d", e.GetState())
	}
	s := r.set.TCPStreams[e.GetIno()]
	if s == nil || s.Entry.GetInqLen() != uint32(len("unread by the client;")) || s.Entry.GetOutqLen() == 0 {
		t.Fatalf("tcp stream %v", s.Entry)
	}
	t.Logf("dumped: %d bytes in the receive queue, %d in the send queue", s.Entry.GetInqLen(), s.Entry.GetOutqLen())
	r.TCPEstablished = false
	if err := r.CheckOptions(); err == nil || !strings.Contains(err.Error(), "--tcp-established") || !strings.Contains(err.Error(), local.String()) {
		t.Fatalf("restore check without TCPEstablished: %v", err)
	}
	r.TCPEstablished = true
	if ok, err := netlock.Locked(conn); err != nil || !ok {
		t.Fatalf("connection %s not locked after dump (%v)", conn, err)
	}
	// The peer goes on while the dumped side is gone: dropped by the lock,
	// retransmitted later; no reset may come back.
	unix.Write(srv, []byte(" sent while locked"))
	time.Sleep(100 * time.Millisecond)

	f, err := r.Open(cs[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := netlock.Locked(conn); ok {
		t.Errorf("connection %s still locked after restore", conn)
	}
	fd := int(f.Fd())
	// What the server had not received yet was in the dumped send queue.
	if got := readN(t, srv, len(big)); !bytes.Equal(got, big) {
		t.Fatalf("server got %d bytes, not the client's stream", len(got))
	}
	want := "unread by the client; sent while locked"
	if got := readN(t, fd, len(want)); string(got) != want {
		t.Fatalf("restored client read %q, want %q", got, want)
	}
	unix.Write(fd, []byte("after restore"))
	if got := readN(t, srv, len("after restore")); string(got) != "after restore" {
		t.Fatalf("server read %q after restore", got)
	}
	unix.Write(srv, []byte("bye"))
	if got := readN(t, fd, 3); string(got) != "bye" {
		t.Fatalf("restored client read %q", got)
	}
}

// Dumping does not change the target's socket: a non-blocking socket stays
// non-blocking (a tree dumped with -R runs on with it).
func TestInetDumpKeepsNonblock(t *testing.T) {
	requireRootInet(t)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	d := NewDumper(Options{Log: zerolog.Nop()})
	defer d.Close()
	c, err := d.Dump(os.Getpid(), fd)
	if err != nil {
		t.Fatal(err)
	}
	if c.Entry.GetIsk().GetFlags()&unix.O_NONBLOCK == 0 {
		t.Errorf("entry flags %#x lack O_NONBLOCK", c.Entry.GetIsk().GetFlags())
	}
	if fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
		t.Errorf("dump cleared O_NONBLOCK of the socket (flags %#x)", fl)
	}
}

// A dump that fails after an established connection was read (Rollback)
// leaves the connection as it was: out of repair mode, unlocked, working
// with its queued data.
func TestInetEstablishedRollback(t *testing.T) {
	requireRootInet(t)
	cl, srv := tcpPair(t, unix.AF_INET)
	defer unix.Close(cl)
	defer unix.Close(srv)
	local, peer, _ := sockAddrs(cl)
	conn := netlock.Conn{Local: local, Remote: peer}
	defer netlock.Unlock(conn)
	unix.Write(srv, []byte("queued"))
	time.Sleep(20 * time.Millisecond)
	d := NewDumper(Options{TCPEstablished: true, Log: zerolog.Nop()})
	defer d.Close()
	if _, err := d.Dump(os.Getpid(), cl); err != nil {
		t.Fatal(err)
	}
	if v, _ := unix.GetsockoptInt(cl, unix.IPPROTO_TCP, unix.TCP_REPAIR); v != 1 {
		t.Fatalf("TCP_REPAIR %d after dump, want 1", v)
	}
	if err := d.Rollback(); err != nil {
		t.Fatal(err)
	}
	if v, _ := unix.GetsockoptInt(cl, unix.IPPROTO_TCP, unix.TCP_REPAIR); v != 0 {
		t.Errorf("TCP_REPAIR %d after rollback, want 0", v)
	}
	if ok, _ := netlock.Locked(conn); ok {
		t.Errorf("connection still locked after rollback")
	}
	if got := readN(t, cl, 6); string(got) != "queued" {
		t.Fatalf("read %q after rollback", got)
	}
	unix.Write(cl, []byte("on"))
	if got := readN(t, srv, 2); string(got) != "on" {
		t.Fatalf("server read %q after rollback", got)
	}
}

// A TCP listener with a connection not accepted yet is refused (naming
// the count and --tcp-skip-in-flight), the connection still waits to be
// accepted afterwards; with TCPSkipInFlight the listener is dumped.
func TestInetListenerInFlightRefusedWithoutOption(t *testing.T) {
	requireRootInet(t)
	lfd := tcpSocket(t, unix.AF_INET)
	defer unix.Close(lfd)
	if err := unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(lfd, 4); err != nil {
		t.Fatal(err)
	}
	cl := tcpSocket(t, unix.AF_INET)
	defer unix.Close(cl)
	if err := unix.Connect(cl, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: localPort(t, lfd)}); err != nil {
		t.Fatal(err)
	}
	d := NewDumper(Options{Log: zerolog.Nop()})
	_, err := d.Dump(os.Getpid(), lfd)
	d.Rollback()
	d.Close()
	if err == nil || !strings.Contains(err.Error(), "1 connections not accepted yet") || !strings.Contains(err.Error(), "--tcp-skip-in-flight") {
		t.Fatalf("dump of a listener with a connection in flight: %v", err)
	}
	d2 := NewDumper(Options{Log: zerolog.Nop(), TCPSkipInFlight: true})
	c, err := d2.Dump(os.Getpid(), lfd)
	d2.Rollback()
	d2.Close()
	if err != nil || c == nil {
		t.Fatalf("dump with TCPSkipInFlight: %v", err)
	}
	// Nothing was taken from the listener: the connection is accepted now.
	nfd, _, err := unix.Accept(lfd)
	if err != nil {
		t.Fatalf("accept after the dumps: %v", err)
	}
	unix.Close(nfd)
}
