package netlock

import (
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

func TestTableName(t *testing.T) {
	c := Conn{Local: netip.MustParseAddrPort("127.0.0.1:4000"), Remote: netip.MustParseAddrPort("[::1]:80")}
	n := TableName(c)
	if n != "crtools-tcp-127_0_0_1_4000-__1_80" || strings.ContainsAny(n, ":.[]") {
		t.Errorf("table name %q", n)
	}
}

// A locked loopback connection carries nothing, both ways; unlocked, the
// data comes through (retransmitted) and the connection was not reset.
func TestLockDropsBothWays(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("netlock needs root (CAP_NET_ADMIN for nftables); CI runs as root")
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cl, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c := Conn{Local: netip.MustParseAddrPort(cl.LocalAddr().String()), Remote: netip.MustParseAddrPort(cl.RemoteAddr().String())}
	if err := Lock(c); err != nil {
		t.Fatal(err)
	}
	defer Unlock(c)
	if ok, err := Locked(c); err != nil || !ok {
		t.Fatalf("Locked after Lock: %v %v", ok, err)
	}
	buf := make([]byte, 16)
	for _, d := range []struct {
		from, to net.Conn
		msg      string
	}{{cl, srv, "to server"}, {srv, cl, "to client"}} {
		if _, err := d.from.Write([]byte(d.msg)); err != nil {
			t.Fatal(err)
		}
		d.to.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, err := d.to.Read(buf); err == nil {
			t.Fatalf("locked connection delivered %q", buf[:n])
		}
	}
	if err := Unlock(c); err != nil {
		t.Fatal(err)
	}
	if ok, err := Locked(c); err != nil || ok {
		t.Fatalf("Locked after Unlock: %v %v", ok, err)
	}
	if err := Unlock(c); err != nil {
		t.Errorf("second Unlock: %v", err)
	}
	for _, d := range []struct {
		to  net.Conn
		msg string
	}{{srv, "to server"}, {cl, "to client"}} {
		d.to.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := d.to.Read(buf)
		if err != nil || string(buf[:n]) != d.msg {
			t.Fatalf("after unlock read %q (%v), want %q", buf[:max(n, 0)], err, d.msg)
		}
	}
}
