package sockdiag

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// inet_diag (linux/inet_diag.h): struct inet_diag_req_v2 is 8 bytes of
// family, protocol, ext, pad, states followed by struct inet_diag_sockid
// (48 bytes); the answer, struct inet_diag_msg, is 4 bytes of family, state,
// timer, retrans, the sockid, then expires, rqueue, wqueue, uid, inode.
const (
	inetDiagSockIDSize = 48
	inetDiagReqV2Size  = 8 + inetDiagSockIDSize
	inetDiagMsgSize    = 4 + inetDiagSockIDSize + 20
)

// InetSocket is what inet_diag reports about one TCP or UDP socket.
type InetSocket struct {
	Ino    uint32
	Family uint8 // AF_INET, AF_INET6
	Proto  uint8 // IPPROTO_TCP, IPPROTO_UDP
	State  uint8 // linux/tcp_states.h numbering (UDP: 7 unconnected, 1 connected)
	Src    netip.AddrPort
	Dst    netip.AddrPort
	// RQueue/WQueue: for a listening TCP socket the number of pending
	// connections and the backlog; otherwise bytes queued to read and to
	// send.
	RQueue, WQueue uint32
	UID            uint32
}

// InetSockets dumps the sockets of one family (AF_INET or AF_INET6) and
// protocol (IPPROTO_TCP or IPPROTO_UDP) of the caller's network namespace,
// keyed by inode.
func InetSockets(family, proto uint8) (map[uint32]*InetSocket, error) {
	const seq = 2
	out := map[uint32]*InetSocket{}
	err := dump("inet", seq, buildInetDumpRequest(seq, family, proto), func(p []byte) error {
		s, err := parseInetMsg(p)
		if err != nil {
			return err
		}
		s.Proto = proto
		out[s.Ino] = s
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func buildInetDumpRequest(seq uint32, family, proto uint8) []byte {
	b := newDumpRequest(seq, inetDiagReqV2Size)
	le := binary.LittleEndian
	r := b[nlmsgHdrSize:]
	r[0] = family
	r[1] = proto
	le.PutUint32(r[4:], 0xffffffff) // idiag_states: every state
	// The sockid is ignored by a dump; its cookie says "no cookie".
	le.PutUint32(r[8+40:], 0xffffffff)
	le.PutUint32(r[8+44:], 0xffffffff)
	return b
}

// parseInetMsg decodes struct inet_diag_msg. Ports are big-endian on the
// wire, the addresses are in network order, the rest is host order.
func parseInetMsg(p []byte) (*InetSocket, error) {
	if len(p) < inetDiagMsgSize {
		return nil, fmt.Errorf("parse inet_diag_msg: %d bytes, want %d", len(p), inetDiagMsgSize)
	}
	le, be := binary.LittleEndian, binary.BigEndian
	s := &InetSocket{Family: p[0], State: p[1]}
	id := p[4 : 4+inetDiagSockIDSize]
	sport, dport := be.Uint16(id[0:]), be.Uint16(id[2:])
	addr := func(b []byte) netip.Addr {
		if s.Family == unix.AF_INET {
			return netip.AddrFrom4([4]byte(b[:4]))
		}
		return netip.AddrFrom16([16]byte(b[:16]))
	}
	s.Src = netip.AddrPortFrom(addr(id[4:20]), sport)
	s.Dst = netip.AddrPortFrom(addr(id[20:36]), dport)
	rest := p[4+inetDiagSockIDSize:]
	s.RQueue = le.Uint32(rest[4:])
	s.WQueue = le.Uint32(rest[8:])
	s.UID = le.Uint32(rest[12:])
	s.Ino = le.Uint32(rest[16:])
	return s, nil
}
