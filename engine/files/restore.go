package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/netlock"
)

// Restorer recreates the objects of a Set in crtools. Open returns, for a
// file id, the *os.File to hand to the puppet; every object is created once
// and shared objects (a pipe's two ends, a socket pair) are created together.
// The returned files belong to the Restorer: Close them all with Close once
// every puppet has taken its copies (that also closes the spare ends, so a
// pipe whose writer was gone at dump time reads EOF after its data).
type Restorer struct {
	// ShellTTY is the terminal given to tasks whose terminal came from
	// outside (-j/--shell-job); nil refuses them.
	ShellTTY *os.File
	// TCPEstablished (--tcp-established) allows restoring established
	// TCP connections; without it CheckOptions and Open refuse them.
	TCPEstablished bool
	// FileLocks (-l/--file-locks) allows restoring file locks; without
	// it CheckOptions refuses images that hold some (crtools(1): -l
	// allows to dump and restore file locks).
	FileLocks bool
	// OwnerByTask: Open leaves the owner (F_SETOWN) of a file unset, for
	// the task that takes the file to set it (FownArgs). The images' pids
	// are those inside the tree's own pid namespace, where the restore
	// engine creates the tree (-n pid): in crtools' namespace the same
	// number names another process, or none.
	OwnerByTask bool

	set       *Set
	log       zerolog.Logger
	byID      map[uint32]*pb.FileEntry
	unixByIno map[uint32]*pb.UnixSkEntry
	opened    map[uint32]*os.File
	pipes     map[uint32]*pipeObj
	ptys      map[uint32]*ptyPair // by dumped index
	fifoKeep  map[uint32]*os.File
	usk       map[uint32]*os.File // unix sockets by inode
	uskBusy   map[uint32]bool
	// ghostFiles: the recreated deleted files by file id (MakeGhosts).
	ghostFiles map[uint32]*os.File
	ghostMu    sync.Mutex // ghostFiles
	remapMu    sync.Mutex // remapNames (lanes restore at the same time)
	// link-remap names opened; removed by Close
	remapNames map[string]bool
	keep       []*os.File
	// tcpConns: established connections restored (and unlocked).
	tcpConns []netlock.Conn
}

// NewRestorer indexes set for restore.
func NewRestorer(set *Set, log zerolog.Logger) *Restorer {
	r := &Restorer{
		set: set, log: log,
		byID: map[uint32]*pb.FileEntry{}, unixByIno: map[uint32]*pb.UnixSkEntry{},
		opened: map[uint32]*os.File{}, pipes: map[uint32]*pipeObj{}, ptys: map[uint32]*ptyPair{}, fifoKeep: map[uint32]*os.File{},
		usk: map[uint32]*os.File{}, uskBusy: map[uint32]bool{},
		remapNames: map[string]bool{},
	}
	for _, e := range set.Files {
		r.byID[e.GetId()] = e
		if u := e.GetUsk(); u != nil {
			r.unixByIno[u.GetIno()] = u
		}
	}
	return r
}

// NeedsTargets reports whether the file needs the owner's other descriptors
// to exist first (epoll): open it after them, with a Resolver.
func NeedsTargets(e *pb.FileEntry) bool { return e.GetType() == pb.FdTypes_EVENTPOLL }

// Handles reports whether Open can create the file (the engine opens the
// other regular files itself).
func (r *Restorer) Handles(id uint32) bool {
	e := r.byID[id]
	if e == nil {
		return false
	}
	if e.GetType() == pb.FdTypes_REG {
		_, g := r.set.Ghosts[id]
		_, l := r.set.LinkRemaps[id]
		return g || l
	}
	switch e.GetType() {
	case pb.FdTypes_PIPE, pb.FdTypes_FIFO, pb.FdTypes_UNIXSK, pb.FdTypes_EVENTFD, pb.FdTypes_EVENTPOLL,
		pb.FdTypes_SIGNALFD, pb.FdTypes_TIMERFD, pb.FdTypes_INOTIFY, pb.FdTypes_TTY, pb.FdTypes_INETSK:
		return true
	}
	return false
}

// Open returns the restored open file for file id, creating it (and what
// must be created with it) the first time. resolve is needed only for
// epoll (NeedsTargets); it maps the owner's fd numbers to restored files.
func (r *Restorer) Open(id uint32, resolve Resolver) (*os.File, error) {
	if f, ok := r.opened[id]; ok {
		return f, nil
	}
	e := r.byID[id]
	if e == nil {
		return nil, fmt.Errorf("open file %d: %w", id, errNoEntry)
	}
	var f *os.File
	var err error
	switch e.GetType() {
	case pb.FdTypes_PIPE:
		f, err = r.openPipe(e)
	case pb.FdTypes_FIFO:
		f, err = r.openFifo(e)
	case pb.FdTypes_UNIXSK:
		f, err = r.openUnix(e)
	case pb.FdTypes_INETSK:
		f, err = r.openInet(e)
	case pb.FdTypes_EVENTFD:
		f, err = openEventfd(e)
	case pb.FdTypes_EVENTPOLL:
		f, err = openEpoll(e, resolve)
	case pb.FdTypes_SIGNALFD:
		f, err = openSignalfd(e)
	case pb.FdTypes_TIMERFD:
		f, err = openTimerfd(e)
	case pb.FdTypes_INOTIFY:
		f, err = openInotify(e, func(format string, args ...any) { r.log.Warn().Msgf(format, args...) })
	case pb.FdTypes_TTY:
		f, err = r.openTTY(e)
	case pb.FdTypes_REG:
		if g, ok := r.set.Ghosts[id]; ok {
			f, err = r.openGhost(e, g)
		} else if l, ok := r.set.LinkRemaps[id]; ok {
			f, err = r.openLinkRemap(e, l)
		} else {
			err = fmt.Errorf("regular file %d is not a deleted file: %w", id, ErrNotHandled)
		}
	default:
		err = fmt.Errorf("file %d of kind %v: %w", id, e.GetType(), ErrUnsupported)
	}
	if err != nil {
		return nil, err
	}
	if !r.OwnerByTask {
		if err := setFown(f, Fown(e)); err != nil {
			return nil, fmt.Errorf("restore owner of file %d: %w", id, err)
		}
	}
	r.opened[id] = f
	return f, nil
}

// Fown returns the owner (F_SETOWN) recorded for a file of any kind, or nil.
func Fown(e *pb.FileEntry) *pb.FownEntry {
	switch {
	case e.GetPipe() != nil:
		return e.GetPipe().GetFown()
	case e.GetUsk() != nil:
		return e.GetUsk().GetFown()
	case e.GetIsk() != nil:
		return e.GetIsk().GetFown()
	case e.GetEfd() != nil:
		return e.GetEfd().GetFown()
	case e.GetEpfd() != nil:
		return e.GetEpfd().GetFown()
	case e.GetSgfd() != nil:
		return e.GetSgfd().GetFown()
	case e.GetTfd() != nil:
		return e.GetTfd().GetFown()
	case e.GetIfy() != nil:
		return e.GetIfy().GetFown()
	case e.GetTty() != nil:
		return e.GetTty().GetFown()
	case e.GetReg() != nil:
		return e.GetReg().GetFown()
	}
	return nil
}

// FownArgs returns how to give a file the owner and signal o records (ok
// false: it had none): fcntl(fd, F_SETOWN, own) for a process (own > 0)
// or a process group (own < 0); for a thread (tid), F_SETOWN_EX with
// OwnerTIDArg(own). Unless sig is 0, then fcntl(fd, F_SETSIG, sig).
func FownArgs(o *pb.FownEntry) (own int, tid bool, sig int, ok bool) {
	if o == nil || o.GetPid() == 0 {
		return 0, false, 0, false
	}
	own = int(o.GetPid())
	switch o.GetPidType() {
	case 0: // PIDTYPE_PID: a thread
		tid = true
	case 2: // PIDTYPE_PGID: F_SETOWN takes a group negated
		own = -own
	}
	return own, tid, int(o.GetSignum()), true
}

// OwnerTIDArg returns the struct f_owner_ex that makes thread tid the
// owner (F_SETOWN_EX).
func OwnerTIDArg(tid int) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint32(b[0:], fOwnerTID)
	binary.LittleEndian.PutUint32(b[4:], uint32(int32(tid)))
	return b
}

// setFown gives the file the owner (the task, thread or process group that
// gets SIGIO) and signal it had (F_SETOWN, F_SETSIG); PIDs are restored as
// dumped, so the owner's number is the same in crtools' pid namespace
// (unless OwnerByTask).
func setFown(f *os.File, o *pb.FownEntry) error {
	own, tid, sig, ok := FownArgs(o)
	if !ok {
		return nil
	}
	if tid {
		if err := setOwnEx(int(f.Fd()), fOwnerEx{Type: fOwnerTID, Pid: int32(own)}); err != nil {
			return err
		}
	} else if _, err := unix.FcntlInt(f.Fd(), unix.F_SETOWN, own); err != nil {
		return os.NewSyscallError("fcntl(F_SETOWN)", err)
	}
	if sig != 0 {
		if _, err := unix.FcntlInt(f.Fd(), unix.F_SETSIG, sig); err != nil {
			return os.NewSyscallError("fcntl(F_SETSIG)", err)
		}
	}
	return nil
}

// Adopt makes the restorer close f with the files it created.
func (r *Restorer) Adopt(f *os.File) { r.keep = append(r.keep, f) }

// HasLocks reports whether task pid held a lock through descriptor fd.
func (r *Restorer) HasLocks(pid, fd int) bool {
	for _, l := range r.set.Locks {
		if int(l.GetPid()) == pid && int(l.GetFd()) == fd {
			return true
		}
	}
	return false
}

// KeepLinkRemaps makes Close leave the link-remap names the restore
// opened: after a failed restore they hold the only copy of those deleted
// files, which the images need for another try.
func (r *Restorer) KeepLinkRemaps() {
	r.remapMu.Lock()
	r.remapNames = map[string]bool{}
	r.remapMu.Unlock()
}

// Close closes every file the restorer created and removes the link-remap
// names (unless KeepLinkRemaps). Call it after the puppets have taken
// their copies (or on failure, after KeepLinkRemaps).
func (r *Restorer) Close() error {
	var errs []error
	seen := map[*os.File]bool{}
	closeF := func(f *os.File) {
		if f != nil && !seen[f] {
			seen[f] = true
			f.Close()
		}
	}
	for _, f := range r.opened {
		closeF(f)
	}
	for _, f := range r.keep {
		closeF(f)
	}
	for n := range r.remapNames {
		if err := os.Remove(n); err != nil && !os.IsNotExist(err) {
			errs = append(errs, fmt.Errorf("remove link-remap name: %w", err))
		}
	}
	r.opened, r.keep, r.remapNames = map[uint32]*os.File{}, nil, map[string]bool{}
	return errors.Join(errs...)
}
