package files

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
)

var dgrams = [][]byte{[]byte("one"), {}, []byte("three is longer"), pattern(3000)}

func recvAllDgrams(fd int) ([][]byte, error) {
	var out [][]byte
	buf := make([]byte, 1<<16)
	for {
		n, _, _, _, err := unix.Recvmsg(fd, buf, nil, unix.MSG_DONTWAIT)
		if err == unix.EAGAIN {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, append([]byte{}, buf[:n]...))
	}
}

func sameDgrams(what string, got, want [][]byte) error {
	if len(got) != len(want) {
		return fmt.Errorf("%s: %d datagrams, want %d", what, len(got), len(want))
	}
	for i := range got {
		if err := expectBytes(fmt.Sprintf("%s datagram %d", what, i), got[i], want[i]); err != nil {
			return err
		}
	}
	return nil
}

func init() {
	// A datagram pair and a seqpacket pair with queued messages (one of
	// them empty), a stream pair with data both ways and one side shut
	// down for writing, with SO_PASSCRED and a bigger receive buffer.
	helpers["unix-pairs"] = func(string) ([]int, func() error) {
		dg, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
		sp, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
		st, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		for _, m := range dgrams {
			unix.Write(dg[0], m)
			unix.Write(sp[1], m)
		}
		unix.Write(st[0], pattern(100000))
		unix.Write(st[1], []byte("reply"))
		unix.Shutdown(st[1], unix.SHUT_WR)
		unix.SetsockoptInt(st[0], unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
		unix.SetsockoptInt(st[1], unix.SOL_SOCKET, unix.SO_RCVBUF, 300000)
		return []int{dg[0], dg[1], sp[0], sp[1], st[0], st[1]}, func() error {
			got, err := recvAllDgrams(dg[1])
			if err != nil {
				return err
			}
			if err := sameDgrams("dgram", got, dgrams); err != nil {
				return err
			}
			if got, err = recvAllDgrams(sp[0]); err != nil {
				return err
			}
			if err := sameDgrams("seqpacket", got, dgrams); err != nil {
				return err
			}
			b, err := readAllNonblock(st[1])
			if err != nil {
				return err
			}
			if err := expectBytes("stream", b, pattern(100000)); err != nil {
				return err
			}
			b, _ = readAllNonblock(st[0])
			if off, _ := unix.GetsockoptInt(st[0], unix.SOL_SOCKET, unix.SO_PEEK_OFF); off != -1 {
				return fmt.Errorf("SO_PEEK_OFF left at %d", off)
			}
			return expectBytes("stream reply", b, []byte("reply"))
		}
	}
}

func TestUnixPairsQueuesBoundariesShutdownOptions(t *testing.T) {
	h := startHelper(t, "unix-pairs", "")
	d := newTestDumper(t, Options{})
	cs := dumpAll(t, d, h.Pid, h.Fds)
	set := d.Set()
	for i, c := range cs {
		if c.Kind != pb.FdTypes_UNIXSK {
			t.Fatalf("fd %d kind %v", h.Fds[i], c.Kind)
		}
	}
	// Peers point at each other.
	for i := 0; i < 6; i += 2 {
		a, b := cs[i].Entry.GetUsk(), cs[i+1].Entry.GetUsk()
		if a.GetPeer() != b.GetIno() || b.GetPeer() != a.GetIno() {
			t.Errorf("pair %d: peers %d/%d inos %d/%d", i/2, a.GetPeer(), b.GetPeer(), a.GetIno(), b.GetIno())
		}
	}
	pk := func(c *Collected) [][]byte {
		var out [][]byte
		for _, p := range set.Queues[c.ID] {
			if int(p.Entry.GetLength()) != len(p.Data) || p.Entry.GetIdFor() != c.ID {
				t.Errorf("packet entry %v for %d bytes", p.Entry, len(p.Data))
			}
			out = append(out, p.Data)
		}
		return out
	}
	if err := sameDgrams("saved dgram queue", pk(cs[1]), dgrams); err != nil {
		t.Error(err)
	}
	if err := sameDgrams("saved seqpacket queue", pk(cs[2]), dgrams); err != nil {
		t.Error(err)
	}
	if err := sameDgrams("saved stream queue", pk(cs[5]), [][]byte{pattern(100000)}); err != nil {
		t.Error(err)
	}
	if err := sameDgrams("saved stream reply", pk(cs[4]), [][]byte{[]byte("reply")}); err != nil {
		t.Error(err)
	}
	if sd := cs[5].Entry.GetUsk().GetShutdown(); sd != pb.SkShutdown_WRITE {
		t.Errorf("shutdown of the writer-closed end: %v", sd)
	}
	if !cs[4].Entry.GetUsk().GetOpts().GetSoPasscred() {
		t.Error("SO_PASSCRED not saved")
	}
	rcvbuf := cs[5].Entry.GetUsk().GetOpts().GetSoRcvbuf()
	if rcvbuf != 600000 {
		t.Errorf("SO_RCVBUF saved as %d, want 600000", rcvbuf)
	}
	h.check()

	rs := NewRestorer(roundTrip(t, set), d.log)
	defer rs.Close()
	var fs []*os.File
	for _, c := range cs {
		f, err := rs.Open(c.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	fd := func(i int) int { return int(fs[i].Fd()) }
	got, err := recvAllDgrams(fd(1))
	if err == nil {
		err = sameDgrams("restored dgram", got, dgrams)
	}
	if err != nil {
		t.Error(err)
	}
	if got, err = recvAllDgrams(fd(2)); err == nil {
		err = sameDgrams("restored seqpacket", got, dgrams)
	}
	if err != nil {
		t.Error(err)
	}
	b, _ := readAllNonblock(fd(5))
	if err := expectBytes("restored stream", b, pattern(100000)); err != nil {
		t.Error(err)
	}
	b, _ = readAllNonblock(fd(4))
	if string(b) != "reply" {
		t.Errorf("restored reply %q", b)
	}
	// st[1] shut down its sending side: st[0] reads EOF, st[1] cannot send.
	if n, err := unix.Read(fd(4), make([]byte, 8)); n != 0 || err != nil {
		t.Errorf("read after peer shutdown: %d %v, want EOF", n, err)
	}
	if _, err := unix.SendmsgN(fd(5), []byte("x"), nil, nil, unix.MSG_NOSIGNAL); !errors.Is(err, unix.EPIPE) {
		t.Errorf("send on shut-down end: %v, want EPIPE", err)
	}
	if v, _ := unix.GetsockoptInt(fd(4), unix.SOL_SOCKET, unix.SO_PASSCRED); v != 1 {
		t.Error("SO_PASSCRED not restored")
	}
	if v, _ := unix.GetsockoptInt(fd(5), unix.SOL_SOCKET, unix.SO_RCVBUF); uint32(v) != rcvbuf {
		t.Errorf("SO_RCVBUF restored as %d, want %d", v, rcvbuf)
	}
	// The pairs are connected to each other.
	unix.Write(fd(0), []byte("after"))
	if got, _ := recvAllDgrams(fd(1)); len(got) != 1 || string(got[0]) != "after" {
		t.Errorf("restored dgram pair not connected: %q", got)
	}
}

func init() {
	// A listening socket bound to a path with two connections not yet
	// accepted (their clients in the same task), and an accepted one with
	// data queued on the server side.
	helpers["unix-listener"] = func(dir string) ([]int, func() error) {
		path := filepath.Join(dir, "srv.sock")
		l, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		if err := unix.Bind(l, &unix.SockaddrUnix{Name: path}); err != nil {
			panic(err)
		}
		unix.Listen(l, 5)
		c0, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		unix.Connect(c0, &unix.SockaddrUnix{Name: path})
		a, _, _ := unix.Accept(l)
		unix.Write(c0, []byte("to server"))
		c1, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		unix.Connect(c1, &unix.SockaddrUnix{Name: path})
		c2, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		unix.Connect(c2, &unix.SockaddrUnix{Name: path})
		return []int{l, c0, a, c1, c2}, func() error { return nil }
	}
}

func TestUnixListenerWithPendingConnections(t *testing.T) {
	dir := t.TempDir()
	h := startHelper(t, "unix-listener", dir)
	d := newTestDumper(t, Options{})
	cs := dumpAll(t, d, h.Pid, h.Fds)
	l, c0, a, c1, c2 := cs[0], cs[1], cs[2], cs[3], cs[4]
	lu := l.Entry.GetUsk()
	if lu.GetState() != 10 || lu.GetBacklog() != 5 || string(lu.GetName()) != filepath.Join(dir, "srv.sock") {
		t.Errorf("listener entry %v", lu)
	}
	if c1.Entry.GetUsk().GetPeer() != lu.GetIno() || c2.Entry.GetUsk().GetPeer() != lu.GetIno() {
		t.Errorf("pending clients' peers %d %d, want the listener %d", c1.Entry.GetUsk().GetPeer(), c2.Entry.GetUsk().GetPeer(), lu.GetIno())
	}
	if got := d.Set().Icons[lu.GetIno()]; len(got) != 2 || got[0] != c1.Entry.GetUsk().GetIno() {
		t.Errorf("icons %v", got)
	}
	if a.Entry.GetUsk().GetPeer() != c0.Entry.GetUsk().GetIno() {
		t.Errorf("accepted socket peer %d, want %d", a.Entry.GetUsk().GetPeer(), c0.Entry.GetUsk().GetIno())
	}
	h.kill() // the restored listener takes the path over

	rs := NewRestorer(roundTrip(t, d.Set()), d.log)
	defer rs.Close()
	var fs []*os.File
	for _, c := range cs {
		f, err := rs.Open(c.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	b, _ := readAllNonblock(int(fs[2].Fd()))
	if string(b) != "to server" {
		t.Errorf("accepted socket queue %q", b)
	}
	unix.SetNonblock(int(fs[0].Fd()), true)
	for i, cf := range []*os.File{fs[3], fs[4]} {
		nfd, _, err := unix.Accept(int(fs[0].Fd()))
		if err != nil {
			t.Fatalf("accept pending connection %d: %v", i, err)
		}
		msg := fmt.Sprintf("client %d", i)
		unix.Write(int(cf.Fd()), []byte(msg))
		got, _ := readAllNonblock(nfd)
		unix.Close(nfd)
		if string(got) != msg {
			t.Errorf("connection %d carried %q, want %q (order of pending connections)", i, got, msg)
		}
	}
	if _, _, err := unix.Accept(int(fs[0].Fd())); err != unix.EAGAIN {
		t.Errorf("third accept: %v, want EAGAIN", err)
	}
}

func init() {
	// A datagram socket connected to a socket of the test process (outside
	// the dumped tree), like a logger connected to /dev/log.
	helpers["unix-external"] = func(path string) ([]int, func() error) {
		s, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
		if err := unix.Connect(s, &unix.SockaddrUnix{Name: path}); err != nil {
			panic(err)
		}
		return []int{s}, func() error { return nil }
	}
}

func TestUnixExternalPeerNeedsExtUnixSk(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.sock")
	srv, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(srv)
	if err := unix.Bind(srv, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	h := startHelper(t, "unix-external", path)
	d := newTestDumper(t, Options{Tree: []int{h.Pid}})
	_, err = d.Dump(h.Pid, h.Fds[0])
	if err == nil || !strings.Contains(err.Error(), "-x/--ext-unix-sk") || !strings.Contains(err.Error(), fmt.Sprintf("fd %d of pid %d", h.Fds[0], h.Pid)) || !strings.Contains(err.Error(), path) {
		t.Fatalf("dump without -x: %v", err)
	}
	d = newTestDumper(t, Options{Tree: []int{h.Pid}, ExtUnixSk: true})
	c, err := d.Dump(h.Pid, h.Fds[0])
	if err != nil {
		t.Fatal(err)
	}
	h.kill()
	rs := NewRestorer(roundTrip(t, d.Set()), d.log)
	defer rs.Close()
	f, err := rs.Open(c.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(int(f.Fd()), []byte("log line")); err != nil {
		t.Fatal(err)
	}
	got, _ := recvAllDgrams(srv)
	if len(got) != 1 || string(got[0]) != "log line" {
		t.Errorf("external peer received %q", got)
	}
}

func init() {
	// A stream socket whose peer wrote 300000 bytes and closed: the data
	// is still to be read, then EOF.
	helpers["unix-peer-closed"] = func(string) ([]int, func() error) {
		p, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		unix.SetsockoptInt(p[0], unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 1<<20)
		unix.SetNonblock(p[0], true)
		if n, err := unix.Write(p[0], pattern(300000)); n != 300000 {
			panic(fmt.Sprint("write ", n, err))
		}
		unix.Close(p[0])
		return []int{p[1]}, func() error { return nil }
	}
}

func TestUnixPeerClosedKeepsDataThenEOF(t *testing.T) {
	h := startHelper(t, "unix-peer-closed", "")
	d := newTestDumper(t, Options{})
	c := dumpAll(t, d, h.Pid, h.Fds)[0]
	if c.Entry.GetUsk().GetPeer() != 0 {
		t.Errorf("peer %d, want none", c.Entry.GetUsk().GetPeer())
	}
	h.kill()
	rs := NewRestorer(roundTrip(t, d.Set()), d.log)
	defer rs.Close()
	f, err := rs.Open(c.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := readAllNonblock(int(f.Fd()))
	if err := expectBytes("restored queue", got, pattern(300000)); err != nil {
		t.Error(err)
	}
	unix.SetNonblock(int(f.Fd()), false)
	if n, err := unix.Read(int(f.Fd()), make([]byte, 8)); n != 0 || err != nil {
		t.Errorf("after the data: read %d %v, want EOF", n, err)
	}
}
