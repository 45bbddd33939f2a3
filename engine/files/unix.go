package files

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/sockdiag"
)

// Unix sockets.
//
// Dump: sock_diag gives type, state, name, peer, pending connections and
// shutdown; getsockopt on the copy gives the options; the receive queue is
// walked with recvmsg(MSG_PEEK) and SO_PEEK_OFF, one datagram per call, so
// datagram and seqpacket boundaries are kept (a stream queue becomes one
// packet). Each socket saves its own receive queue; restore sends it again
// from the peer, then applies the shutdown state.
//
// Peers: a client whose connection waits in a listener's queue has no peer
// inode (the embryo socket has none); it is linked to the listener through
// the listener's ICONS and saved with the listener's inode as peer, as CRIU
// does. A peer held by no task of the tree is external: refused without -x,
// with -x it is saved as an entry flagged USK_EXTERN carrying its name, and
// restore connects to that name again.
//
// Not kept: file descriptors in flight (SCM_RIGHTS; refused), credentials
// attached to queued messages, the sender address of datagrams received by
// an unconnected socket (they are sent again from an unbound socket), data
// written by a client into a connection not accepted yet (refused), the
// names of accepted sockets (they share the listener's name).

// Flags of UnixSkEntry.Uflags (CRIU's values).
const (
	uskExtern = 1 << 0
)

func (d *Dumper) unixSocket(ino uint32) (*sockdiag.UnixSocket, error) {
	if s, ok := d.unixTab[ino]; ok {
		return s, nil
	}
	tab, err := sockdiag.UnixSockets()
	if err != nil {
		return nil, err
	}
	d.unixTab = tab
	s, ok := tab[ino]
	if !ok {
		return nil, fmt.Errorf("socket inode %d not reported by sock_diag (another network namespace?)", ino)
	}
	return s, nil
}

// inTree reports whether a task of the tree holds socket inode ino.
func (d *Dumper) inTree(pid int, ino uint32) bool {
	if d.treeSk == nil {
		d.treeSk = map[uint32]bool{}
		tree := d.opts.Tree
		if len(tree) == 0 {
			tree = []int{pid}
		}
		for _, p := range tree {
			dir := fmt.Sprintf("/proc/%d/fd", p)
			ents, err := os.ReadDir(dir)
			if err != nil {
				continue
			}
			for _, de := range ents {
				l, err := os.Readlink(filepath.Join(dir, de.Name()))
				if err != nil {
					continue
				}
				if s, ok := strings.CutPrefix(l, "socket:["); ok {
					if n, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 32); err == nil {
						d.treeSk[uint32(n)] = true
					}
				}
			}
		}
	}
	return d.treeSk[ino]
}

func nameString(name []byte) string {
	if len(name) > 0 && name[0] == 0 {
		return "@" + string(name[1:])
	}
	return string(name)
}

func (d *Dumper) dumpUnix(c *Collected, e *pb.FileEntry, f *os.File, st *unix.Stat_t, flags uint32, fown *pb.FownEntry, info *fdinfo, desc string) error {
	ino := uint32(st.Ino)
	s, err := d.unixSocket(ino)
	if err != nil {
		return err
	}
	if v, ok := info.value("scm_fds"); ok && v != "0" {
		return fmt.Errorf("%s file descriptors in flight in its queue: %w", v, ErrUnsupported)
	}
	nameDir := ""
	if len(s.Name) > 0 && s.Name[0] != 0 && s.Name[0] != '/' {
		// A relative name: it was bound in the cwd of its day; look for
		// the socket file from the task's cwd (CRIU's name_dir).
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", c.Pid))
		var st unix.Stat_t
		if err != nil || unix.Stat(filepath.Join(cwd, string(s.Name)), &st) != nil || uint32(st.Ino) != s.VFSIno {
			return fmt.Errorf("bound to the relative name %q, which is not in the task's working directory: %w", s.Name, ErrUnsupported)
		}
		nameDir = cwd
	}
	ue := &pb.UnixSkEntry{
		Id: u32p(c.ID), Ino: u32p(ino), Type: u32p(uint32(s.Type)), State: u32p(uint32(s.State)),
		Flags: u32p(flags), Uflags: u32p(0), Backlog: u32p(0), Peer: u32p(s.Peer), Fown: fown,
		Name: append([]byte{}, s.Name...),
	}
	if s.Listening() {
		ue.Backlog = u32p(s.WQueue)
		if len(s.Icons) > 0 {
			d.set.Icons[ino] = append([]uint32(nil), s.Icons...)
		}
	}
	if sh := s.Shutdown & 3; sh != 0 {
		v := pb.SkShutdown(sh) // RCV_SHUTDOWN=1 is READ, SEND_SHUTDOWN=2 is WRITE
		ue.Shutdown = &v
	}
	if nameDir != "" {
		ue.NameDir = strp(nameDir)
	}
	if s.HasVFS {
		var pst unix.Stat_t
		if err := unix.Stat(sockPath(ue), &pst); err != nil || uint32(pst.Ino) != s.VFSIno {
			ue.Deleted = boolp(true)
		} else {
			ue.FilePerms = &pb.FilePermsEntry{Mode: u32p(pst.Mode), Uid: u32p(pst.Uid), Gid: u32p(pst.Gid)}
		}
	}
	if ue.Opts, err = dumpSockOpts(int(f.Fd())); err != nil {
		return err
	}

	// Find the peer.
	switch {
	case s.Peer != 0:
		if !d.inTree(c.Pid, s.Peer) {
			if err := d.external(ue, s.Peer, desc); err != nil {
				return err
			}
		}
	case s.State == sockdiag.TCPEstablished && s.Type != unix.SOCK_DGRAM:
		// A connection not accepted yet, or one whose peer was closed.
		for _, l := range d.unixTab {
			if !l.Listening() || !containsU32(l.Icons, ino) {
				continue
			}
			if s.WQueue > 0 {
				return fmt.Errorf("%d bytes written into a connection to %q not accepted yet: %w", s.WQueue, nameString(l.Name), ErrUnsupported)
			}
			ue.Peer = u32p(l.Ino)
			if !d.inTree(c.Pid, l.Ino) {
				if err := d.external(ue, l.Ino, desc); err != nil {
					return err
				}
			}
			break
		}
	}
	e.Usk = ue

	if !s.Listening() {
		if err := d.saveQueue(int(f.Fd()), int(s.Type), s.Shutdown, c.ID); err != nil {
			return fmt.Errorf("read queue: %w", err)
		}
	}
	return nil
}

func containsU32(s []uint32, v uint32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// external handles a peer outside the tree: refused without -x, else saved
// as an USK_EXTERN entry with its name.
func (d *Dumper) external(ue *pb.UnixSkEntry, peer uint32, desc string) error {
	ps := d.unixTab[peer]
	pname := "unnamed"
	if ps != nil && len(ps.Name) > 0 {
		pname = fmt.Sprintf("%q", nameString(ps.Name))
	}
	if !d.opts.ExtUnixSk {
		return fmt.Errorf("unix socket %d is connected to socket %d (%s) outside the dumped tree; dump with -x/--ext-unix-sk to reconnect it on restore", ue.GetIno(), peer, pname)
	}
	if ps == nil || len(ps.Name) == 0 {
		return fmt.Errorf("unix socket %d is connected to the unnamed socket %d outside the dumped tree: it cannot be reconnected: %w", ue.GetIno(), peer, ErrUnsupported)
	}
	if d.extPeers[peer] {
		return nil
	}
	d.extPeers[peer] = true
	id := d.newID()
	k := pb.FdTypes_UNIXSK
	d.set.Files = append(d.set.Files, &pb.FileEntry{Type: &k, Id: u32p(id), Usk: &pb.UnixSkEntry{
		Id: u32p(id), Ino: u32p(peer), Type: u32p(uint32(ps.Type)), State: u32p(uint32(ps.State)),
		Flags: u32p(0), Uflags: u32p(uskExtern), Backlog: u32p(0), Peer: u32p(0),
		Fown: &pb.FownEntry{Uid: u32p(0), Euid: u32p(0), Signum: u32p(0), PidType: u32p(0), Pid: u32p(0)},
		Opts: &pb.SkOptsEntry{SoSndbuf: u32p(0), SoRcvbuf: u32p(0), SoSndTmoSec: u64p(0), SoSndTmoUsec: u64p(0), SoRcvTmoSec: u64p(0), SoRcvTmoUsec: u64p(0)},
		Name: append([]byte{}, ps.Name...),
	}})
	return nil
}

func dumpSockOpts(fd int) (*pb.SkOptsEntry, error) {
	o := &pb.SkOptsEntry{}
	geti := func(opt int, name string) (int, error) {
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
		if err != nil {
			return 0, fmt.Errorf("get %s: %w", name, os.NewSyscallError("getsockopt", err))
		}
		return v, nil
	}
	v, err := geti(unix.SO_SNDBUF, "SO_SNDBUF")
	if err != nil {
		return nil, err
	}
	o.SoSndbuf = u32p(uint32(v))
	if v, err = geti(unix.SO_RCVBUF, "SO_RCVBUF"); err != nil {
		return nil, err
	}
	o.SoRcvbuf = u32p(uint32(v))
	if v, err = geti(unix.SO_PASSCRED, "SO_PASSCRED"); err != nil {
		return nil, err
	}
	o.SoPasscred = boolp(v != 0)
	if v, err = geti(unix.SO_PASSSEC, "SO_PASSSEC"); err != nil {
		return nil, err
	}
	o.SoPasssec = boolp(v != 0)
	if err := getSockTimeouts(fd, o); err != nil {
		return nil, err
	}
	return o, nil
}

const maxDatagram = 4 << 20

// saveQueue reads the receive queue of socket fd (peekQueue) into the
// packets of sk-queues.img, for the file of id.
func (d *Dumper) saveQueue(fd, typ int, shutdown uint8, id uint32) error {
	pkts, err := d.peekQueue(fd, typ, shutdown)
	if err != nil {
		return err
	}
	for _, p := range pkts {
		p.Entry = &pb.SkPacketEntry{IdFor: u32p(id), Length: u32p(uint32(len(p.Data)))}
	}
	if len(pkts) > 0 {
		d.set.Queues[id] = pkts
	}
	return nil
}

// peekQueue reads the receive queue without consuming it. SO_PEEK_OFF
// belongs to the socket the target shares with our copy: it is set for the
// walk and put back.
func (d *Dumper) peekQueue(fd, typ int, shutdown uint8) ([]*Packet, error) {
	orig, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return nil, os.NewSyscallError("getsockopt(SO_PEEK_OFF)", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return nil, os.NewSyscallError("setsockopt(SO_PEEK_OFF)", err)
	}
	defer unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, orig)

	bufSize := 64 << 10
	if typ != unix.SOCK_STREAM {
		bufSize = maxDatagram
	}
	buf := make([]byte, bufSize)
	var pkts []*Packet
	var stream []byte
	for i := 0; ; i++ {
		if i > 1<<20 {
			return nil, fmt.Errorf("queue walk does not end")
		}
		n, _, rflags, from, err := unix.Recvmsg(fd, buf, nil, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			return nil, os.NewSyscallError("recvmsg(MSG_PEEK)", err)
		}
		if rflags&unix.MSG_TRUNC != 0 {
			return nil, fmt.Errorf("datagram larger than %d bytes", bufSize)
		}
		if typ == unix.SOCK_STREAM {
			if n == 0 {
				break // end of stream: peer shut down its sending side
			}
			stream = append(stream, buf[:n]...)
			continue
		}
		if n == 0 && shutdown&1 != 0 {
			// With the receiving side shut down an empty queue reads as
			// zero bytes forever; a zero-length datagram looks the same.
			break
		}
		p := &Packet{Data: append([]byte{}, buf[:n]...)}
		if su, ok := from.(*unix.SockaddrUnix); ok && su.Name != "" {
			p.From = []byte(su.Name)
		}
		pkts = append(pkts, p)
	}
	if len(stream) > 0 {
		pkts = append(pkts, &Packet{Data: stream})
	}
	return pkts, nil
}

// --- restore ---

func sockaddr(name []byte) *unix.SockaddrUnix {
	return &unix.SockaddrUnix{Name: nameString(name)}
}

// sockPath is the file system path of a socket bound to a path (a
// relative name joined to its directory).
func sockPath(ue *pb.UnixSkEntry) string {
	n := string(ue.GetName())
	if d := ue.GetNameDir(); d != "" && !strings.HasPrefix(n, "/") {
		return filepath.Join(d, n)
	}
	return n
}

// peerAddr is the address to connect to ue: its name, made absolute if it
// was relative to a directory.
func peerAddr(ue *pb.UnixSkEntry) *unix.SockaddrUnix {
	if len(ue.GetName()) > 0 && ue.GetName()[0] != 0 {
		return &unix.SockaddrUnix{Name: sockPath(ue)}
	}
	return sockaddr(ue.GetName())
}

// bindIn binds fd to the relative name in dir: the kernel keeps the name
// as given, so the bind runs with dir as working directory, on a thread
// that unshared its fs struct so crtools' own cwd never changes.
func bindIn(fd int, dir, name string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: this thread's cwd is changed; it must end
		// with the goroutine rather than serve other goroutines.
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- os.NewSyscallError("unshare(CLONE_FS)", err)
			return
		}
		if err := unix.Chdir(dir); err != nil {
			errc <- fmt.Errorf("chdir %s: %w", dir, err)
			return
		}
		errc <- unix.Bind(fd, &unix.SockaddrUnix{Name: name})
	}()
	return <-errc
}

func newSocket(typ uint32) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_UNIX, int(typ)|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	return os.NewFile(uintptr(fd), "unix"), nil
}

// bindName binds f to the entry's name. A socket file left at the path by
// the dumped (dead) process is removed first; a name that was deleted at
// dump time is removed again after the bind.
func (r *Restorer) bindName(f *os.File, ue *pb.UnixSkEntry) error {
	name := ue.GetName()
	if len(name) == 0 {
		return nil
	}
	p := sockPath(ue)
	// A name deleted at dump time may be someone else's by now: leave it.
	if name[0] != 0 && !ue.GetDeleted() {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err == nil {
			if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
				return fmt.Errorf("bind unix socket to %s: a file that is not a socket is in the way", p)
			}
			if err := unix.Unlink(p); err != nil {
				return fmt.Errorf("remove stale socket file %s: %w", p, err)
			}
		}
	}
	var err error
	if p != string(name) {
		err = bindIn(int(f.Fd()), ue.GetNameDir(), string(name))
	} else {
		err = unix.Bind(int(f.Fd()), sockaddr(name))
	}
	if err != nil {
		return fmt.Errorf("bind unix socket %d to %q: %w", ue.GetIno(), nameString(name), os.NewSyscallError("bind", err))
	}
	if name[0] != 0 {
		if fp := ue.GetFilePerms(); fp != nil {
			if err := unix.Chmod(p, fp.GetMode()&0o7777); err != nil {
				return fmt.Errorf("chmod %s: %w", p, err)
			}
			if err := unix.Lchown(p, int(fp.GetUid()), int(fp.GetGid())); err != nil {
				return fmt.Errorf("chown %s: %w", p, err)
			}
		}
		if ue.GetDeleted() {
			if err := unix.Unlink(p); err != nil {
				return fmt.Errorf("unlink deleted socket name %s: %w", p, err)
			}
		}
	}
	return nil
}

func setSockOpts(f *os.File, o *pb.SkOptsEntry) error {
	if o == nil {
		return nil
	}
	fd := int(f.Fd())
	set := func(opt, v int, name string) error {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, v); err != nil {
			return fmt.Errorf("set %s: %w", name, os.NewSyscallError("setsockopt", err))
		}
		return nil
	}
	// getsockopt reports twice what setsockopt was given (the kernel
	// doubles it for bookkeeping); *FORCE ignores the sysctl maxima.
	if v := o.GetSoSndbuf(); v != 0 {
		if err := set(unix.SO_SNDBUFFORCE, int(v/2), "SO_SNDBUFFORCE"); err != nil {
			return err
		}
	}
	if v := o.GetSoRcvbuf(); v != 0 {
		if err := set(unix.SO_RCVBUFFORCE, int(v/2), "SO_RCVBUFFORCE"); err != nil {
			return err
		}
	}
	if o.GetSoPasscred() {
		if err := set(unix.SO_PASSCRED, 1, "SO_PASSCRED"); err != nil {
			return err
		}
	}
	if o.GetSoPasssec() {
		if err := set(unix.SO_PASSSEC, 1, "SO_PASSSEC"); err != nil {
			return err
		}
	}
	if err := setSockTimeouts(fd, o); err != nil {
		return err
	}
	return nil
}

func (r *Restorer) openUnix(e *pb.FileEntry) (*os.File, error) {
	ue := e.GetUsk()
	if ue.GetUflags()&uskExtern != 0 {
		return nil, fmt.Errorf("unix socket %d is an external peer, not a file of the tree", ue.GetIno())
	}
	if err := r.createUnix(ue); err != nil {
		return nil, err
	}
	f := r.usk[ue.GetIno()]
	if err := setFileFlags(f, ue.GetFlags()); err != nil {
		return nil, err
	}
	return f, nil
}

// createUnix creates the socket of ue (and whatever must exist with it: its
// pair, its listener and the listener's pending clients), once.
func (r *Restorer) createUnix(ue *pb.UnixSkEntry) error {
	ino := ue.GetIno()
	if _, ok := r.usk[ino]; ok {
		return nil
	}
	if r.uskBusy[ino] {
		return fmt.Errorf("unix socket %d: circular dependency between sockets", ino)
	}
	r.uskBusy[ino] = true
	defer delete(r.uskBusy, ino)

	peer := r.unixByIno[ue.GetPeer()]
	switch {
	case ue.GetState() == sockdiag.TCPListen:
		return r.createListener(ue)
	case ue.GetPeer() != 0 && peer == nil:
		return fmt.Errorf("unix socket %d: peer %d is not in the images", ino, ue.GetPeer())
	case peer != nil && peer.GetUflags()&uskExtern != 0:
		f, err := r.socketFor(ue)
		if err != nil {
			return err
		}
		if err := unix.Connect(int(f.Fd()), peerAddr(peer)); err != nil {
			return fmt.Errorf("reconnect unix socket %d to external %q: %w", ino, nameString(peer.GetName()), os.NewSyscallError("connect", err))
		}
		return r.finishUnix(ue, nil)
	case peer != nil && peer.GetState() == sockdiag.TCPListen:
		// A connection not accepted yet: the listener connects its clients.
		if err := r.createUnix(peer); err != nil {
			return err
		}
		if _, ok := r.usk[ino]; !ok {
			return fmt.Errorf("unix socket %d: listener %d did not reconnect it", ino, peer.GetIno())
		}
		return nil
	case peer != nil && peer.GetPeer() == ino:
		return r.createPair(ue, peer)
	case peer != nil:
		// Connected to a socket that is not connected back (datagram
		// clients of a bound server socket).
		if err := r.createUnix(peer); err != nil {
			return err
		}
		f, err := r.socketFor(ue)
		if err != nil {
			return err
		}
		if err := unix.Connect(int(f.Fd()), peerAddr(peer)); err != nil {
			return fmt.Errorf("connect unix socket %d to %q: %w", ino, nameString(peer.GetName()), os.NewSyscallError("connect", err))
		}
		return r.finishUnix(ue, nil)
	case ue.GetState() == sockdiag.TCPEstablished && ue.GetType() != unix.SOCK_DGRAM:
		// Connected, peer closed: a pair whose other end carries the
		// queued data in and is then closed, so reads end in EOF as before.
		return r.createPair(ue, nil)
	default:
		if _, err := r.socketFor(ue); err != nil {
			return err
		}
		return r.finishUnix(ue, nil)
	}
}

// socketFor creates an unconnected socket for ue with its options and name.
func (r *Restorer) socketFor(ue *pb.UnixSkEntry) (*os.File, error) {
	f, err := newSocket(ue.GetType())
	if err != nil {
		return nil, fmt.Errorf("create unix socket %d: %w", ue.GetIno(), err)
	}
	r.usk[ue.GetIno()] = f
	r.keep = append(r.keep, f)
	if err := setSockOpts(f, ue.GetOpts()); err != nil {
		return nil, fmt.Errorf("unix socket %d: %w", ue.GetIno(), err)
	}
	if err := r.bindName(f, ue); err != nil {
		return nil, err
	}
	return f, nil
}

func (r *Restorer) createListener(ue *pb.UnixSkEntry) error {
	f, err := r.socketFor(ue)
	if err != nil {
		return err
	}
	if err := unix.Listen(int(f.Fd()), int(ue.GetBacklog())); err != nil {
		return fmt.Errorf("listen on unix socket %d: %w", ue.GetIno(), os.NewSyscallError("listen", err))
	}
	// Pending connections, oldest first.
	clients := r.set.Icons[ue.GetIno()]
	if clients == nil {
		var cs []*pb.UnixSkEntry
		for _, c := range r.unixByIno {
			if c.GetPeer() == ue.GetIno() && c.GetUflags()&uskExtern == 0 {
				cs = append(cs, c)
			}
		}
		sort.Slice(cs, func(i, j int) bool { return cs[i].GetId() < cs[j].GetId() })
		for _, c := range cs {
			clients = append(clients, c.GetIno())
		}
	}
	for _, ci := range clients {
		c := r.unixByIno[ci]
		if c == nil {
			continue // a client outside the tree: its connection is lost
		}
		cf, err := r.socketFor(c)
		if err != nil {
			return err
		}
		if err := unix.SetNonblock(int(cf.Fd()), true); err != nil {
			return err
		}
		if err := unix.Connect(int(cf.Fd()), peerAddr(ue)); err != nil {
			return fmt.Errorf("reconnect pending client %d to %q: %w", ci, nameString(ue.GetName()), os.NewSyscallError("connect", err))
		}
		if err := r.finishUnix(c, nil); err != nil {
			return err
		}
	}
	return r.finishUnix(ue, nil)
}

// createPair makes a connected pair for ue and its peer (nil: the peer was
// closed; the spare end only refills the queue and is then closed).
func (r *Restorer) createPair(ue, peer *pb.UnixSkEntry) error {
	fds, err := unix.Socketpair(unix.AF_UNIX, int(ue.GetType())|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("create unix socket pair for %d: %w", ue.GetIno(), os.NewSyscallError("socketpair", err))
	}
	a, b := os.NewFile(uintptr(fds[0]), "unix"), os.NewFile(uintptr(fds[1]), "unix")
	r.usk[ue.GetIno()] = a
	r.keep = append(r.keep, a)
	if peer == nil {
		defer b.Close()
		// The spare end sends the whole saved queue at once: give it room.
		if q := r.set.Queues[ue.GetId()]; len(q) > 0 {
			n := 0
			for _, p := range q {
				n += len(p.Data)
			}
			_ = unix.SetsockoptInt(int(b.Fd()), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 2*n+(64<<10))
		}
	} else {
		r.usk[peer.GetIno()] = b
		r.keep = append(r.keep, b)
	}
	for _, x := range []struct {
		e *pb.UnixSkEntry
		f *os.File
	}{{ue, a}, {peer, b}} {
		if x.e == nil {
			continue
		}
		if err := setSockOpts(x.f, x.e.GetOpts()); err != nil {
			return fmt.Errorf("unix socket %d: %w", x.e.GetIno(), err)
		}
		// An accepted socket shares its listener's name: binding it would
		// collide, and the name is not the socket's own.
		if len(x.e.GetName()) > 0 && !r.isListenerName(x.e.GetName()) {
			if err := r.bindName(x.f, x.e); err != nil {
				return err
			}
		}
	}
	if err := r.finishUnix(ue, b); err != nil {
		return err
	}
	if peer != nil {
		return r.finishUnix(peer, a)
	}
	return nil
}

func (r *Restorer) isListenerName(name []byte) bool {
	for _, u := range r.unixByIno {
		if u.GetState() == sockdiag.TCPListen && bytes.Equal(u.GetName(), name) {
			return true
		}
	}
	return false
}

// finishUnix queues ue's saved receive queue again (sent from sender, or
// from an unbound socket to ue's name) and applies its shutdown state.
func (r *Restorer) finishUnix(ue *pb.UnixSkEntry, sender *os.File) error {
	f := r.usk[ue.GetIno()]
	if pkts := r.set.Queues[ue.GetId()]; len(pkts) > 0 {
		if sender == nil {
			if len(ue.GetName()) == 0 || ue.GetType() == unix.SOCK_STREAM {
				return fmt.Errorf("unix socket %d: %d queued messages but no peer to send them from", ue.GetIno(), len(pkts))
			}
			tmp, err := newSocket(ue.GetType())
			if err != nil {
				return err
			}
			defer tmp.Close()
			if err := unix.Connect(int(tmp.Fd()), peerAddr(ue)); err != nil {
				return fmt.Errorf("connect to unix socket %d to refill its queue: %w", ue.GetIno(), os.NewSyscallError("connect", err))
			}
			sender = tmp
		}
		for i, p := range pkts {
			if err := sendAll(int(sender.Fd()), p.Data, ue.GetType()); err != nil {
				return fmt.Errorf("refill queue of unix socket %d (message %d of %d, %d bytes): %w", ue.GetIno(), i+1, len(pkts), len(p.Data), err)
			}
		}
	}
	if sd := ue.GetShutdown(); sd != pb.SkShutdown_NONE {
		how := map[pb.SkShutdown]int{pb.SkShutdown_READ: unix.SHUT_RD, pb.SkShutdown_WRITE: unix.SHUT_WR, pb.SkShutdown_BOTH: unix.SHUT_RDWR}[sd]
		if err := unix.Shutdown(int(f.Fd()), how); err != nil && err != unix.ENOTCONN {
			return fmt.Errorf("shut down unix socket %d: %w", ue.GetIno(), os.NewSyscallError("shutdown", err))
		}
	}
	return nil
}

func sendAll(fd int, data []byte, typ uint32) error {
	if typ != unix.SOCK_STREAM {
		for {
			_, err := unix.SendmsgN(fd, data, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return os.NewSyscallError("sendmsg", err)
			}
			return nil
		}
	}
	for off := 0; off < len(data); {
		n, err := unix.SendmsgN(fd, data[off:], nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("sendmsg", err)
		}
		off += n
	}
	return nil
}
