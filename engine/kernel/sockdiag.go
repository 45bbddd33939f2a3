package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// diagRequest builds a NETLINK_SOCK_DIAG dump request for family; the
// request bodies follow linux/{unix,inet,packet,netlink}_diag.h.
func diagRequest(family int, seq uint32) []byte {
	var body []byte
	switch family {
	case unix.AF_UNIX: // struct unix_diag_req, 24 bytes
		body = make([]byte, 24)
		body[0] = unix.AF_UNIX
		binary.LittleEndian.PutUint32(body[4:], 0xffffffff) // all states
	case unix.AF_INET: // struct inet_diag_req_v2, 56 bytes
		body = make([]byte, 56)
		body[0] = unix.AF_INET
		body[1] = unix.IPPROTO_TCP
		binary.LittleEndian.PutUint32(body[4:], 0xffffffff)
	case unix.AF_PACKET: // struct packet_diag_req, 20 bytes
		body = make([]byte, 20)
		body[0] = unix.AF_PACKET
	case unix.AF_NETLINK: // struct netlink_diag_req, 20 bytes
		body = make([]byte, 20)
		body[0] = unix.AF_NETLINK
		body[1] = 255 // NDIAG_PROTO_ALL
	}
	msg := make([]byte, unix.NLMSG_HDRLEN+len(body))
	binary.LittleEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.LittleEndian.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.LittleEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.LittleEndian.PutUint32(msg[8:], seq)
	copy(msg[unix.NLMSG_HDRLEN:], body)
	return msg
}

// parseDiagReply walks netlink messages; it returns done when NLMSG_DONE
// was seen, the number of sockets reported, or the error the kernel sent.
func parseDiagReply(b []byte, seq uint32) (done bool, n int, err error) {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.LittleEndian.Uint32(b[0:]))
		typ := binary.LittleEndian.Uint16(b[4:])
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return false, n, fmt.Errorf("malformed netlink message of %d bytes", l)
		}
		if s := binary.LittleEndian.Uint32(b[8:]); s != seq {
			return false, n, fmt.Errorf("netlink reply for sequence %d, want %d", s, seq)
		}
		switch typ {
		case unix.NLMSG_DONE:
			return true, n, nil
		case unix.NLMSG_ERROR:
			if l < unix.NLMSG_HDRLEN+4 {
				return false, n, errors.New("short netlink error message")
			}
			code := int32(binary.LittleEndian.Uint32(b[unix.NLMSG_HDRLEN:]))
			if code == 0 {
				return true, n, nil
			}
			return false, n, unix.Errno(-code)
		case unix.SOCK_DIAG_BY_FAMILY:
			n++
		}
		adv := (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if adv > len(b) {
			break
		}
		b = b[adv:]
	}
	return false, n, nil
}

// sockDiagDump sends a dump request for family and reads every reply.
func sockDiagDump(family int) (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, fmt.Errorf("open NETLINK_SOCK_DIAG socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 5}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return 0, fmt.Errorf("set receive timeout: %w", err)
	}
	seq := uint32(os.Getpid())
	if err := unix.Sendto(fd, diagRequest(family, seq), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("send sock_diag request: %w", err)
	}
	buf := make([]byte, 64<<10)
	total := 0
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return total, fmt.Errorf("read sock_diag reply: %w", err)
		}
		done, cnt, err := parseDiagReply(buf[:n], seq)
		total += cnt
		if err != nil {
			return total, err
		}
		if done {
			return total, nil
		}
	}
}

func probeDiag(family int) func(e *env) (string, error) {
	return func(e *env) (string, error) {
		// Make sure there is at least one socket of the family to see.
		typ := unix.SOCK_DGRAM
		proto := 0
		switch family {
		case unix.AF_INET:
			typ = unix.SOCK_STREAM
		case unix.AF_PACKET:
			proto = 0 // no protocol: receives nothing, still listed
		case unix.AF_NETLINK:
			typ = unix.SOCK_RAW
			proto = unix.NETLINK_ROUTE
		}
		sfd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return "", fmt.Errorf("open a socket to look for: %w", err)
		}
		defer unix.Close(sfd)
		if family == unix.AF_INET {
			if err := unix.Bind(sfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
				return "", fmt.Errorf("bind: %w", err)
			}
			if err := unix.Listen(sfd, 1); err != nil {
				return "", fmt.Errorf("listen: %w", err)
			}
		}
		n, err := sockDiagDump(family)
		if err != nil {
			return "", err
		}
		if n == 0 {
			return "", errors.New("the dump lists no socket, not even the probe's own")
		}
		return fmt.Sprintf("%d sockets", n), nil
	}
}
