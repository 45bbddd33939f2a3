package files

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func init() {
	// A datagram pair with a descriptor (a pipe's read end) in flight
	// from 0 to 1 (SCM_RIGHTS).
	helpers["scm-rights"] = func(string) ([]int, func() error) {
		s, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
		p := mustPipe(0)
		if err := unix.Sendmsg(s[0], []byte("fd"), unix.UnixRights(p[0]), nil, 0); err != nil {
			panic(err)
		}
		return []int{s[1]}, func() error { return nil }
	}
	// An epoll watching fd 'a', which was then dup'ed and closed: the
	// watch lives on (the file is open) under a number that names nothing.
	helpers["epoll-closed"] = func(string) ([]int, func() error) {
		e, _ := unix.Eventfd(0, 0)
		ep, _ := unix.EpollCreate1(0)
		unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, e, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(e)})
		keep, _ := unix.Dup(e)
		unix.Close(e)
		return []int{ep, keep, e}, func() error { return nil }
	}
}

// TestRefusedKinds: states that cannot be saved are refused with a message
// that says what, never saved half.
func TestRefusedKinds(t *testing.T) {
	h := startHelper(t, "scm-rights", "")
	d := newTestDumper(t, Options{})
	if _, err := d.Dump(h.Pid, h.Fds[0]); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "1 file descriptors in flight in its queue") {
		t.Errorf("socket with SCM_RIGHTS in flight: %v", err)
	}

	h = startHelper(t, "epoll-closed", "")
	d = newTestDumper(t, Options{})
	if _, err := d.Dump(h.Pid, h.Fds[0]); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), fmt.Sprintf("epoll watches fd %d, which is closed or now another file", h.Fds[2])) {
		t.Errorf("epoll watching a closed descriptor: %v", err)
	}
}
