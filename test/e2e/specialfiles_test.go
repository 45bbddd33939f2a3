package e2e

import (
	"testing"

	"github.com/crtools/crtools/test/harness"
)

// Issue 5 through the real engines: a process holding a pipe with 100000
// unread bytes, an eventfd, socket pairs with queued datagrams and stream
// bytes, and an epoll watching the eventfd and the pipe is dumped, killed
// and restored; its own checks prove that every byte, counter, datagram
// boundary and epoll watch came back (engine/files).
func TestDumpRestoreSpecialFiles(t *testing.T) {
	dumpRestoreVerify(t, harness.BuildC(t, "specialfiles.c"))
}
