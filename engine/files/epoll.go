package files

import (
	"fmt"
	"os"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
)

// epoll: each watch is a fdinfo line
//
//	tfd:        5 events: 80000019 data:        10000004d  pos:0 ino:40e sdev:10
//
// where tfd is the watched descriptor's number in the owner's table at the
// time of EPOLL_CTL_ADD. Restore adds the watches again on the files the
// restore engine restored for those numbers (a Resolver).

// Resolver returns the restored file that the owner task of an epoll
// descriptor has (or will have) under fd number fd.
type Resolver func(fd int) (*os.File, error)

func (d *Dumper) dumpEpoll(e *pb.FileEntry, id uint32, pid int, flags uint32, fown *pb.FownEntry, info *fdinfo, desc string) error {
	ep := &pb.EventpollFileEntry{Id: u32p(id), Flags: u32p(flags), Fown: fown}
	for _, l := range info.withPrefix("tfd:") {
		m := fields("tfd:" + l)
		tfd, err := decField(m, "tfd")
		if err != nil {
			return fmt.Errorf("parse epoll watch %q: %w", l, err)
		}
		ev, err := hexField(m, "events")
		if err != nil {
			return fmt.Errorf("parse epoll watch %q: %w", l, err)
		}
		data, err := hexField(m, "data")
		if err != nil {
			return fmt.Errorf("parse epoll watch %q: %w", l, err)
		}
		ino, err := hexField(m, "ino")
		if err != nil {
			return fmt.Errorf("parse epoll watch %q: %w", l, err)
		}
		sdev, err := hexField(m, "sdev")
		if err != nil {
			return fmt.Errorf("parse epoll watch %q: %w", l, err)
		}
		pos, _ := decField(m, "pos")
		// The watch outlives the descriptor if the file is still open
		// elsewhere; then tfd names nothing, or another file, and restore
		// could not find it.
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", pid, tfd), &st); err != nil || st.Ino != ino {
			return fmt.Errorf("epoll watches fd %d, which is closed or now another file: %w", tfd, ErrUnsupported)
		}
		ep.Tfd = append(ep.Tfd, &pb.EventpollTfdEntry{
			Id: u32p(id), Tfd: u32p(uint32(tfd)), Events: u32p(uint32(ev)), Data: u64p(data),
			Dev: u32p(uint32(sdev)), Inode: u64p(ino), Pos: u64p(uint64(pos)),
		})
	}
	sort.Slice(ep.Tfd, func(i, j int) bool { return ep.Tfd[i].GetTfd() < ep.Tfd[j].GetTfd() })
	e.Epfd = ep
	return nil
}

func openEpoll(e *pb.FileEntry, resolve Resolver) (*os.File, error) {
	ep := e.GetEpfd()
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("create epoll %d: %w", ep.GetId(), os.NewSyscallError("epoll_create1", err))
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("epoll%d", ep.GetId()))
	for _, t := range ep.GetTfd() {
		if resolve == nil {
			f.Close()
			return nil, fmt.Errorf("restore epoll %d: watched fd %d: no resolver given", ep.GetId(), t.GetTfd())
		}
		tf, err := resolve(int(t.GetTfd()))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("restore epoll %d: find watched fd %d: %w", ep.GetId(), t.GetTfd(), err)
		}
		ev := unix.EpollEvent{Events: t.GetEvents(), Fd: int32(uint32(t.GetData())), Pad: int32(uint32(t.GetData() >> 32))}
		if err := unix.EpollCtl(fd, unix.EPOLL_CTL_ADD, int(tf.Fd()), &ev); err != nil {
			f.Close()
			return nil, fmt.Errorf("restore epoll %d: watch fd %d: %w", ep.GetId(), t.GetTfd(), os.NewSyscallError("epoll_ctl", err))
		}
	}
	if err := setFileFlags(f, ep.GetFlags()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
