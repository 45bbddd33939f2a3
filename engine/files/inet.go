package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/netlock"
	"github.com/crtools/crtools/engine/sockdiag"
)

// Inet sockets (IPv4 and IPv6, TCP and UDP).
//
// Dump reads the socket's state from inet_diag (state, addresses, the
// backlog of a listener) and from getsockopt on crtools' copy (options);
// addresses that inet_diag does not list (an unbound socket) come from
// getsockname/getpeername. Restore creates the socket in crtools (in
// crtools' network namespace, the dumped one), sets its options, binds it
// (SO_REUSEADDR while binding: after a kill-dump the old socket is gone,
// but a connection of it may linger in TIME_WAIT), listens with the dumped
// backlog or connects a UDP socket to its peer.
//
// An established TCP connection is dumped only with --tcp-established
// (TCPEstablished), in repair mode (TCP_REPAIR, see tcpstream.go); any
// other TCP state (connecting, closing) is refused. Datagrams queued on a
// UDP socket are saved (sk-queues.img, as unix queues) and sent to the
// restored socket again after its bind and before its connect, from an
// unbound socket: their boundaries and order are kept, their source
// address is not (the image has no field for it; a receiver that looks at
// the sender of those datagrams sees a loopback port of crtools). Not
// kept: connections waiting in a listener's accept queue (their clients
// see a reset; logged), multicast memberships and other IP-level options.

// TCP states (include/net/tcp_states.h).
const (
	tcpEstablished = 1
	tcpClose       = 7
	tcpListen      = 10
)

type inetKey struct{ family, proto uint8 }

// inetDiag finds the socket of inode ino in inet_diag's tables (loaded
// once per family and protocol).
func (d *Dumper) inetDiag(family, proto uint8, ino uint32) (*sockdiag.InetSocket, error) {
	if d.inetTab == nil {
		d.inetTab = map[inetKey]map[uint32]*sockdiag.InetSocket{}
	}
	k := inetKey{family, proto}
	tab, ok := d.inetTab[k]
	if !ok {
		var err error
		if tab, err = sockdiag.InetSockets(family, proto); err != nil {
			return nil, err
		}
		d.inetTab[k] = tab
	}
	return tab[ino], nil
}

func (d *Dumper) dumpInet(c *Collected, e *pb.FileEntry, f *os.File, st *unix.Stat_t, flags uint32, fown *pb.FownEntry, desc string) error {
	fd := int(f.Fd())
	family, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return fmt.Errorf("get socket domain: %w", os.NewSyscallError("getsockopt", err))
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("get socket type: %w", os.NewSyscallError("getsockopt", err))
	}
	proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err != nil {
		return fmt.Errorf("get socket protocol: %w", os.NewSyscallError("getsockopt", err))
	}
	if !(typ == unix.SOCK_STREAM && proto == unix.IPPROTO_TCP) && !(typ == unix.SOCK_DGRAM && proto == unix.IPPROTO_UDP) {
		return fmt.Errorf("inet socket of type %d protocol %d: %w", typ, proto, ErrUnsupported)
	}
	ino := uint32(st.Ino)
	local, peer, err := sockAddrs(fd)
	if err != nil {
		return err
	}
	state := uint32(tcpClose)
	var backlog uint32
	diag, err := d.inetDiag(uint8(family), uint8(proto), ino)
	if err != nil {
		return err
	}
	if diag != nil {
		state = uint32(diag.State)
		if state == tcpListen {
			backlog = diag.WQueue
			if diag.RQueue > 0 {
				// The kernel gives no way to save a connection
				// without accepting it, and an accept cannot be
				// undone for -R or a rollback: refuse unless the
				// user agreed to lose them.
				if !d.opts.TCPSkipInFlight {
					return fmt.Errorf("%s: %d connections not accepted yet would be lost (their clients would see a reset); let the program accept them, or dump with --tcp-skip-in-flight", desc, diag.RQueue)
				}
				d.log.Warn().Msgf("%s: %d connections not accepted yet are not kept (their clients see a reset; --tcp-skip-in-flight)", desc, diag.RQueue)
			}
		} else if proto == unix.IPPROTO_UDP && diag.RQueue > 0 {
			// Walked like a unix datagram queue (MSG_PEEK with
			// SO_PEEK_OFF, which UDP has too), boundaries kept.
			if err := d.saveQueue(fd, unix.SOCK_DGRAM, 0, c.ID); err != nil {
				return fmt.Errorf("read the queued datagrams: %w", err)
			}
		}
	} else if peer.IsValid() {
		state = tcpEstablished
	}
	if proto == unix.IPPROTO_UDP && peer.IsValid() {
		state = tcpEstablished // a connected UDP socket, as inet_diag says it
	}
	ie := &pb.InetSkEntry{
		Id: u32p(c.ID), Ino: u32p(ino), Family: u32p(uint32(family)), Type: u32p(uint32(typ)), Proto: u32p(uint32(proto)),
		State: u32p(state), SrcPort: u32p(uint32(local.Port())), DstPort: u32p(uint32(peer.Port())),
		Flags: u32p(flags), Backlog: u32p(backlog), SrcAddr: addrWords(local.Addr(), family), DstAddr: addrWords(peer.Addr(), family),
		Fown: fown,
	}
	if ie.Opts, err = dumpSkOpts(fd); err != nil {
		return err
	}
	if family == unix.AF_INET6 {
		v, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		if err != nil {
			return fmt.Errorf("get IPV6_V6ONLY: %w", os.NewSyscallError("getsockopt", err))
		}
		ie.V6Only = boolp(v != 0)
	}
	if proto == unix.IPPROTO_TCP {
		switch state {
		case tcpListen, tcpClose:
		case tcpEstablished:
			if !d.opts.TCPEstablished {
				return fmt.Errorf("established TCP connection %s -> %s: dump it with --tcp-established", local, peer)
			}
			s, err := d.dumpTCPStream(fd, netlock.Conn{Local: local, Remote: peer})
			if err != nil {
				return fmt.Errorf("dump TCP connection %s -> %s: %w", local, peer, err)
			}
			d.set.TCPStreams[ino] = s
		default:
			return fmt.Errorf("TCP socket %s -> %s in state %d (connecting or closing): %w", local, peer, state, ErrUnsupported)
		}
	}
	k := pb.FdTypes_INETSK
	e.Type, e.Isk = &k, ie
	return nil
}

// sockAddrs returns the socket's bound and peer addresses (the peer is
// invalid when the socket is not connected).
func sockAddrs(fd int) (local, peer netip.AddrPort, err error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return local, peer, fmt.Errorf("get socket name: %w", os.NewSyscallError("getsockname", err))
	}
	local = addrPort(sa)
	if pa, err := unix.Getpeername(fd); err == nil {
		peer = addrPort(pa)
	} else if !errors.Is(err, unix.ENOTCONN) {
		return local, peer, fmt.Errorf("get peer name: %w", os.NewSyscallError("getpeername", err))
	}
	return local, peer, nil
}

func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// addrWords stores an address as CRIU does: the bytes in network order,
// read as host-order 32-bit words.
func addrWords(a netip.Addr, family int) []uint32 {
	n := 4
	if family == unix.AF_INET6 {
		n = 16
	}
	b := make([]byte, n)
	if a.IsValid() {
		if family == unix.AF_INET6 {
			a16 := a.As16()
			copy(b, a16[:])
		} else {
			a4 := a.Unmap().As4()
			copy(b, a4[:])
		}
	}
	w := make([]uint32, n/4)
	for i := range w {
		w[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return w
}

func wordsAddr(w []uint32, port uint32, family uint32) (unix.Sockaddr, netip.AddrPort) {
	b := make([]byte, 4*len(w))
	for i, v := range w {
		binary.LittleEndian.PutUint32(b[4*i:], v)
	}
	if family == unix.AF_INET6 {
		var a [16]byte
		copy(a[:], b)
		return &unix.SockaddrInet6{Port: int(port), Addr: a}, netip.AddrPortFrom(netip.AddrFrom16(a), uint16(port))
	}
	var a [4]byte
	copy(a[:], b)
	return &unix.SockaddrInet4{Port: int(port), Addr: a}, netip.AddrPortFrom(netip.AddrFrom4(a), uint16(port))
}

// Socket-level options kept (sk-opts.proto). Buffer sizes are kept only
// when the program set them (SO_BUF_LOCK): otherwise the kernel tunes them.
func dumpSkOpts(fd int) (*pb.SkOptsEntry, error) {
	geti := func(level, opt int, name string) (int, error) {
		v, err := unix.GetsockoptInt(fd, level, opt)
		if err != nil {
			return 0, fmt.Errorf("get %s: %w", name, os.NewSyscallError("getsockopt", err))
		}
		return v, nil
	}
	o := &pb.SkOptsEntry{}
	var err error
	var v int
	if v, err = geti(unix.SOL_SOCKET, unix.SO_SNDBUF, "SO_SNDBUF"); err != nil {
		return nil, err
	}
	o.SoSndbuf = u32p(uint32(v))
	if v, err = geti(unix.SOL_SOCKET, unix.SO_RCVBUF, "SO_RCVBUF"); err != nil {
		return nil, err
	}
	o.SoRcvbuf = u32p(uint32(v))
	if v, err = geti(unix.SOL_SOCKET, unix.SO_BUF_LOCK, "SO_BUF_LOCK"); err != nil {
		return nil, err
	}
	o.SoBufLock = u32p(uint32(v))
	if err := getSockTimeouts(fd, o); err != nil {
		return nil, err
	}
	bools := []struct {
		opt  int
		name string
		dst  **bool
	}{
		{unix.SO_REUSEADDR, "SO_REUSEADDR", &o.Reuseaddr}, {unix.SO_REUSEPORT, "SO_REUSEPORT", &o.SoReuseport},
		{unix.SO_BROADCAST, "SO_BROADCAST", &o.SoBroadcast}, {unix.SO_KEEPALIVE, "SO_KEEPALIVE", &o.SoKeepalive},
		{unix.SO_DONTROUTE, "SO_DONTROUTE", &o.SoDontroute}, {unix.SO_NO_CHECK, "SO_NO_CHECK", &o.SoNoCheck},
	}
	for _, b := range bools {
		if v, err = geti(unix.SOL_SOCKET, b.opt, b.name); err != nil {
			return nil, err
		}
		*b.dst = boolp(v != 0)
	}
	ints := []struct {
		opt  int
		name string
		dst  **uint32
	}{
		{unix.SO_PRIORITY, "SO_PRIORITY", &o.SoPriority}, {unix.SO_RCVLOWAT, "SO_RCVLOWAT", &o.SoRcvlowat},
		{unix.SO_MARK, "SO_MARK", &o.SoMark}, {unix.SO_OOBINLINE, "SO_OOBINLINE", &o.SoOobinline},
	}
	for _, i := range ints {
		if v, err = geti(unix.SOL_SOCKET, i.opt, i.name); err != nil {
			return nil, err
		}
		*i.dst = u32p(uint32(v))
	}
	l, err := unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER)
	if err != nil {
		return nil, fmt.Errorf("get SO_LINGER: %w", os.NewSyscallError("getsockopt", err))
	}
	if l.Onoff != 0 {
		o.SoLinger = u32p(uint32(l.Linger))
	}
	if dev, err := unix.GetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE); err == nil && dev != "" {
		o.SoBoundDev = strp(dev)
	}
	return o, nil
}

// restoreSkOpts sets what dumpSkOpts read. SO_REUSEADDR is left to the
// caller (it is on while binding).
func restoreSkOpts(fd int, o *pb.SkOptsEntry) error {
	set := func(level, opt, v int, name string) error {
		if err := unix.SetsockoptInt(fd, level, opt, v); err != nil {
			return fmt.Errorf("set %s: %w", name, os.NewSyscallError("setsockopt", err))
		}
		return nil
	}
	b2i := func(b bool) int {
		if b {
			return 1
		}
		return 0
	}
	// The kernel doubles the size given and getsockopt reports the doubled
	// value; the FORCE variants ignore the sysctl limits, as the dumped
	// size was allowed once.
	if o.GetSoBufLock()&1 != 0 { // SOCK_SNDBUF_LOCK
		if err := set(unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, int(o.GetSoSndbuf()/2), "SO_SNDBUFFORCE"); err != nil {
			return err
		}
	}
	if o.GetSoBufLock()&2 != 0 { // SOCK_RCVBUF_LOCK
		if err := set(unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, int(o.GetSoRcvbuf()/2), "SO_RCVBUFFORCE"); err != nil {
			return err
		}
	}
	if o.SoBufLock != nil {
		if err := set(unix.SOL_SOCKET, unix.SO_BUF_LOCK, int(o.GetSoBufLock()), "SO_BUF_LOCK"); err != nil {
			return err
		}
	}
	if err := setSockTimeouts(fd, o); err != nil {
		return err
	}
	for _, b := range []struct {
		opt  int
		name string
		v    *bool
	}{
		{unix.SO_REUSEPORT, "SO_REUSEPORT", o.SoReuseport}, {unix.SO_BROADCAST, "SO_BROADCAST", o.SoBroadcast},
		{unix.SO_KEEPALIVE, "SO_KEEPALIVE", o.SoKeepalive}, {unix.SO_DONTROUTE, "SO_DONTROUTE", o.SoDontroute},
		{unix.SO_NO_CHECK, "SO_NO_CHECK", o.SoNoCheck},
	} {
		if b.v != nil && *b.v {
			if err := set(unix.SOL_SOCKET, b.opt, b2i(*b.v), b.name); err != nil {
				return err
			}
		}
	}
	for _, i := range []struct {
		opt  int
		name string
		v    *uint32
		def  uint32
	}{
		{unix.SO_PRIORITY, "SO_PRIORITY", o.SoPriority, 0}, {unix.SO_RCVLOWAT, "SO_RCVLOWAT", o.SoRcvlowat, 1},
		{unix.SO_MARK, "SO_MARK", o.SoMark, 0}, {unix.SO_OOBINLINE, "SO_OOBINLINE", o.SoOobinline, 0},
	} {
		if i.v != nil && *i.v != i.def {
			if err := set(unix.SOL_SOCKET, i.opt, int(*i.v), i.name); err != nil {
				return err
			}
		}
	}
	if o.SoLinger != nil {
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: int32(o.GetSoLinger())}); err != nil {
			return fmt.Errorf("set SO_LINGER: %w", os.NewSyscallError("setsockopt", err))
		}
	}
	if dev := o.GetSoBoundDev(); dev != "" {
		if err := unix.BindToDevice(fd, dev); err != nil {
			return fmt.Errorf("set SO_BINDTODEVICE %s: %w", dev, os.NewSyscallError("setsockopt", err))
		}
	}
	return nil
}

// openInet creates the socket of entry e in crtools.
func (r *Restorer) openInet(e *pb.FileEntry) (*os.File, error) {
	ie := e.GetIsk()
	if err := r.checkInet(ie); err != nil {
		return nil, err
	}
	fd, err := unix.Socket(int(ie.GetFamily()), int(ie.GetType())|unix.SOCK_CLOEXEC, int(ie.GetProto()))
	if err != nil {
		return nil, fmt.Errorf("restore inet socket %d: %w", ie.GetIno(), os.NewSyscallError("socket", err))
	}
	if err := r.setupInet(fd, ie); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("restore inet socket %d: %w", ie.GetIno(), err)
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("inet socket %d", ie.GetIno())), nil
}

func (r *Restorer) setupInet(fd int, ie *pb.InetSkEntry) error {
	local, lap := wordsAddr(ie.GetSrcAddr(), ie.GetSrcPort(), ie.GetFamily())
	peer, pap := wordsAddr(ie.GetDstAddr(), ie.GetDstPort(), ie.GetFamily())
	if ie.GetFamily() == unix.AF_INET6 && ie.V6Only != nil {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, b2int(ie.GetV6Only())); err != nil {
			return fmt.Errorf("set IPV6_V6ONLY: %w", os.NewSyscallError("setsockopt", err))
		}
	}
	if err := restoreSkOpts(fd, ie.GetOpts()); err != nil {
		return err
	}
	tcp := ie.GetProto() == unix.IPPROTO_TCP
	if tcp && ie.GetState() == tcpEstablished {
		s := r.set.TCPStreams[ie.GetIno()]
		if s == nil {
			return fmt.Errorf("established connection %s -> %s has no tcp-stream image", lap, pap)
		}
		conn := netlock.Conn{Local: lap, Remote: pap}
		if err := restoreTCPStream(fd, local, peer, s); err != nil {
			return fmt.Errorf("restore TCP connection %s: %w", conn, err)
		}
		r.tcpConns = append(r.tcpConns, conn)
		// The connection exists again: the peer's packets find it.
		if err := netlock.Unlock(conn); err != nil {
			return err
		}
	} else if lap.Port() != 0 || !lap.Addr().IsUnspecified() {
		// The old socket is gone (a kill-dump) but its port may still be
		// held by a connection of it in TIME_WAIT: bind with SO_REUSEADDR.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return fmt.Errorf("set SO_REUSEADDR: %w", os.NewSyscallError("setsockopt", err))
		}
		if err := unix.Bind(fd, local); err != nil {
			return fmt.Errorf("bind to %s: %w", lap, os.NewSyscallError("bind", err))
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, b2int(ie.GetOpts().GetReuseaddr())); err != nil {
		return fmt.Errorf("set SO_REUSEADDR: %w", os.NewSyscallError("setsockopt", err))
	}
	if pkts := r.set.Queues[ie.GetId()]; !tcp && len(pkts) > 0 {
		// Before connect: a connected socket would drop datagrams from
		// another source.
		if err := requeueUDP(fd, ie, local, pkts); err != nil {
			return fmt.Errorf("queue %d datagrams on %s again: %w", len(pkts), lap, err)
		}
	}
	switch {
	case tcp && ie.GetState() == tcpListen:
		if err := unix.Listen(fd, int(ie.GetBacklog())); err != nil {
			return fmt.Errorf("listen on %s: %w", lap, os.NewSyscallError("listen", err))
		}
	case !tcp && ie.GetState() == tcpEstablished:
		if err := unix.Connect(fd, peer); err != nil {
			return fmt.Errorf("connect to %s: %w", pap, os.NewSyscallError("connect", err))
		}
	}
	// File status flags last: a blocking connect above, then O_NONBLOCK.
	if fl := int(ie.GetFlags()) & (unix.O_NONBLOCK | unix.O_ASYNC); fl != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl); err != nil {
			return fmt.Errorf("set file flags: %w", os.NewSyscallError("fcntl", err))
		}
	}
	return nil
}

// requeueUDP sends the saved datagrams to the restored socket fd (bound to
// local) from an unbound socket of the same family, and waits (bounded)
// until the last one is queued: on the loopback path delivery normally
// happens within the send.
func requeueUDP(fd int, ie *pb.InetSkEntry, local unix.Sockaddr, pkts []*Packet) error {
	// A socket bound to the unspecified address gets them on loopback.
	switch a := local.(type) {
	case *unix.SockaddrInet4:
		if a.Addr == [4]byte{} {
			local = &unix.SockaddrInet4{Port: a.Port, Addr: [4]byte{127, 0, 0, 1}}
		}
	case *unix.SockaddrInet6:
		if a.Addr == [16]byte{} {
			local = &unix.SockaddrInet6{Port: a.Port, Addr: [16]byte{15: 1}}
		}
	}
	s, err := unix.Socket(int(ie.GetFamily()), unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(s)
	for _, p := range pkts {
		if err := unix.Sendto(s, p.Data, 0, local); err != nil {
			return os.NewSyscallError("sendto", err)
		}
	}
	// SIOCINQ on UDP gives the size of the first datagram only: wait
	// until that one is queued (loopback delivers in order, normally
	// within the send itself).
	deadline := time.Now().Add(2 * time.Second)
	for {
		n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
		if err != nil {
			return os.NewSyscallError("ioctl(SIOCINQ)", err)
		}
		if n > 0 || len(pkts[0].Data) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the datagrams did not arrive")
		}
		time.Sleep(time.Millisecond)
	}
}

func b2int(b bool) int {
	if b {
		return 1
	}
	return 0
}

// CheckOptions refuses, before anything is created, images that need an
// option the restore was not given: established TCP connections need
// --tcp-established, file locks -l/--file-locks.
func (r *Restorer) CheckOptions() error {
	if !r.FileLocks && len(r.set.Locks) > 0 {
		l := r.set.Locks[0]
		return fmt.Errorf("the images hold file locks (%d; the first a %s lock of pid %d through fd %d): restore them with -l/--file-locks",
			len(r.set.Locks), lockKindName(l.GetFlag()), l.GetPid(), l.GetFd())
	}
	if r.TCPEstablished {
		return nil
	}
	for _, e := range r.set.Files {
		if err := r.checkInet(e.GetIsk()); err != nil {
			return err
		}
	}
	return nil
}

func (r *Restorer) checkInet(ie *pb.InetSkEntry) error {
	if r.TCPEstablished || ie == nil || ie.GetProto() != unix.IPPROTO_TCP || ie.GetState() != tcpEstablished {
		return nil
	}
	_, lap := wordsAddr(ie.GetSrcAddr(), ie.GetSrcPort(), ie.GetFamily())
	_, pap := wordsAddr(ie.GetDstAddr(), ie.GetDstPort(), ie.GetFamily())
	return fmt.Errorf("restore inet socket %d: established TCP connection %s -> %s: restore it with --tcp-established", ie.GetIno(), lap, pap)
}
