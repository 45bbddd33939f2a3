package sockdiag

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// The netlink side every sock_diag dump shares: one SOCK_DIAG_BY_FAMILY
// request with NLM_F_DUMP, then datagrams of messages up to NLMSG_DONE.

// newDumpRequest returns a SOCK_DIAG_BY_FAMILY dump request of reqSize
// payload bytes (the family's request struct, zeroed) after its nlmsghdr.
func newDumpRequest(seq uint32, reqSize int) []byte {
	b := make([]byte, nlmsgHdrSize+reqSize)
	le := binary.LittleEndian // netlink uses host order; this package is built for little-endian x86-64
	le.PutUint32(b[0:], uint32(len(b)))
	le.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	le.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	le.PutUint32(b[8:], seq)
	return b
}

// dump sends req (built with seq) on a new NETLINK_SOCK_DIAG socket and
// hands the payload of every SOCK_DIAG_BY_FAMILY answer to msg until the
// dump is done. what ("unix", "inet") names the dump in errors.
func dump(what string, seq uint32, req []byte, msg func(payload []byte) error) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return fmt.Errorf("open sock_diag netlink socket: %w", os.NewSyscallError("socket", err))
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("bind sock_diag netlink socket: %w", os.NewSyscallError("bind", err))
	}
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("send %s sock_diag request: %w", what, os.NewSyscallError("sendto", err))
	}
	buf := make([]byte, maxDumpReplyBytes)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("receive %s sock_diag reply: %w", what, os.NewSyscallError("recvfrom", err))
		}
		done, err := parseDumpReply(what, buf[:n], seq, msg)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// parseDumpReply walks the messages of one datagram of a dump reply,
// handing the SOCK_DIAG_BY_FAMILY payloads of our seq to msg. It reports
// done when NLMSG_DONE (or an NLMSG_ERROR ack) arrives.
func parseDumpReply(what string, b []byte, seq uint32, msg func(payload []byte) error) (bool, error) {
	le := binary.LittleEndian
	for len(b) >= nlmsgHdrSize {
		l := int(le.Uint32(b[0:]))
		typ := le.Uint16(b[4:])
		if l < nlmsgHdrSize || l > len(b) {
			return false, fmt.Errorf("parse %s sock_diag reply: bad netlink message length %d", what, l)
		}
		if le.Uint32(b[8:]) == seq {
			payload := b[nlmsgHdrSize:l]
			switch typ {
			case unix.NLMSG_DONE:
				return true, nil
			case unix.NLMSG_ERROR:
				if len(payload) >= 4 {
					if e := int32(le.Uint32(payload)); e != 0 {
						return false, fmt.Errorf("%s sock_diag dump: %w", what, os.NewSyscallError("netlink", unix.Errno(-e)))
					}
				}
				return true, nil
			case unix.SOCK_DIAG_BY_FAMILY:
				if err := msg(payload); err != nil {
					return false, err
				}
			}
		}
		if align4(l) >= len(b) {
			break
		}
		b = b[align4(l):]
	}
	return false, nil
}

func align4(n int) int { return (n + 3) &^ 3 }
