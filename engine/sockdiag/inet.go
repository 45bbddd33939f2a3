package sockdiag

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"

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
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("open sock_diag netlink socket: %w", os.NewSyscallError("socket", err))
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("bind sock_diag netlink socket: %w", os.NewSyscallError("bind", err))
	}
	const seq = 2
	if err := unix.Sendto(fd, buildInetDumpRequest(seq, family, proto), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("send inet sock_diag request: %w", os.NewSyscallError("sendto", err))
	}
	out := map[uint32]*InetSocket{}
	buf := make([]byte, maxDumpReplyBytes)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("receive inet sock_diag reply: %w", os.NewSyscallError("recvfrom", err))
		}
		done, err := parseInetReply(buf[:n], seq, proto, out)
		if err != nil {
			return nil, err
		}
		if done {
			return out, nil
		}
	}
}

func buildInetDumpRequest(seq uint32, family, proto uint8) []byte {
	b := make([]byte, nlmsgHdrSize+inetDiagReqV2Size)
	le := binary.LittleEndian
	le.PutUint32(b[0:], uint32(len(b)))
	le.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	le.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	le.PutUint32(b[8:], seq)
	r := b[nlmsgHdrSize:]
	r[0] = family
	r[1] = proto
	le.PutUint32(r[4:], 0xffffffff) // idiag_states: every state
	// The sockid is ignored by a dump; its cookie says "no cookie".
	le.PutUint32(r[8+40:], 0xffffffff)
	le.PutUint32(r[8+44:], 0xffffffff)
	return b
}

func parseInetReply(b []byte, seq uint32, proto uint8, out map[uint32]*InetSocket) (bool, error) {
	le := binary.LittleEndian
	for len(b) >= nlmsgHdrSize {
		l := int(le.Uint32(b[0:]))
		typ := le.Uint16(b[4:])
		if l < nlmsgHdrSize || l > len(b) {
			return false, fmt.Errorf("parse inet sock_diag reply: bad netlink message length %d", l)
		}
		if le.Uint32(b[8:]) == seq {
			payload := b[nlmsgHdrSize:l]
			switch typ {
			case unix.NLMSG_DONE:
				return true, nil
			case unix.NLMSG_ERROR:
				if len(payload) >= 4 {
					if e := int32(le.Uint32(payload)); e != 0 {
						return false, fmt.Errorf("inet sock_diag dump: %w", os.NewSyscallError("netlink", unix.Errno(-e)))
					}
				}
				return true, nil
			case unix.SOCK_DIAG_BY_FAMILY:
				s, err := parseInetMsg(payload)
				if err != nil {
					return false, err
				}
				s.Proto = proto
				out[s.Ino] = s
			}
		}
		if align4(l) >= len(b) {
			break
		}
		b = b[align4(l):]
	}
	return false, nil
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
