package files

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
)

// The socket-level options every socket kind keeps alike (sk-opts.proto).

// sockTimeouts lists SO_SNDTIMEO and SO_RCVTIMEO with their fields in o.
func sockTimeouts(o *pb.SkOptsEntry) []struct {
	opt       int
	sec, usec **uint64
} {
	return []struct {
		opt       int
		sec, usec **uint64
	}{{unix.SO_SNDTIMEO, &o.SoSndTmoSec, &o.SoSndTmoUsec}, {unix.SO_RCVTIMEO, &o.SoRcvTmoSec, &o.SoRcvTmoUsec}}
}

// getSockTimeouts reads the send and receive timeouts of fd into o.
func getSockTimeouts(fd int, o *pb.SkOptsEntry) error {
	for _, t := range sockTimeouts(o) {
		tv, err := unix.GetsockoptTimeval(fd, unix.SOL_SOCKET, t.opt)
		if err != nil {
			return fmt.Errorf("get socket timeout %d: %w", t.opt, os.NewSyscallError("getsockopt", err))
		}
		*t.sec, *t.usec = u64p(uint64(tv.Sec)), u64p(uint64(tv.Usec))
	}
	return nil
}

// setSockTimeouts sets the send and receive timeouts of o on fd; a zero
// timeout (none) is the default of a new socket and is left alone.
func setSockTimeouts(fd int, o *pb.SkOptsEntry) error {
	for _, t := range sockTimeouts(o) {
		var sec, usec uint64 // unset fields read as 0, as their getters do
		if *t.sec != nil {
			sec = **t.sec
		}
		if *t.usec != nil {
			usec = **t.usec
		}
		if sec == 0 && usec == 0 {
			continue
		}
		tv := unix.Timeval{Sec: int64(sec), Usec: int64(usec)}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, t.opt, &tv); err != nil {
			return fmt.Errorf("set socket timeout %d: %w", t.opt, os.NewSyscallError("setsockopt", err))
		}
	}
	return nil
}
