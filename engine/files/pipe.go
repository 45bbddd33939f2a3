package files

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
)

// Pipes. The pipe id is the pipe's inode; both ends (and every FIFO opening)
// share it and the unread data is saved once per pipe.

func (d *Dumper) dumpPipe(c *Collected, e *pb.FileEntry, f *os.File, st *unix.Stat_t, flags uint32, fown *pb.FownEntry) error {
	e.Pipe = &pb.PipeEntry{Id: u32p(c.ID), PipeId: u32p(uint32(st.Ino)), Flags: u32p(flags), Fown: fown}
	d.checkOtherEnd(c, f, st, flags)
	return d.pipeData(f, st, flags)
}

// checkOtherEnd warns when the other end of a pipe is held outside the
// tree: restore cannot reconnect it (see the package doc).
func (d *Dumper) checkOtherEnd(c *Collected, f *os.File, st *unix.Stat_t, flags uint32) {
	if d.pipeModes == nil {
		d.pipeModes = map[uint64]int{}
		tree := d.opts.Tree
		if len(tree) == 0 {
			tree = []int{c.Pid}
		}
		for _, p := range tree {
			ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
			for _, de := range ents {
				l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", p, de.Name()))
				if err != nil || !strings.HasPrefix(l, "pipe:[") {
					continue
				}
				ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(l, "pipe:["), "]"), 10, 64)
				if err != nil {
					continue
				}
				fd, _ := strconv.Atoi(de.Name())
				if fi, err := readFdinfo(p, fd); err == nil {
					d.pipeModes[ino] |= pipeMode(fi.Flags)
				}
			}
		}
	}
	write := flags&unix.O_ACCMODE == unix.O_WRONLY
	other := 1 // a reader
	if !write {
		other = 2
	}
	if d.pipeModes[st.Ino]&other != 0 {
		return
	}
	// No end of the other kind in the tree: closed (fine) or outside.
	pfd := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLOUT}}
	if !write {
		pfd[0].Events = unix.POLLIN
	}
	if n, err := unix.Poll(pfd, 0); err == nil && n > 0 && pfd[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
		return
	}
	what := "writer"
	if write {
		what = "reader"
	}
	d.log.Warn().Int("pid", c.Pid).Int("fd", c.Fd).Uint64("pipe", st.Ino).
		Msgf("the %s of this pipe is outside the dumped tree; after restore the task will not be connected to it", what)
}

func pipeMode(flags uint32) int {
	switch flags & unix.O_ACCMODE {
	case unix.O_RDONLY:
		return 1
	case unix.O_WRONLY:
		return 2
	}
	return 3
}

// pipeData saves the unread bytes of the pipe behind f once per pipe.
func (d *Dumper) pipeData(f *os.File, st *unix.Stat_t, flags uint32) error {
	if d.pipeSeen[st.Ino] {
		return nil
	}
	data, size, err := peekPipe(f, flags)
	if err != nil {
		return err
	}
	d.pipeSeen[st.Ino] = true
	if len(data) > 0 || size != defaultPipeSize {
		id := uint32(st.Ino)
		d.set.PipeData[id] = &PipeData{
			Entry: &pb.PipeDataEntry{PipeId: u32p(id), Bytes: u32p(uint32(len(data))), Size: u32p(uint32(size))},
			Data:  data,
		}
	}
	return nil
}

const defaultPipeSize = 16 * 4096

// peekPipe returns the bytes waiting in the pipe without consuming them,
// and the pipe's capacity. tee(2) needs a read end: if f is a write end,
// open a read end of the same pipe through /proc/self/fd (which does not
// block, since the target holds a writer).
func peekPipe(f *os.File, flags uint32) ([]byte, int, error) {
	src := int(f.Fd())
	if flags&unix.O_ACCMODE == unix.O_WRONLY {
		rfd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", src), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, 0, fmt.Errorf("open read end of pipe: %w", err)
		}
		defer unix.Close(rfd)
		src = rfd
	}
	size, err := unix.FcntlInt(uintptr(src), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return nil, 0, os.NewSyscallError("fcntl(F_GETPIPE_SZ)", err)
	}
	queued, err := unix.IoctlGetInt(src, unix.TIOCINQ)
	if err != nil {
		return nil, 0, os.NewSyscallError("ioctl(FIONREAD)", err)
	}
	if queued == 0 {
		return nil, size, nil
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, 0, os.NewSyscallError("pipe2", err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	// Same capacity, so the same number of buffer slots: tee copies slot
	// references, and one call duplicates the whole content.
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, size); err != nil {
		return nil, 0, os.NewSyscallError("fcntl(F_SETPIPE_SZ)", err)
	}
	n, err := unix.Tee(src, p[1], queued, unix.SPLICE_F_NONBLOCK)
	for err == unix.EINTR {
		n, err = unix.Tee(src, p[1], queued, unix.SPLICE_F_NONBLOCK)
	}
	if err != nil {
		return nil, 0, os.NewSyscallError("tee", err)
	}
	if int(n) != queued {
		return nil, 0, fmt.Errorf("tee copied %d of %d queued bytes", n, queued)
	}
	data := make([]byte, queued)
	got := 0
	for got < queued {
		m, err := unix.Read(p[0], data[got:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, 0, os.NewSyscallError("read", err)
		}
		if m == 0 {
			break
		}
		got += m
	}
	if got != queued {
		return nil, 0, fmt.Errorf("read %d of %d teed bytes", got, queued)
	}
	return data, size, nil
}

// pipeObj is a restored pipe: both ends, created once.
type pipeObj struct {
	r, w         *os.File
	rUsed, wUsed bool
}

func (r *Restorer) pipe(pipeID uint32) (*pipeObj, error) {
	if p, ok := r.pipes[pipeID]; ok {
		return p, nil
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("create pipe %d: %w", pipeID, os.NewSyscallError("pipe2", err))
	}
	p := &pipeObj{r: os.NewFile(uintptr(fds[0]), fmt.Sprintf("pipe%d-r", pipeID)), w: os.NewFile(uintptr(fds[1]), fmt.Sprintf("pipe%d-w", pipeID))}
	r.keep = append(r.keep, p.r, p.w)
	r.pipes[pipeID] = p
	if err := fillPipe(p.w, r.set.PipeData[pipeID]); err != nil {
		return nil, fmt.Errorf("refill pipe %d: %w", pipeID, err)
	}
	return p, nil
}

// fillPipe sets the pipe's capacity and writes the saved data back.
func fillPipe(w *os.File, pd *PipeData) error {
	if pd == nil {
		return nil
	}
	if pd.Entry.GetSize() != 0 {
		if _, err := unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, int(pd.Entry.GetSize())); err != nil {
			return os.NewSyscallError("fcntl(F_SETPIPE_SZ)", err)
		}
	}
	if len(pd.Data) != int(pd.Entry.GetBytes()) {
		return fmt.Errorf("pipe data holds %d bytes, entry says %d", len(pd.Data), pd.Entry.GetBytes())
	}
	fd := int(w.Fd())
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return os.NewSyscallError("fcntl(F_GETFL)", err)
	}
	// Never block crtools: the data fitted in a pipe of this size before.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_NONBLOCK); err != nil {
		return os.NewSyscallError("fcntl(F_SETFL)", err)
	}
	defer unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	for off := 0; off < len(pd.Data); {
		n, err := unix.Write(fd, pd.Data[off:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("write %d bytes at %d: %w", len(pd.Data)-off, off, os.NewSyscallError("write", err))
		}
		off += n
	}
	return nil
}

func (r *Restorer) openPipe(e *pb.FileEntry) (*os.File, error) {
	pe := e.GetPipe()
	p, err := r.pipe(pe.GetPipeId())
	if err != nil {
		return nil, err
	}
	end, used := p.r, &p.rUsed
	if pe.GetFlags()&unix.O_ACCMODE == unix.O_WRONLY {
		end, used = p.w, &p.wUsed
	}
	f := end
	if *used {
		// A second open file description of the same end (the target
		// reopened it through /proc): reopen ours the same way.
		var err error
		f, err = reopen(end, int(pe.GetFlags()))
		if err != nil {
			return nil, err
		}
	}
	*used = true
	if err := setFileFlags(f, pe.GetFlags()); err != nil {
		return nil, err
	}
	return f, nil
}

// reopen opens f again through /proc/self/fd with the given flags.
func reopen(f *os.File, flags int) (*os.File, error) {
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), (flags&^unix.O_CREAT&^unix.O_TRUNC)|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen %s: %w", f.Name(), os.NewSyscallError("open", err))
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// setFileFlags sets the status flags F_SETFL can change (O_APPEND,
// O_NONBLOCK, O_ASYNC, O_DIRECT, O_NOATIME).
func setFileFlags(f *os.File, flags uint32) error {
	const settable = unix.O_APPEND | unix.O_NONBLOCK | unix.O_ASYNC | unix.O_DIRECT | unix.O_NOATIME
	if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFL, int(flags&settable)); err != nil {
		return fmt.Errorf("set flags %#o on %s: %w", flags, f.Name(), os.NewSyscallError("fcntl(F_SETFL)", err))
	}
	return nil
}

var errNoEntry = errors.New("no such file id in the images")
