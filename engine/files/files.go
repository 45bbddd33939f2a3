// Package files dumps and restores the kinds of open files that are more than
// a path and an offset: pipes, FIFOs, unix and inet (TCP, UDP) sockets,
// eventfd, epoll, signalfd, timerfd, inotify, deleted ("ghost") files, file
// locks and terminals.
//
// # Model
//
// Dump works from outside, without a parasite. For every descriptor of a
// (frozen or running) task the engine calls Dumper.Dump(pid, fd). The dumper
// takes its own copy of the open file with pidfd_getfd and reads the state
// from the copy and from /proc/PID/fdinfo: tee(2) duplicates a pipe's buffer
// without consuming it, recv(MSG_PEEK) with SO_PEEK_OFF walks a socket's
// receive queue packet by packet, sock_diag (engine/sockdiag) gives a unix
// socket's peer, name and pending connections, and fdinfo lines give the
// eventfd counter, the epoll watch list, the signalfd mask, the timerfd
// settings, the inotify watches and the locks. The target is never changed
// (SO_PEEK_OFF, which belongs to the socket, is put back as it was).
//
// Every object is keyed by (kind, inode) and every open file description by
// a file id: two descriptors (in one task or in several) that kcmp(2) says
// share one open file description get the same id and the second comes back
// with Shared set and no entry, so the images hold each object once. The
// results are CRIU image messages (engine/image/pb) plus raw blobs (pipe
// data, socket queues, ghost file contents) collected in a Set.
//
// Restore is the mirror: a Restorer is built from the Set and creates each
// object once, in crtools itself, the first time a file id is asked for with
// Open; the restore engine then hands the *os.File to the puppet (the puppet
// takes it with pidfd_getfd and dup3s it to the right number). Pipes are
// created with pipe2 and refilled, socket pairs with socketpair, listening
// sockets are bound and listened and their pending connections connected
// again, queued data is sent again from the peer with its datagram
// boundaries. Epoll needs the files it watches: Open takes a resolver from
// the owner task's fd numbers to the files restored for them, so the engine
// opens epoll descriptors after the others (see NeedsTargets). Locks held by
// an open file description (flock, OFD) are taken again by crtools on the
// restored file; POSIX locks belong to the process, so LockCalls describes
// the fcntl the engine must inject into the owning puppet.
//
// Refusals name the descriptor and the option that would allow the dump:
// an external unix peer without -x/--ext-unix-sk, a lock without
// -l/--file-locks, a terminal without -j/--shell-job, a device whose node
// is gone without --evasive-devices, a deleted file over the ghost limit
// (--link-remap).
//
// What is not kept (each documented where it is handled): file
// descriptors in flight in a socket queue (refused), credentials and
// sender addresses of queued datagrams, data sent into a connection not
// accepted yet (refused), queued inotify events, the time a timer spent
// checkpointed (timers resume with the remaining time they had),
// pseudo-terminal pairs inside the tree (refused); for inet sockets see
// inet.go. A pipe end held outside the tree (a shell's
// `prog | tee log` seen from prog) is not detected: restore gives the task
// a new pipe whose other end only crtools held, so its reader sees EOF
// after the saved data, or its writer EPIPE, as if the outside end had
// been closed.
package files

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/kernel"
	"github.com/crtools/crtools/engine/proc"
	"github.com/crtools/crtools/engine/sockdiag"
)

// ErrNotHandled is returned (wrapped) by Dump for descriptors this package
// leaves to the caller: regular files, directories and plain devices that are
// still reachable by their path.
var ErrNotHandled = errors.New("not a special file")

// DefaultGhostLimit is the largest deleted file whose contents go into the
// images when Options.GhostLimit is 0.
const DefaultGhostLimit = 1 << 20

// Options configure a Dumper.
type Options struct {
	// Tree lists every task of the dumped tree. A unix socket whose peer is
	// not held by one of them is external. Empty: only the task being dumped.
	Tree      []int
	ExtUnixSk bool // -x
	FileLocks bool // -l
	ShellJob  bool // -j
	LinkRemap bool // --link-remap
	// EvasiveDevices (--evasive-devices): a device opened through a path
	// that no longer leads to it is saved under another path to the same
	// device (found in /dev).
	EvasiveDevices bool
	GhostLimit     int64 // 0: DefaultGhostLimit
	// TCPEstablished (--tcp-established): dump established TCP
	// connections in repair mode (inet_tcp.go) instead of refusing them.
	TCPEstablished bool
	// TCPSkipInFlight (--tcp-skip-in-flight): a TCP listener with
	// connections not accepted yet is dumped without them (their
	// clients see a reset) instead of refused.
	TCPSkipInFlight bool
	// NextID allocates file ids; nil: the dumper counts from 1. Give the
	// engine's allocator so that ids do not collide with regular files.
	NextID func() uint32
	// TaskStat returns the /proc/PID/stat of a task of Tree that the
	// caller read already while the tree was frozen, nil if it has none:
	// the pty code takes sessions and controlling terminals from it
	// rather than reading every task's stat again. nil: read them.
	TaskStat func(pid int) *proc.Stat
	Log      zerolog.Logger
}

// Collected is the result of dumping one descriptor.
type Collected struct {
	Pid, Fd int
	Kind    pb.FdTypes
	// ID is the file id the fdinfo entry of this descriptor names.
	ID uint32
	// FdFlags is FD_CLOEXEC or 0 (for the fdinfo entry).
	FdFlags uint32
	// Shared is set when an earlier descriptor refers to the same open
	// file description: the object is already in the Set.
	Shared bool
	// Entry is the files.img entry for this open file description (nil
	// when Shared). It has been added to the Set.
	Entry *pb.FileEntry
	// Locks held through this descriptor (only with FileLocks).
	Locks []*pb.FileLockEntry

	// Link is the /proc/PID/fd/FD link, for every descriptor. What else
	// Dump read of a descriptor it leaves to the caller (ErrNotHandled),
	// so that the caller need not read it again: the open file's stat,
	// and from fdinfo its offset, open flags (without O_CLOEXEC) and
	// mount id.
	Link  string
	Stat  unix.Stat_t
	Pos   int64
	Flags uint32
	MntID int
}

// Fdinfo returns the fdinfo image entry for the descriptor.
func (c *Collected) Fdinfo() *pb.FdinfoEntry {
	k := c.Kind
	return &pb.FdinfoEntry{Id: u32p(c.ID), Flags: u32p(c.FdFlags), Type: &k, Fd: u32p(uint32(c.Fd))}
}

// PipeData is the unread content of a pipe or FIFO.
type PipeData struct {
	Entry *pb.PipeDataEntry // PipeId, Bytes, Size (the pipe's capacity)
	Data  []byte
}

// Packet is one queued message of a unix socket (for a stream socket, the
// whole queue is one packet).
type Packet struct {
	Entry *pb.SkPacketEntry // IdFor: the socket's file id; Length
	Data  []byte
	// From is the sender's bound address for datagrams that came from a
	// bound socket (kept for logs; restore sends from the peer or from an
	// unbound socket).
	From []byte
}

// Ghost is the saved content of an open file whose last name is gone.
type Ghost struct {
	Entry *pb.GhostFileEntry
	Data  []byte
}

// Set is everything the dumper collected, the input of a Restorer.
type Set struct {
	// Files holds one entry per open file description (and the helper
	// entries: the regular-file half of a FIFO, external unix peers).
	Files []*pb.FileEntry
	// PipeData by pipe id (the pipe's inode); FIFOs included.
	PipeData map[uint32]*PipeData
	// Queues by the receiving socket's file id, oldest packet first.
	Queues map[uint32][]*Packet
	// Ghosts by the file id of the regular-file entry.
	Ghosts map[uint32]*Ghost
	// LinkRemaps maps the file id of a regular-file entry to the hidden
	// name the file was linked to at dump time (--link-remap).
	LinkRemaps map[uint32]string
	// linkRemapIDs: file id → id of the REG entry of the hidden name.
	linkRemapIDs map[uint32]uint32
	// Icons maps a listening socket's inode to the inodes of the clients
	// waiting to be accepted, oldest first (restore connects them in this
	// order).
	Icons map[uint32][]uint32
	// Locks, by owner: every lock of the dump.
	Locks []*pb.FileLockEntry
	// TtyInfo by tty info id.
	TtyInfo map[uint32]*pb.TtyInfoEntry
	// TtyData by tty info id: bytes in flight in a pseudo-terminal pair
	// of the tree, waiting to be read at that end (tty.go).
	TtyData map[uint32][]byte
	// TCPStreams by socket inode: established TCP connections.
	TCPStreams map[uint32]*TCPStream
}

// NewSet returns an empty Set.
func NewSet() *Set {
	return &Set{
		PipeData:     map[uint32]*PipeData{},
		Queues:       map[uint32][]*Packet{},
		Ghosts:       map[uint32]*Ghost{},
		LinkRemaps:   map[uint32]string{},
		linkRemapIDs: map[uint32]uint32{},
		Icons:        map[uint32][]uint32{},
		TtyInfo:      map[uint32]*pb.TtyInfoEntry{},
		TtyData:      map[uint32][]byte{},
		TCPStreams:   map[uint32]*TCPStream{},
	}
}

type objKey struct {
	kind pb.FdTypes
	ino  uint64
}

// openFileID returns the file id of the open file description behind fd
// of pid, shared with a descriptor seen before (shared true) or new.
func (d *Dumper) openFileID(key objKey, pid, fd int, desc string) (id uint32, shared bool, err error) {
	ix := d.seen[key]
	if ix == nil {
		ix = &KcmpIndex{Type: KcmpFile}
		d.seen[key] = ix
	}
	id, shared, err = ix.Find(pid, uintptr(fd), d.newID)
	if err != nil {
		return 0, false, fmt.Errorf("find the open file description of %s: %w", desc, err)
	}
	return id, shared, nil
}

// Dumper collects the special files of a tree. It is not safe for
// concurrent use.
type Dumper struct {
	opts   Options
	log    zerolog.Logger
	set    *Set
	nextID uint32
	pidfds map[int]int
	// files seen, by object, to find descriptors sharing an open file
	// description (kcmp) and objects dumped once (pipe data).
	seen     map[objKey]*KcmpIndex
	pipeSeen map[uint64]bool
	unixTab  map[uint32]*sockdiag.UnixSocket
	treeSk   map[uint32]bool // socket inodes held by tasks of the tree
	extPeers map[uint32]bool // external peer entries already added
	ghosts   map[ghostKey]*Ghost
	remapped map[ghostKey]remapName
	links    []string          // link-remap names created (removed by Rollback)
	masters  map[uint32]bool   // pty masters held in the tree, by index
	cttys    map[uint64][2]int // controlling terminals of the tree's sessions: tty_nr -> sid, foreground group
	// pipeModes: for each pipe inode held in the tree, 1 if a read end
	// and 2 if a write end is (see checkOtherEnd).
	pipeModes map[uint64]int
	inetTab   map[inetKey]map[uint32]*sockdiag.InetSocket
	// repaired: established TCP sockets put in repair mode (ReleaseTCP).
	repaired []repairedSock
}

// NewDumper returns a dumper. Close it to release the pidfds it keeps.
func NewDumper(opts Options) *Dumper {
	if opts.GhostLimit == 0 {
		opts.GhostLimit = DefaultGhostLimit
	}
	return &Dumper{
		opts:     opts,
		log:      opts.Log,
		set:      NewSet(),
		pidfds:   map[int]int{},
		seen:     map[objKey]*KcmpIndex{},
		pipeSeen: map[uint64]bool{},
		extPeers: map[uint32]bool{},
		ghosts:   map[ghostKey]*Ghost{},
		remapped: map[ghostKey]remapName{},
	}
}

// Set returns what has been collected so far.
func (d *Dumper) Set() *Set { return d.set }

// Close releases the pidfds.
func (d *Dumper) Close() error {
	for _, fd := range d.pidfds {
		unix.Close(fd)
	}
	d.pidfds = map[int]int{}
	return nil
}

// Rollback undoes what a dump changed outside the target: the hidden names
// --link-remap created. Call it when the dump fails.
func (d *Dumper) Rollback() error {
	var errs []error
	if err := d.ReleaseTCP(false); err != nil {
		errs = append(errs, err)
	}
	for _, l := range d.links {
		if err := os.Remove(l); err != nil && !os.IsNotExist(err) {
			errs = append(errs, fmt.Errorf("remove link-remap name: %w", err))
		}
	}
	d.links = nil
	return errors.Join(errs...)
}

func (d *Dumper) newID() uint32 {
	if d.opts.NextID != nil {
		return d.opts.NextID()
	}
	d.nextID++
	return d.nextID
}

// getfd returns crtools' own copy of the target's descriptor.
func (d *Dumper) getfd(pid, fd int) (*os.File, error) {
	pfd, ok := d.pidfds[pid]
	if !ok {
		var err error
		pfd, err = unix.PidfdOpen(pid, 0)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) {
			// pid is a thread, not a process (ENOENT): the live
			// thread a process whose main thread has exited is read
			// through (engine/dump: task.kpid). Linux 6.9+.
			pfd, err = unix.PidfdOpen(pid, unix.PIDFD_THREAD)
		}
		if err != nil {
			return nil, kernel.IfMissing("pidfd_open", fmt.Errorf("open pidfd of pid %d: %w", pid, os.NewSyscallError("pidfd_open", err)))
		}
		d.pidfds[pid] = pfd
	}
	for {
		nfd, err := unix.PidfdGetfd(pfd, fd, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, kernel.IfMissing("pidfd_getfd", fmt.Errorf("copy fd %d of pid %d: %w", fd, pid, os.NewSyscallError("pidfd_getfd", err)))
		}
		return os.NewFile(uintptr(nfd), fmt.Sprintf("pid%d-fd%d", pid, fd)), nil
	}
}

// fdDesc names a descriptor in messages.
func fdDesc(pid, fd int, link string) string {
	return fmt.Sprintf("fd %d of pid %d (%s)", fd, pid, link)
}

// Dump collects the descriptor fd of task pid. For a regular file,
// directory or plain device it returns an error wrapping ErrNotHandled
// together with a Collected that carries only the locks held through it (so
// the caller, which dumps such files itself, still gets them and the -l
// refusal).
func (d *Dumper) Dump(pid, fd int) (*Collected, error) {
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	if err != nil {
		return nil, fmt.Errorf("read link of fd %d of pid %d: %w", fd, pid, err)
	}
	info, err := readFdinfo(pid, fd)
	if err != nil {
		return nil, err
	}
	desc := fdDesc(pid, fd, link)
	c := &Collected{Pid: pid, Fd: fd, Link: link}
	if info.Flags&unix.O_CLOEXEC != 0 {
		c.FdFlags = unix.FD_CLOEXEC
	}
	fileFlags := info.Flags &^ unix.O_CLOEXEC

	// A file with a path (most descriptors: regular files, directories,
	// devices) is stat'ed through its /proc link, which leads to the open
	// file itself: no copy of the descriptor is needed unless it turns
	// out to be one this package dumps. Sockets, pipes and anonymous
	// inodes are looked at through a copy.
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	// copyFd sets f to a copy of the descriptor, once.
	copyFd := func() (err error) {
		if f == nil {
			f, err = d.getfd(pid, fd)
		}
		return err
	}
	var st unix.Stat_t
	if strings.HasPrefix(link, "/") {
		if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), &st); err != nil {
			return nil, fmt.Errorf("stat %s: %w", desc, os.NewSyscallError("stat", err))
		}
	} else {
		if err := copyFd(); err != nil {
			return nil, err
		}
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			return nil, fmt.Errorf("stat %s: %w", desc, os.NewSyscallError("fstat", err))
		}
	}

	kind, err := classify(link, &st, f)
	if err != nil {
		return nil, fmt.Errorf("dump %s: %w", desc, err)
	}
	// memfd files look deleted; they are the engine's (memory and files).
	memfd := strings.HasPrefix(link, "/memfd:")
	if kind == pb.FdTypes_REG && st.Mode&unix.S_IFMT == unix.S_IFCHR {
		if alt, err := d.evasiveDevice(link, &st, desc); err != nil {
			return nil, err
		} else if alt != "" {
			if err := copyFd(); err != nil {
				return nil, err
			}
			return d.dumpDevice(c, pid, fd, alt, &st, info, fileFlags, f)
		}
	}
	if kind == pb.FdTypes_REG && (memfd || !isGhost(link, &st)) {
		c.Kind = kind
		c.Stat, c.Pos, c.Flags, c.MntID = st, info.Pos, fileFlags, info.MntID
		if c.Locks, err = d.locks(pid, fd, desc, info); err != nil {
			return c, err
		}
		return c, fmt.Errorf("dump %s: %w", desc, ErrNotHandled)
	}
	c.Kind = kind
	if err := copyFd(); err != nil {
		return nil, err
	}

	// One open file description in several descriptors: dump it once.
	if c.ID, c.Shared, err = d.openFileID(objKey{kind, st.Ino}, pid, fd, desc); err != nil {
		return nil, err
	}
	if c.Shared {
		return c, nil
	}

	fown, err := dumpFown(f)
	if err != nil {
		return nil, fmt.Errorf("dump owner of %s: %w", desc, err)
	}
	e := &pb.FileEntry{Type: &kind, Id: u32p(c.ID)}
	switch kind {
	case pb.FdTypes_PIPE:
		err = d.dumpPipe(c, e, f, &st, fileFlags, fown)
	case pb.FdTypes_FIFO:
		err = d.dumpFifo(c, e, f, &st, link, fileFlags, fown, info)
	case pb.FdTypes_UNIXSK:
		err = d.dumpUnix(c, e, f, &st, fileFlags, fown, info, desc)
	case pb.FdTypes_INETSK:
		err = d.dumpInet(c, e, f, &st, fileFlags, fown, desc)
	case pb.FdTypes_EVENTFD:
		err = dumpEventfd(e, c.ID, fileFlags, fown, info)
	case pb.FdTypes_EVENTPOLL:
		err = d.dumpEpoll(e, c.ID, pid, fileFlags, fown, info, desc)
	case pb.FdTypes_SIGNALFD:
		err = dumpSignalfd(e, c.ID, fileFlags, fown, info)
	case pb.FdTypes_TIMERFD:
		err = dumpTimerfd(e, c.ID, fileFlags, fown, f, pid, fd)
	case pb.FdTypes_INOTIFY:
		err = d.dumpInotify(e, c.ID, fileFlags, fown, info)
	case pb.FdTypes_REG: // deleted file
		err = d.dumpGhost(c, e, f, &st, link, fileFlags, fown, info, desc)
	case pb.FdTypes_TTY:
		err = d.dumpTTY(c, e, f, &st, link, fileFlags, fown, desc)
	default:
		err = fmt.Errorf("unsupported file kind %v", kind)
	}
	if err != nil {
		return nil, fmt.Errorf("dump %s: %w", desc, err)
	}
	if c.Locks, err = d.locks(pid, fd, desc, info); err != nil {
		return nil, err
	}
	c.Entry = e
	d.set.Files = append(d.set.Files, e)
	return c, nil
}

// classify tells the kind of an open file from its /proc link and stat.
func classify(link string, st *unix.Stat_t, f *os.File) (pb.FdTypes, error) {
	switch {
	case strings.HasPrefix(link, "pipe:["):
		return pb.FdTypes_PIPE, nil
	case strings.HasPrefix(link, "socket:["):
		dom, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil {
			return 0, fmt.Errorf("get socket domain: %w", os.NewSyscallError("getsockopt", err))
		}
		switch dom {
		case unix.AF_UNIX:
			return pb.FdTypes_UNIXSK, nil
		case unix.AF_INET, unix.AF_INET6:
			return pb.FdTypes_INETSK, nil
		}
		return 0, fmt.Errorf("socket of address family %d: %w", dom, ErrUnsupported)
	case link == "anon_inode:[eventfd]":
		return pb.FdTypes_EVENTFD, nil
	case link == "anon_inode:[eventpoll]":
		return pb.FdTypes_EVENTPOLL, nil
	case link == "anon_inode:[signalfd]":
		return pb.FdTypes_SIGNALFD, nil
	case link == "anon_inode:[timerfd]":
		return pb.FdTypes_TIMERFD, nil
	case link == "anon_inode:inotify":
		return pb.FdTypes_INOTIFY, nil
	case strings.HasPrefix(link, "anon_inode:"):
		return 0, fmt.Errorf("%s: %w", link, ErrUnsupported)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return pb.FdTypes_FIFO, nil
	case unix.S_IFCHR:
		if isTTYDev(st.Rdev) {
			return pb.FdTypes_TTY, nil
		}
	}
	return pb.FdTypes_REG, nil
}

// ErrUnsupported is wrapped by errors about file kinds crtools cannot dump.
var ErrUnsupported = errors.New("not supported")

// Owner returns the owner (F_SETOWN) and signal (F_SETSIG) of the open
// file behind fd of pid, for a file the caller dumps itself (a regular
// file or directory: Dump hands those back with ErrNotHandled and takes no
// copy of them). It reads them through a copy of the descriptor.
func (d *Dumper) Owner(pid, fd int) (*pb.FownEntry, error) {
	f, err := d.getfd(pid, fd)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	o, err := dumpFown(f)
	if err != nil {
		return nil, fmt.Errorf("dump owner of fd %d of pid %d: %w", fd, pid, err)
	}
	return o, nil
}

// dumpFown reads the owner (F_GETOWN_EX) and signal (F_GETSIG) of f.
func dumpFown(f *os.File) (*pb.FownEntry, error) {
	fd := int(f.Fd())
	own, err := getOwnEx(fd)
	if err != nil {
		return nil, err
	}
	sig, err := unix.FcntlInt(uintptr(fd), unix.F_GETSIG, 0)
	if err != nil {
		return nil, os.NewSyscallError("fcntl(F_GETSIG)", err)
	}
	// The kernel's pid types: PIDTYPE_PID (a thread), _TGID, _PGID.
	pidType := uint32(1)
	switch own.Type {
	case fOwnerTID:
		pidType = 0
	case fOwnerPGRP:
		pidType = 2
	}
	if own.Pid == 0 {
		pidType = 0
	}
	return &pb.FownEntry{Uid: u32p(0), Euid: u32p(0), Signum: u32p(uint32(sig)), PidType: u32p(pidType), Pid: u32p(uint32(own.Pid))}, nil
}

func u32p(v uint32) *uint32 { return &v }
func u64p(v uint64) *uint64 { return &v }
func i32p(v int32) *int32   { return &v }
func i64p(v int64) *int64   { return &v }
func boolp(v bool) *bool    { return &v }
func strp(v string) *string { return &v }
