package sockdiag

import (
	"encoding/binary"
	"net/netip"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// Sizes of linux/inet_diag.h: struct inet_diag_sockid 48, struct
// inet_diag_req_v2 56, struct inet_diag_msg 72.
func TestInetDiagSizes(t *testing.T) {
	if inetDiagSockIDSize != 48 || inetDiagReqV2Size != 56 || inetDiagMsgSize != 72 {
		t.Fatalf("sizes %d %d %d", inetDiagSockIDSize, inetDiagReqV2Size, inetDiagMsgSize)
	}
	b := buildInetDumpRequest(7, unix.AF_INET6, unix.IPPROTO_UDP)
	if len(b) != nlmsgHdrSize+56 || binary.LittleEndian.Uint32(b) != uint32(len(b)) || b[16] != unix.AF_INET6 || b[17] != unix.IPPROTO_UDP {
		t.Fatalf("request % x", b)
	}
}

func TestParseInetMsg(t *testing.T) {
	p := make([]byte, inetDiagMsgSize)
	p[0], p[1] = unix.AF_INET, 10
	binary.BigEndian.PutUint16(p[4:], 8080)
	binary.BigEndian.PutUint16(p[6:], 0)
	copy(p[8:], []byte{127, 0, 0, 1})
	le := binary.LittleEndian
	le.PutUint32(p[52+4:], 3)  // rqueue
	le.PutUint32(p[52+8:], 16) // wqueue
	le.PutUint32(p[52+16:], 4242)
	s, err := parseInetMsg(p)
	if err != nil {
		t.Fatal(err)
	}
	if s.Ino != 4242 || s.State != 10 || s.Src != netip.MustParseAddrPort("127.0.0.1:8080") || s.RQueue != 3 || s.WQueue != 16 {
		t.Fatalf("parsed %+v", s)
	}
	if _, err := parseInetMsg(p[:40]); err == nil {
		t.Error("short message parsed")
	}
}

// A real listener and UDP socket are found by inode with their state,
// address and backlog.
func TestInetSocketsFindsOwnSockets(t *testing.T) {
	ln, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ln)
	if err := unix.Bind(ln, &unix.SockaddrInet6{Addr: netip.IPv6Loopback().As16()}); err != nil {
		t.Fatal(err)
	}
	unix.Listen(ln, 9)
	udp, _ := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	defer unix.Close(udp)
	unix.Bind(udp, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	ino := func(fd int) uint32 {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		return uint32(st.Ino)
	}
	name := func(fd int) int {
		sa, _ := unix.Getsockname(fd)
		switch a := sa.(type) {
		case *unix.SockaddrInet4:
			return a.Port
		case *unix.SockaddrInet6:
			return a.Port
		}
		return -1
	}
	tcp, err := InetSockets(unix.AF_INET6, unix.IPPROTO_TCP)
	if err != nil {
		t.Fatal(err)
	}
	s := tcp[ino(ln)]
	if s == nil || s.State != TCPListen || s.WQueue != 9 || s.Src.Addr() != netip.IPv6Loopback() || int(s.Src.Port()) != name(ln) {
		t.Fatalf("listener: %+v (pid %d)", s, os.Getpid())
	}
	us, err := InetSockets(unix.AF_INET, unix.IPPROTO_UDP)
	if err != nil {
		t.Fatal(err)
	}
	if u := us[ino(udp)]; u == nil || u.State != TCPClose || int(u.Src.Port()) != name(udp) || u.Proto != unix.IPPROTO_UDP {
		t.Fatalf("udp: %+v", u)
	}
}
