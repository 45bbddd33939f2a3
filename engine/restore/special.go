package restore

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/files"
	"github.com/crtools/crtools/engine/image/pb"
)

// Special files (engine/files): pipes, unix sockets, eventfd, epoll,
// signalfd, timerfd, inotify, FIFOs, deleted files, terminals. crtools
// creates each object once (files.Restorer) and the puppet takes its own
// copy with pidfd_getfd from crtools; the restore engine then places it
// like any other file. Written by the engine/files owner (H8).

// takeSpecial makes the puppet hold the object of file id and returns the
// (temporary) fd number it got.
func (p *puppet) takeSpecial(img *imageSet, id uint32) (uint64, error) {
	f, err := img.special.Open(id, p.resolver(img))
	if err != nil {
		return 0, err
	}
	return p.takeFile(f)
}

// takeFile copies one of crtools' files into the puppet: pidfd_open of
// crtools, pidfd_getfd, then clear the close-on-exec pidfd_getfd sets (the
// caller's dup3 and F_SETFD put the dumped flag back). The calls run
// before it returns: the caller may close f.
func (p *puppet) takeFile(f *os.File) (uint64, error) {
	var pidfd uint64
	if p.crtoolsFd >= 0 {
		pidfd = uint64(p.crtoolsFd) // inherited (ns.go), kept open
	} else {
		var err error
		if pidfd, err = p.openFd("open pidfd of crtools", unix.SYS_PIDFD_OPEN, uint64(os.Getpid()), 0); err != nil {
			return 0, err
		}
	}
	closePidfd := func() error {
		if p.crtoolsFd >= 0 {
			return nil
		}
		return p.queuef("close pidfd of crtools", unix.SYS_CLOSE, pidfd)
	}
	// SyscallConn, not Fd: Fd would put the file in blocking mode,
	// clearing O_NONBLOCK of the open file the task is to get.
	ours := -1
	if rc, err := f.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { ours = int(fd) })
	}
	if ours < 0 {
		_ = closePidfd()
		return 0, fmt.Errorf("take %s from crtools: no descriptor", f.Name())
	}
	fd, err := p.openFd(fmt.Sprintf("take fd %d of crtools", ours), unix.SYS_PIDFD_GETFD, pidfd, uint64(ours), 0)
	if cerr := closePidfd(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	if err := p.queuef(fmt.Sprintf("clear close-on-exec of fd %d", fd), unix.SYS_FCNTL, fd, unix.F_SETFD, 0); err != nil {
		return 0, err
	}
	// f must still be open when pidfd_getfd runs.
	if err := p.runPending(); err != nil {
		return 0, err
	}
	return fd, nil
}

// resolver gives epoll the files the puppet already holds, by number.
func (p *puppet) resolver(img *imageSet) files.Resolver {
	return func(fd int) (*os.File, error) {
		// The calls that put the file there may still be queued.
		if err := p.runPending(); err != nil {
			return nil, err
		}
		pidfd, err := unix.PidfdOpen(p.pid, 0)
		if err != nil {
			return nil, fmt.Errorf("open pidfd of task %d: %w", p.pid, err)
		}
		defer unix.Close(pidfd)
		nfd, err := unix.PidfdGetfd(pidfd, fd, 0)
		if err != nil {
			return nil, fmt.Errorf("copy fd %d of task %d: %w", fd, p.pid, err)
		}
		f := os.NewFile(uintptr(nfd), fmt.Sprintf("task%d-fd%d", p.pid, fd))
		img.special.Adopt(f)
		return f, nil
	}
}

// takeLocks takes the locks the task held through fd again: flock and OFD
// locks by crtools on a copy of the open file, POSIX ones by the task.
func (p *puppet) takeLocks(img *imageSet, fd uint64) error {
	// The images name the task by its pid in the tree's namespace.
	if !img.special.HasLocks(p.vtgid, int(fd)) {
		return nil
	}
	f, err := p.resolver(img)(int(fd))
	if err != nil {
		return err
	}
	posix, err := img.special.TakeLocks(p.vtgid, int(fd), f)
	if err != nil {
		return err
	}
	for _, l := range posix {
		cmd, fl := files.PosixLockArgs(l)
		addr, err := p.put(fl)
		if err != nil {
			return err
		}
		if _, err := p.callf(fmt.Sprintf("take POSIX lock on fd %d", fd), unix.SYS_FCNTL, fd, uint64(cmd), addr); err != nil {
			return err
		}
	}
	return nil
}

// Controlling terminals. A session leader of the tree whose controlling
// terminal was a pseudo-terminal of the tree takes the new pair's slave
// (TIOCSCTTY on a fresh open) right after its setsid, before any task of
// its session is created: a task's controlling terminal is inherited at
// fork, and only a session leader can acquire one. The foreground group
// (TIOCSPGRP) is set once the groups exist, after the leader's files.

// sessionTerminal runs the TIOCSCTTY (and with fg, the TIOCSPGRP) in the
// session leader lead of session sid; it does nothing if the session had no
// terminal of the tree. Preconditions: on the tracer thread.
func (r *restorer) sessionTerminal(lead *puppet, sid int, fg bool) error {
	if r.img.special == nil {
		return nil
	}
	for _, t := range r.img.tasks {
		if t.pid == sid && t.dead() {
			// A zombie leader's session lost its terminal when it
			// exited (and its exit would hang the terminal up).
			return nil
		}
	}
	f, pgrp, err := r.img.special.SessionTerminal(sid)
	if err != nil {
		return fmt.Errorf("controlling terminal of session %d: %w", sid, err)
	}
	if f == nil || (fg && (pgrp == 0 || pgrp == sid)) {
		return nil
	}
	fd, err := lead.takeFile(f)
	if err != nil {
		return err
	}
	skipped := false
	if !fg {
		_, err = lead.callf(fmt.Sprintf("make %s the controlling terminal of session %d", f.Name(), sid), unix.SYS_IOCTL, fd, unix.TIOCSCTTY, 0)
	} else if cur, gerr := r.pgidIn(lead, pgrp); gerr != nil || cur != pgrp { // ns.go
		r.log.Warn().Int("sid", sid).Int("pgrp", pgrp).Msg("foreground process group of the terminal not restored: no such group")
		skipped = true
	} else {
		// Right after TIOCSCTTY the leader's group is the foreground,
		// so the leader may hand it over.
		var b [4]byte
		le.PutUint32(b[:], uint32(pgrp))
		var addr uint64
		if addr, err = lead.put(b[:]); err == nil {
			_, err = lead.callf(fmt.Sprintf("make process group %d the foreground of %s", pgrp, f.Name()), unix.SYS_IOCTL, fd, unix.TIOCSPGRP, addr)
		}
	}
	if _, cerr := lead.callf(fmt.Sprintf("close fd %d", fd), unix.SYS_CLOSE, fd); err == nil {
		err = cerr
	}
	if err == nil && !skipped {
		r.log.Debug().Int("sid", sid).Int("pgrp", pgrp).Bool("foreground", fg).Str("tty", f.Name()).Msg("controlling terminal restored")
	}
	return err
}

// restoreSessionTerminal gives the terminal of pr's session (if pr leads
// one with a terminal of the tree) to the foreground group it had.
// Preconditions: on the tracer thread; before credentials are lowered
// (pidfd_getfd of crtools needs them).
func (r *restorer) restoreSessionTerminal(pr *proc) error {
	if pr.t.dead() || pr.t.sid != pr.t.pid {
		return nil
	}
	return r.sessionTerminal(pr.threads[0], pr.t.sid, true)
}

// specialLast orders epoll after the files it watches.
func specialLast(fe *pb.FileEntry) bool { return fe != nil && files.NeedsTargets(fe) }

// closeSpecial drops crtools' references once every task holds its own
// (so a pipe whose writer was gone reads EOF again).
// memfds are sealed then (memfd.go). The --link-remap names of the images
// are removed when restored (every task holds its files), else kept: after
// a failed restore they are the only copy of those deleted files.
func (img *imageSet) closeSpecial(restored bool) error {
	if img == nil {
		return nil
	}
	err := img.sealMemfds()
	img.closeMemfds()
	if img.special == nil {
		return err
	}
	if !restored {
		img.special.KeepLinkRemaps()
	}
	return errors.Join(err, img.special.Close())
}

// shellTTY is crtools' own terminal (the first of stdin, stdout, stderr
// that is one), which -j gives to tasks whose terminal came from outside.
func shellTTY() *os.File {
	for _, f := range []*os.File{os.Stdin, os.Stdout, os.Stderr} {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			return f
		}
	}
	return nil
}
