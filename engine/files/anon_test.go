package files

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
)

const (
	sigmaskUSR1USR2 = 1<<(unix.SIGUSR1-1) | 1<<(unix.SIGUSR2-1)
	epollDataE      = 0xdeadbeef00000007
)

func init() {
	// eventfd (semaphore, nonblocking, count 42), signalfd, an armed
	// periodic timerfd, a fired one-shot timerfd with one unread
	// expiration, an epoll watching the eventfd (edge-triggered) and an
	// empty pipe.
	helpers["anon"] = func(string) ([]int, func() error) {
		e, _ := unix.Eventfd(42, unix.EFD_SEMAPHORE|unix.EFD_NONBLOCK)
		var set unix.Sigset_t
		set.Val[0] = sigmaskUSR1USR2
		sfd, err := unix.Signalfd(-1, &set, 0)
		if err != nil {
			panic(err)
		}
		t1, _ := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK)
		unix.TimerfdSettime(t1, 0, &unix.ItimerSpec{Value: unix.Timespec{Sec: 100}, Interval: unix.Timespec{Sec: 7, Nsec: 5}}, nil)
		t2, _ := unix.TimerfdCreate(unix.CLOCK_REALTIME, 0)
		unix.TimerfdSettime(t2, 0, &unix.ItimerSpec{Value: unix.Timespec{Nsec: 1000}}, nil)
		time.Sleep(10 * time.Millisecond)
		p := mustPipe(0)
		ep, _ := unix.EpollCreate1(0)
		data := uint64(epollDataE)
		unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, e, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(uint32(data)), Pad: int32(uint32(data >> 32))})
		unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, p[0], &unix.EpollEvent{Events: unix.EPOLLIN, Fd: 5})
		return []int{e, sfd, t1, t2, p[0], p[1], ep}, func() error {
			var b [8]byte
			if n, err := unix.Read(e, b[:]); n != 8 || err != nil || binary.LittleEndian.Uint64(b[:]) != 1 {
				return fmt.Errorf("eventfd read %d %v %x", n, err, b)
			}
			if n, err := unix.Read(t2, b[:]); n != 8 || err != nil || binary.LittleEndian.Uint64(b[:]) != 1 {
				return fmt.Errorf("timerfd read %d %v %x", n, err, b)
			}
			return nil
		}
	}
}

func fdinfoOf(t *testing.T, f *os.File) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestEventfdSignalfdTimerfdEpoll(t *testing.T) {
	h := startHelper(t, "anon", "")
	d := newTestDumper(t, Options{})
	cs := dumpAll(t, d, h.Pid, h.Fds)
	e, sfd, t1, t2, pr, pw, ep := cs[0], cs[1], cs[2], cs[3], cs[4], cs[5], cs[6]

	efd := e.Entry.GetEfd()
	if e.Kind != pb.FdTypes_EVENTFD || efd.GetCounter() != 42 || efd.GetFlags()&unix.O_NONBLOCK == 0 || efd.GetFlags()&efdSemaphoreFlag == 0 {
		t.Errorf("eventfd entry %v", efd)
	}
	if sfd.Kind != pb.FdTypes_SIGNALFD || sfd.Entry.GetSgfd().GetSigmask() != sigmaskUSR1USR2 {
		t.Errorf("signalfd entry %v", sfd.Entry.GetSgfd())
	}
	tf := t1.Entry.GetTfd()
	if t1.Kind != pb.FdTypes_TIMERFD || tf.GetClockid() != unix.CLOCK_MONOTONIC || tf.GetIsec() != 7 || tf.GetInsec() != 5 ||
		tf.GetVsec() < 95 || tf.GetVsec() > 100 || tf.GetTicks() != 0 || tf.GetFlags()&unix.O_NONBLOCK == 0 {
		t.Errorf("periodic timerfd entry %v", tf)
	}
	tf2 := t2.Entry.GetTfd()
	if tf2.GetClockid() != unix.CLOCK_REALTIME || tf2.GetTicks() != 1 || tf2.GetVsec() != 0 || tf2.GetVnsec() != 0 {
		t.Errorf("fired timerfd entry %v", tf2)
	}
	epe := ep.Entry.GetEpfd()
	if ep.Kind != pb.FdTypes_EVENTPOLL || len(epe.GetTfd()) != 2 {
		t.Fatalf("epoll entry %v", epe)
	}
	w0, w1 := epe.GetTfd()[0], epe.GetTfd()[1]
	if int(w0.GetTfd()) != h.Fds[0] || w0.GetEvents() != unix.EPOLLIN|unix.EPOLLET|unix.EPOLLERR|unix.EPOLLHUP || w0.GetData() != epollDataE {
		t.Errorf("eventfd watch %v", w0)
	}
	if int(w1.GetTfd()) != h.Fds[4] || w1.GetEvents() != unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP || w1.GetData() != 5 {
		t.Errorf("pipe watch %v", w1)
	}
	h.check() // counters and expirations were not consumed

	rs := NewRestorer(roundTrip(t, d.Set()), d.log)
	defer rs.Close()
	byFd := map[int]uint32{}
	for i, c := range cs {
		byFd[h.Fds[i]] = c.ID
	}
	resolve := func(fd int) (*os.File, error) {
		id, ok := byFd[fd]
		if !ok {
			return nil, fmt.Errorf("no fd %d", fd)
		}
		return rs.Open(id, nil)
	}
	open := func(c *Collected) *os.File {
		t.Helper()
		var res Resolver
		if NeedsTargets(c.Entry) {
			res = resolve
		}
		f, err := rs.Open(c.ID, res)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	epf := open(ep) // before the others: the resolver creates them on demand
	ef, sf, t1f, t2f := open(e), open(sfd), open(t1), open(t2)
	open(pr)
	open(pw)

	// eventfd: semaphore mode reads 1 at a time, 42 times.
	var b [8]byte
	for i := 0; i < 42; i++ {
		if n, err := unix.Read(int(ef.Fd()), b[:]); n != 8 || err != nil || binary.LittleEndian.Uint64(b[:]) != 1 {
			t.Fatalf("restored eventfd read %d: %d %v %x", i, n, err, b)
		}
	}
	if _, err := unix.Read(int(ef.Fd()), b[:]); err != unix.EAGAIN {
		t.Errorf("restored eventfd after 42 reads: %v, want EAGAIN (nonblocking, empty)", err)
	}
	if fi := fdinfoOf(t, sf); !strings.Contains(fi, fmt.Sprintf("sigmask:\t%016x", sigmaskUSR1USR2)) {
		t.Errorf("restored signalfd fdinfo:\n%s", fi)
	}
	var cur unix.ItimerSpec
	if err := unix.TimerfdGettime(int(t1f.Fd()), &cur); err != nil {
		t.Fatal(err)
	}
	if cur.Interval.Sec != 7 || cur.Interval.Nsec != 5 || cur.Value.Sec < 94 || cur.Value.Sec > 100 {
		t.Errorf("restored periodic timer %+v", cur)
	}
	if n, err := unix.Read(int(t2f.Fd()), b[:]); n != 8 || err != nil || binary.LittleEndian.Uint64(b[:]) != 1 {
		t.Errorf("restored fired timer: %d %v ticks %d, want 1", n, err, binary.LittleEndian.Uint64(b[:]))
	}

	// epoll: the eventfd was read empty above; make it readable again and
	// expect exactly that watch, with its data, and not the empty pipe.
	unix.Write(int(ef.Fd()), []byte{3, 0, 0, 0, 0, 0, 0, 0})
	evs := make([]unix.EpollEvent, 4)
	n, err := unix.EpollWait(int(epf.Fd()), evs, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || uint64(uint32(evs[0].Fd))|uint64(uint32(evs[0].Pad))<<32 != epollDataE || evs[0].Events&unix.EPOLLIN == 0 {
		t.Errorf("epoll_wait: %d events %+v", n, evs[:n])
	}
	// Edge-triggered: no second report without a new event.
	if n, _ := unix.EpollWait(int(epf.Fd()), evs, 0); n != 0 {
		t.Errorf("edge-triggered watch reported again: %+v", evs[:n])
	}
}

func init() {
	// inotify with watches on two directories; a watch in between was
	// removed, so the wds are 1 and 3.
	helpers["inotify"] = func(dir string) ([]int, func() error) {
		in, _ := unix.InotifyInit1(unix.IN_NONBLOCK)
		a, b, c := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
		w1, _ := unix.InotifyAddWatch(in, a, unix.IN_CREATE)
		w2, _ := unix.InotifyAddWatch(in, b, unix.IN_CREATE)
		unix.InotifyRmWatch(in, uint32(w2))
		w3, _ := unix.InotifyAddWatch(in, c, unix.IN_DELETE|unix.IN_ONESHOT)
		if w1 != 1 || w3 != 3 {
			panic(fmt.Sprint("wds ", w1, w3))
		}
		buf := make([]byte, 4096)
		unix.Read(in, buf) // drop the IN_IGNORED of the removed watch
		return []int{in}, func() error { return nil }
	}
}

func TestInotifyWatchesKeepTheirNumbers(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"a", "b", "c"} {
		os.Mkdir(filepath.Join(dir, n), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "c", "victim"), nil, 0o644)
	h := startHelper(t, "inotify", dir)
	d := newTestDumper(t, Options{})
	c := dumpAll(t, d, h.Pid, h.Fds)[0]
	ie := c.Entry.GetIfy()
	if c.Kind != pb.FdTypes_INOTIFY || len(ie.GetWd()) != 2 {
		t.Fatalf("inotify entry %v", ie)
	}
	wa, wc := ie.GetWd()[0], ie.GetWd()[1]
	if wa.GetWd() != 1 || wa.GetMask()&unix.IN_ALL_EVENTS != unix.IN_CREATE || wa.GetFHandle().GetPath() != filepath.Join(dir, "a") {
		t.Errorf("watch a: %v", wa)
	}
	if wc.GetWd() != 3 || wc.GetMask() != unix.IN_DELETE|unix.IN_ONESHOT || wc.GetFHandle().GetPath() != filepath.Join(dir, "c") {
		t.Errorf("watch c: %v", wc)
	}
	h.kill()

	// Restore once by path and once by file handle only.
	for _, byHandle := range []bool{false, true} {
		if byHandle {
			for _, w := range ie.GetWd() {
				w.FHandle.Path = nil
			}
		}
		rs := NewRestorer(roundTrip(t, d.Set()), d.log)
		f, err := rs.Open(c.ID, nil)
		if err != nil {
			t.Fatalf("restore (by handle %v): %v", byHandle, err)
		}
		os.WriteFile(filepath.Join(dir, "a", fmt.Sprint("new", byHandle)), nil, 0o644)
		os.Remove(filepath.Join(dir, "c", "victim"))
		os.WriteFile(filepath.Join(dir, "c", "victim"), nil, 0o644)
		time.Sleep(10 * time.Millisecond)
		buf := make([]byte, 4096)
		n, err := unix.Read(int(f.Fd()), buf)
		if err != nil {
			t.Fatalf("read inotify events (by handle %v): %v", byHandle, err)
		}
		var got []string
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			wd := int32(binary.LittleEndian.Uint32(buf[off:]))
			mask := binary.LittleEndian.Uint32(buf[off+4:])
			l := int(binary.LittleEndian.Uint32(buf[off+12:]))
			name := strings.TrimRight(string(buf[off+16:off+16+l]), "\x00")
			got = append(got, fmt.Sprintf("%d:%x:%s", wd, mask, name))
			off += unix.SizeofInotifyEvent + l
		}
		want := fmt.Sprintf("[1:%x:new%v 3:%x:victim 3:%x:]", unix.IN_CREATE, byHandle, unix.IN_DELETE, unix.IN_IGNORED)
		if fmt.Sprint(got) != want {
			t.Errorf("events (by handle %v): %v, want %s", byHandle, got, want)
		}
		rs.Close()
	}
}

func init() {
	// An eventfd owned by the helper for SIGIO with signal SIGRTMIN+1.
	helpers["fown"] = func(string) ([]int, func() error) {
		e, _ := unix.Eventfd(0, 0)
		unix.FcntlInt(uintptr(e), unix.F_SETOWN, os.Getpid())
		unix.FcntlInt(uintptr(e), unix.F_SETSIG, 35)
		return []int{e}, func() error { return nil }
	}
}

func TestFileOwnerAndSignal(t *testing.T) {
	h := startHelper(t, "fown", "")
	d := newTestDumper(t, Options{})
	c := dumpAll(t, d, h.Pid, h.Fds)[0]
	fo := c.Entry.GetEfd().GetFown()
	if int(fo.GetPid()) != h.Pid || fo.GetPidType() != 1 || fo.GetSignum() != 35 {
		t.Fatalf("owner %v, want pid %d signal 35", fo, h.Pid)
	}
	// Restore while the owner exists (restore runs with the puppets alive).
	rs := NewRestorer(roundTrip(t, d.Set()), d.log)
	defer rs.Close()
	f, err := rs.Open(c.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	own, _ := unix.FcntlInt(f.Fd(), unix.F_GETOWN, 0)
	sig, _ := unix.FcntlInt(f.Fd(), unix.F_GETSIG, 0)
	if own != h.Pid || sig != 35 {
		t.Errorf("restored owner %d signal %d", own, sig)
	}
}
