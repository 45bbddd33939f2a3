package sockdiag

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// nlmsg builds one netlink message: header and payload, padded to 4 bytes.
func nlmsg(typ uint16, seq uint32, payload []byte) []byte {
	b := make([]byte, nlmsgHdrSize+len(payload), align4(nlmsgHdrSize+len(payload)))
	binary.LittleEndian.PutUint32(b[0:], uint32(len(b)))
	binary.LittleEndian.PutUint16(b[4:], typ)
	binary.LittleEndian.PutUint32(b[8:], seq)
	copy(b[nlmsgHdrSize:], payload)
	return b[:cap(b)]
}

// TestParseDumpReplyWalksMessages: messages of another seq are skipped,
// each answer of ours reaches the handler, NLMSG_DONE ends the dump and an
// NLMSG_ERROR carries its errno.
func TestParseDumpReplyWalksMessages(t *testing.T) {
	var got []string
	h := func(p []byte) error { got = append(got, string(p)); return nil }
	var b []byte
	b = append(b, nlmsg(unix.SOCK_DIAG_BY_FAMILY, 9, []byte("other"))...)
	b = append(b, nlmsg(unix.SOCK_DIAG_BY_FAMILY, 3, []byte("a"))...)
	b = append(b, nlmsg(unix.SOCK_DIAG_BY_FAMILY, 3, []byte("bcd"))...)
	done, err := parseDumpReply("test", b, 3, h)
	if err != nil || done || len(got) != 2 || got[0] != "a" || got[1] != "bcd" {
		t.Fatalf("done %v err %v got %q", done, err, got)
	}
	done, err = parseDumpReply("test", nlmsg(unix.NLMSG_DONE, 3, make([]byte, 4)), 3, h)
	if err != nil || !done {
		t.Fatalf("NLMSG_DONE: done %v err %v", done, err)
	}
	e := make([]byte, 4)
	errno := -int32(unix.EPERM)
	binary.LittleEndian.PutUint32(e, uint32(errno))
	if _, err := parseDumpReply("test", nlmsg(unix.NLMSG_ERROR, 3, e), 3, h); !errors.Is(err, unix.EPERM) {
		t.Fatalf("NLMSG_ERROR: %v", err)
	}
}
