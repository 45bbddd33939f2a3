package files

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
)

// TestSockTimeoutsRoundTrip: the timeouts read from one socket are set on
// a new one (whole multiples of 10 ms: the kernel keeps jiffies); a
// socket without timeouts reads back zero and gives none.
func TestSockTimeoutsRoundTrip(t *testing.T) {
	newSock := func() int {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}
	src := newSock()
	if err := unix.SetsockoptTimeval(src, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &unix.Timeval{Sec: 3, Usec: 500000}); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptTimeval(src, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 7}); err != nil {
		t.Fatal(err)
	}
	o := &pb.SkOptsEntry{}
	if err := getSockTimeouts(src, o); err != nil {
		t.Fatal(err)
	}
	if o.GetSoSndTmoSec() != 3 || o.GetSoSndTmoUsec() != 500000 || o.GetSoRcvTmoSec() != 7 || o.GetSoRcvTmoUsec() != 0 {
		t.Fatalf("read %v", o)
	}
	dst := newSock()
	if err := setSockTimeouts(dst, o); err != nil {
		t.Fatal(err)
	}
	for opt, want := range map[int]unix.Timeval{unix.SO_SNDTIMEO: {Sec: 3, Usec: 500000}, unix.SO_RCVTIMEO: {Sec: 7}} {
		tv, err := unix.GetsockoptTimeval(dst, unix.SOL_SOCKET, opt)
		if err != nil || *tv != want {
			t.Errorf("option %d: %v %v, want %v", opt, tv, err, want)
		}
	}

	none := &pb.SkOptsEntry{}
	if err := getSockTimeouts(newSock(), none); err != nil {
		t.Fatal(err)
	}
	if none.SoSndTmoSec == nil || none.GetSoSndTmoSec() != 0 || none.GetSoRcvTmoUsec() != 0 {
		t.Fatalf("no timeouts read as %v", none)
	}
	if err := setSockTimeouts(newSock(), &pb.SkOptsEntry{}); err != nil {
		t.Fatalf("unset timeouts: %v", err)
	}
}
