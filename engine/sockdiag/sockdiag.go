// Package sockdiag queries the kernel's sock_diag netlink interface
// (NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY) for what a socket's own file
// descriptor cannot tell: for unix sockets the peer's inode, the bound name,
// the inode of the file the name lives in, the connections waiting in a
// listening socket's queue and the queue lengths.
//
// The answer describes the network namespace of the netlink socket, i.e.
// of the calling thread. Callers that dump another namespace must ask from
// inside it.
//
// The wire structures are decoded with encoding/binary from their documented
// layout (linux/unix_diag.h, linux/sock_diag.h); no unsafe is needed.
package sockdiag

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// Attribute types and show flags of linux/unix_diag.h.
const (
	unixDiagName     = 0
	unixDiagVFS      = 1
	unixDiagPeer     = 2
	unixDiagIcons    = 3
	unixDiagRQLen    = 4
	unixDiagMeminfo  = 5
	unixDiagShutdown = 6
	unixDiagUID      = 7

	udiagShowName     = 0x01
	udiagShowVFS      = 0x02
	udiagShowPeer     = 0x04
	udiagShowIcons    = 0x08
	udiagShowRQLen    = 0x10
	udiagShowMeminfo  = 0x20
	udiagShowUID      = 0x40
	unixDiagReqSize   = 24 // struct unix_diag_req
	unixDiagMsgSize   = 16 // struct unix_diag_msg
	nlmsgHdrSize      = 16
	rtattrHdrSize     = 4
	maxDumpReplyBytes = 1 << 16
)

// UnixSocket is what sock_diag reports about one unix socket.
type UnixSocket struct {
	Ino   uint32
	Type  uint8 // SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
	State uint8 // TCP_ESTABLISHED, TCP_LISTEN, TCP_CLOSE (linux/tcp_states.h numbering)
	// Name is the bound address as the kernel keeps it: a path, or an
	// abstract name starting with a NUL byte. Empty when unbound.
	Name []byte
	// HasVFS is set for a socket bound to a path: VFSIno/VFSDev identify
	// the socket file (dev in the kernel's internal encoding).
	HasVFS bool
	VFSIno uint32
	VFSDev uint32
	// Peer is the inode of the connected peer; 0 if none, if the peer has
	// been closed, or if the peer is a connection not accepted yet (then
	// the socket's inode is in the listener's Icons).
	Peer uint32
	// Icons lists, for a listening socket, the inodes of the client
	// sockets whose connections wait to be accepted, oldest first.
	Icons []uint32
	// RQueue/WQueue: for a listening socket the number of pending
	// connections and the backlog; otherwise bytes queued for reading
	// (for datagram sockets: the length of the first datagram) and bytes
	// sent but not yet consumed.
	RQueue, WQueue uint32
	// Shutdown holds the RCV_SHUTDOWN (1) / SEND_SHUTDOWN (2) bits.
	Shutdown uint8
	UID      uint32
	HasUID   bool
}

// Listening reports whether the socket is in the listen state.
func (s *UnixSocket) Listening() bool { return s.State == TCPListen }

// Socket states as sock_diag reports them (include/net/tcp_states.h).
const (
	TCPEstablished = 1
	TCPClose       = 7
	TCPListen      = 10
)

// UnixSockets dumps every unix socket of the caller's network namespace,
// keyed by inode.
func UnixSockets() (map[uint32]*UnixSocket, error) {
	const seq = 1
	out := make(map[uint32]*UnixSocket)
	if err := dump("unix", seq, buildUnixDumpRequest(seq), unixMsgInto(out)); err != nil {
		return nil, err
	}
	return out, nil
}

// unixMsgInto returns a dump handler that decodes each unix_diag_msg
// into out.
func unixMsgInto(out map[uint32]*UnixSocket) func([]byte) error {
	return func(p []byte) error {
		s, err := parseUnixMsg(p)
		if err != nil {
			return err
		}
		out[s.Ino] = s
		return nil
	}
}

func buildUnixDumpRequest(seq uint32) []byte {
	b := newDumpRequest(seq, unixDiagReqSize)
	le := binary.LittleEndian
	r := b[nlmsgHdrSize:]
	r[0] = unix.AF_UNIX // sdiag_family
	r[1] = 0            // sdiag_protocol
	// r[2:4] pad
	le.PutUint32(r[4:], 0xffffffff) // udiag_states: every state
	le.PutUint32(r[8:], 0)          // udiag_ino (ignored by a dump)
	le.PutUint32(r[12:], udiagShowName|udiagShowVFS|udiagShowPeer|udiagShowIcons|udiagShowRQLen|udiagShowUID)
	le.PutUint32(r[16:], 0xffffffff) // udiag_cookie: INET_DIAG_NOCOOKIE
	le.PutUint32(r[20:], 0xffffffff)
	return b
}

func parseUnixMsg(p []byte) (*UnixSocket, error) {
	le := binary.LittleEndian
	if len(p) < unixDiagMsgSize {
		return nil, fmt.Errorf("parse unix_diag_msg: %d bytes, want %d", len(p), unixDiagMsgSize)
	}
	s := &UnixSocket{Type: p[1], State: p[2], Ino: le.Uint32(p[4:])}
	a := p[unixDiagMsgSize:]
	for len(a) >= rtattrHdrSize {
		l := int(le.Uint16(a[0:]))
		typ := le.Uint16(a[2:]) & 0x3fff // strip NLA_F_NESTED / NLA_F_NET_BYTEORDER
		if l < rtattrHdrSize || l > len(a) {
			return nil, fmt.Errorf("parse unix_diag attributes of socket %d: bad length %d", s.Ino, l)
		}
		v := a[rtattrHdrSize:l]
		switch typ {
		case unixDiagName:
			s.Name = append([]byte(nil), v...)
			// The kernel keeps a path name with its terminating NUL.
			if len(s.Name) > 1 && s.Name[0] != 0 && s.Name[len(s.Name)-1] == 0 {
				s.Name = s.Name[:len(s.Name)-1]
			}
		case unixDiagVFS:
			if len(v) >= 8 {
				s.HasVFS = true
				s.VFSIno = le.Uint32(v[0:])
				s.VFSDev = le.Uint32(v[4:])
			}
		case unixDiagPeer:
			if len(v) >= 4 {
				s.Peer = le.Uint32(v)
			}
		case unixDiagIcons:
			for i := 0; i+4 <= len(v); i += 4 {
				s.Icons = append(s.Icons, le.Uint32(v[i:]))
			}
		case unixDiagRQLen:
			if len(v) >= 8 {
				s.RQueue = le.Uint32(v[0:])
				s.WQueue = le.Uint32(v[4:])
			}
		case unixDiagShutdown:
			if len(v) >= 1 {
				s.Shutdown = v[0]
			}
		case unixDiagUID:
			if len(v) >= 4 {
				s.UID = le.Uint32(v)
				s.HasUID = true
			}
		}
		if align4(l) >= len(a) {
			break
		}
		a = a[align4(l):]
	}
	return s, nil
}
