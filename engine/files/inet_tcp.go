package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/netlock"
)

// Established TCP connections (--tcp-established), with the kernel's
// repair mode (TCP_REPAIR, linux/tcp.h; CAP_NET_ADMIN):
//
// Dump, on crtools' copy of the frozen task's socket: lock the connection
// (engine/netlock: its packets are dropped both ways, so that nothing
// changes and neither side sees a reset), turn repair on, read the
// sequence numbers (TCP_REPAIR_QUEUE + TCP_QUEUE_SEQ: rcv_nxt of the
// receive queue, write_seq of the send queue), the queues themselves
// (recv(MSG_PEEK) reads the selected queue in repair mode, the send queue
// included), the negotiated options (tcp_info: timestamps, SACK, window
// scales; TCP_MAXSEG; TCP_TIMESTAMP) and the window (TCP_REPAIR_WINDOW).
// The socket is left in repair mode: when the dumped task is killed, a
// socket in repair mode is closed silently (no FIN, no RST). If the dump
// fails or the tree goes on running, Rollback / ReleaseTCP turn repair off
// and remove the lock.
//
// Restore: socket, repair on (which also lets it bind beside a restored
// listener of the same port), the sequence numbers minus the queued
// bytes, bind, connect (no SYN in repair mode: the socket is established
// at once), the options, the queues (sent in repair mode they go back to
// their queue, the send queue's as sent-but-unacknowledged data that the
// retransmission timer sends again), the window, repair off, unlock.

// TCP_REPAIR_QUEUE values and TCPI_OPT_* bits (linux/tcp.h).
const (
	tcpNoQueue   = 0
	tcpRecvQueue = 1
	tcpSendQueue = 2

	tcpiOptTimestamps = 1
	tcpiOptSack       = 2
	tcpiOptWscale     = 4

	tcpInfoOptionsOff = 5 // tcpi_options
	tcpInfoWscaleOff  = 6 // tcpi_snd_wscale:4, tcpi_rcv_wscale:4
	tcpRepairWindowSz = 20
)

// TCPStream is an established connection's state: the entry of
// tcp-stream-<inode>.img and its queues (receive queue, then send queue).
type TCPStream struct {
	Entry *pb.TcpStreamEntry
	Data  []byte
}

type repairedSock struct {
	fd   int
	conn netlock.Conn
}

func (d *Dumper) dumpTCPStream(fd int, conn netlock.Conn) (*TCPStream, error) {
	if err := netlock.Lock(conn); err != nil {
		return nil, err
	}
	d.log.Info().Msgf("locked TCP connection %s", conn)
	// Keep a descriptor of our own: repair mode must be turned off again
	// if the dump fails or the tree is not killed.
	keep, err := unix.Dup(fd)
	if err != nil {
		netlock.Unlock(conn)
		return nil, fmt.Errorf("keep socket: %w", os.NewSyscallError("dup", err))
	}
	d.repaired = append(d.repaired, repairedSock{keep, conn})
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
		return nil, fmt.Errorf("turn repair mode on: %w", os.NewSyscallError("setsockopt(TCP_REPAIR)", err))
	}
	s := &pb.TcpStreamEntry{}
	seq := func(q int) (uint32, error) {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q); err != nil {
			return 0, fmt.Errorf("select queue %d: %w", q, os.NewSyscallError("setsockopt(TCP_REPAIR_QUEUE)", err))
		}
		v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ)
		if err != nil {
			return 0, fmt.Errorf("get sequence of queue %d: %w", q, os.NewSyscallError("getsockopt(TCP_QUEUE_SEQ)", err))
		}
		return uint32(v), nil
	}
	ioc := func(req uint, name string) (uint32, error) {
		v, err := unix.IoctlGetInt(fd, req)
		if err != nil {
			return 0, fmt.Errorf("get queue length: %w", os.NewSyscallError("ioctl("+name+")", err))
		}
		return uint32(v), nil
	}
	var inqSeq, outqSeq, inqLen, outqLen, unsqLen uint32
	if inqSeq, err = seq(tcpRecvQueue); err != nil {
		return nil, err
	}
	if outqSeq, err = seq(tcpSendQueue); err != nil {
		return nil, err
	}
	if inqLen, err = ioc(unix.SIOCINQ, "SIOCINQ"); err != nil {
		return nil, err
	}
	if outqLen, err = ioc(unix.SIOCOUTQ, "SIOCOUTQ"); err != nil {
		return nil, err
	}
	if unsqLen, err = ioc(unix.SIOCOUTQNSD, "SIOCOUTQNSD"); err != nil {
		return nil, err
	}
	inq, err := peekQueue(fd, tcpRecvQueue, inqLen)
	if err != nil {
		return nil, err
	}
	outq, err := peekQueue(fd, tcpSendQueue, outqLen)
	if err != nil {
		return nil, err
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpNoQueue); err != nil {
		return nil, fmt.Errorf("deselect queue: %w", os.NewSyscallError("setsockopt(TCP_REPAIR_QUEUE)", err))
	}
	s.InqSeq, s.InqLen, s.OutqSeq, s.OutqLen, s.UnsqLen = &inqSeq, &inqLen, &outqSeq, &outqLen, &unsqLen

	info := make([]byte, 256)
	if n, err := getsockoptBytes(fd, unix.IPPROTO_TCP, unix.TCP_INFO, info); err != nil {
		return nil, fmt.Errorf("get TCP_INFO: %w", err)
	} else if n <= tcpInfoWscaleOff {
		return nil, fmt.Errorf("get TCP_INFO: %d bytes", n)
	}
	s.OptMask = u32p(uint32(info[tcpInfoOptionsOff]))
	s.SndWscale = u32p(uint32(info[tcpInfoWscaleOff] & 0xf))
	s.RcvWscale = u32p(uint32(info[tcpInfoWscaleOff] >> 4))
	mss, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_MAXSEG)
	if err != nil {
		return nil, fmt.Errorf("get TCP_MAXSEG: %w", os.NewSyscallError("getsockopt", err))
	}
	s.MssClamp = u32p(uint32(mss))
	if s.GetOptMask()&tcpiOptTimestamps != 0 {
		ts, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
		if err != nil {
			return nil, fmt.Errorf("get TCP_TIMESTAMP: %w", os.NewSyscallError("getsockopt", err))
		}
		s.Timestamp = u32p(uint32(ts))
	}
	win := make([]byte, tcpRepairWindowSz)
	if n, err := getsockoptBytes(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, win); err != nil {
		return nil, fmt.Errorf("get TCP_REPAIR_WINDOW: %w", err)
	} else if n != tcpRepairWindowSz {
		return nil, fmt.Errorf("get TCP_REPAIR_WINDOW: %d bytes, want %d (struct tcp_repair_window)", n, tcpRepairWindowSz)
	}
	le := binary.LittleEndian
	s.SndWl1, s.SndWnd, s.MaxWindow = u32p(le.Uint32(win[0:])), u32p(le.Uint32(win[4:])), u32p(le.Uint32(win[8:]))
	s.RcvWnd, s.RcvWup = u32p(le.Uint32(win[12:])), u32p(le.Uint32(win[16:]))
	for _, o := range []struct {
		opt int
		dst **bool
	}{{unix.TCP_NODELAY, &s.Nodelay}, {unix.TCP_CORK, &s.Cork}} {
		v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, o.opt)
		if err != nil {
			return nil, fmt.Errorf("get TCP option %d: %w", o.opt, os.NewSyscallError("getsockopt", err))
		}
		*o.dst = boolp(v != 0)
	}
	d.log.Debug().Msgf("TCP %s: rcv_nxt %d (%d queued) write_seq %d (%d queued, %d unsent) mss %d options %#x",
		conn, inqSeq, inqLen, outqSeq, outqLen, unsqLen, mss, s.GetOptMask())
	return &TCPStream{Entry: s, Data: append(inq, outq...)}, nil
}

// peekQueue reads n bytes of a queue without taking them.
func peekQueue(fd, q int, n uint32) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q); err != nil {
		return nil, fmt.Errorf("select queue %d: %w", q, os.NewSyscallError("setsockopt(TCP_REPAIR_QUEUE)", err))
	}
	buf := make([]byte, n)
	got, _, err := unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if err != nil {
		return nil, fmt.Errorf("read queue %d: %w", q, os.NewSyscallError("recvfrom", err))
	}
	if got != int(n) {
		return nil, fmt.Errorf("read queue %d: %d bytes of %d", q, got, n)
	}
	return buf, nil
}

func restoreTCPStream(fd int, local, peer unix.Sockaddr, ts *TCPStream) error {
	s := ts.Entry
	if uint64(len(ts.Data)) != uint64(s.GetInqLen())+uint64(s.GetOutqLen()) {
		return fmt.Errorf("queues of %d bytes, entry says %d + %d", len(ts.Data), s.GetInqLen(), s.GetOutqLen())
	}
	seti := func(opt, v int, name string) error {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, opt, v); err != nil {
			return fmt.Errorf("set %s: %w", name, os.NewSyscallError("setsockopt", err))
		}
		return nil
	}
	if err := seti(unix.TCP_REPAIR, unix.TCP_REPAIR_ON, "TCP_REPAIR"); err != nil {
		return err
	}
	for _, q := range []struct {
		q   int
		seq uint32
	}{{tcpRecvQueue, s.GetInqSeq() - s.GetInqLen()}, {tcpSendQueue, s.GetOutqSeq() - s.GetOutqLen()}} {
		if err := seti(unix.TCP_REPAIR_QUEUE, q.q, "TCP_REPAIR_QUEUE"); err != nil {
			return err
		}
		if err := seti(unix.TCP_QUEUE_SEQ, int(int32(q.seq)), "TCP_QUEUE_SEQ"); err != nil {
			return err
		}
	}
	if s.Timestamp != nil {
		if err := seti(unix.TCP_TIMESTAMP, int(int32(s.GetTimestamp())), "TCP_TIMESTAMP"); err != nil {
			return err
		}
	}
	if err := unix.Bind(fd, local); err != nil {
		return fmt.Errorf("bind: %w", os.NewSyscallError("bind", err))
	}
	if err := unix.Connect(fd, peer); err != nil {
		return fmt.Errorf("connect in repair mode: %w", os.NewSyscallError("connect", err))
	}
	// struct tcp_repair_opt {u32 opt_code; u32 opt_val;} per option.
	var opts []byte
	add := func(code, val uint32) {
		opts = binary.LittleEndian.AppendUint32(opts, code)
		opts = binary.LittleEndian.AppendUint32(opts, val)
	}
	add(unix.TCPOPT_MAXSEG, s.GetMssClamp())
	if s.GetOptMask()&tcpiOptWscale != 0 {
		add(unix.TCPOPT_WINDOW, s.GetSndWscale()|s.GetRcvWscale()<<16)
	}
	if s.GetOptMask()&tcpiOptSack != 0 {
		add(unix.TCPOPT_SACK_PERMITTED, 0)
	}
	if s.GetOptMask()&tcpiOptTimestamps != 0 {
		add(unix.TCPOPT_TIMESTAMP, 0)
	}
	if err := setsockoptBytes(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_OPTIONS, opts); err != nil {
		return fmt.Errorf("set TCP_REPAIR_OPTIONS: %w", err)
	}
	if err := fillQueue(fd, tcpRecvQueue, ts.Data[:s.GetInqLen()]); err != nil {
		return err
	}
	if err := fillQueue(fd, tcpSendQueue, ts.Data[s.GetInqLen():]); err != nil {
		return err
	}
	if s.SndWl1 != nil {
		win := make([]byte, 0, tcpRepairWindowSz)
		for _, v := range []uint32{s.GetSndWl1(), s.GetSndWnd(), s.GetMaxWindow(), s.GetRcvWnd(), s.GetRcvWup()} {
			win = binary.LittleEndian.AppendUint32(win, v)
		}
		if err := setsockoptBytes(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, win); err != nil {
			return fmt.Errorf("set TCP_REPAIR_WINDOW: %w", err)
		}
	}
	if err := seti(unix.TCP_NODELAY, b2int(s.GetNodelay()), "TCP_NODELAY"); err != nil {
		return err
	}
	if err := seti(unix.TCP_CORK, b2int(s.GetCork()), "TCP_CORK"); err != nil {
		return err
	}
	return seti(unix.TCP_REPAIR, unix.TCP_REPAIR_OFF, "TCP_REPAIR")
}

// fillQueue puts data back into a queue of a socket in repair mode.
func fillQueue(fd, q int, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q); err != nil {
		return fmt.Errorf("select queue %d: %w", q, os.NewSyscallError("setsockopt(TCP_REPAIR_QUEUE)", err))
	}
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("refill queue %d: %w", q, os.NewSyscallError("write", err))
		}
		data = data[n:]
	}
	return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpNoQueue)
}

// ReleaseTCP ends the dump's hold on established connections once the
// tree's fate is known. killed: the tree was killed, the sockets closed
// silently in repair mode; the lock stays until the restore. Otherwise
// (the tree runs on or stays stopped) repair mode is turned off and the
// lock removed.
func (d *Dumper) ReleaseTCP(killed bool) error {
	var errs []error
	for _, r := range d.repaired {
		if !killed {
			if err := unix.SetsockoptInt(r.fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF); err != nil {
				errs = append(errs, fmt.Errorf("turn repair mode off for %s: %w", r.conn, os.NewSyscallError("setsockopt", err)))
			}
			if err := netlock.Unlock(r.conn); err != nil {
				errs = append(errs, err)
			}
		}
		unix.Close(r.fd)
	}
	d.repaired = nil
	return errors.Join(errs...)
}

// LockedConns lists the connections the dump locked.
func (d *Dumper) LockedConns() []netlock.Conn {
	var c []netlock.Conn
	for _, r := range d.repaired {
		c = append(c, r.conn)
	}
	return c
}

func writeTCPStreams(dir string, set *Set) error {
	for ino, s := range set.TCPStreams {
		w, err := image.Create(dir, image.TCPStream, uint64(ino))
		if err != nil {
			return err
		}
		if err = w.Write(s.Entry); err == nil {
			err = w.WriteExtra(s.Data)
		}
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write tcp stream of socket %d: %w", ino, err)
		}
	}
	return nil
}

// readTCPStreams reads the stream image of every established TCP socket
// of set.Files.
func readTCPStreams(dir string, set *Set) error {
	for _, e := range set.Files {
		ie := e.GetIsk()
		if ie == nil || ie.GetProto() != unix.IPPROTO_TCP || ie.GetState() != tcpEstablished {
			continue
		}
		es, err := image.ReadFile(dir, image.TCPStream, uint64(ie.GetIno()))
		if err != nil {
			return fmt.Errorf("read tcp stream of socket %d: %w", ie.GetIno(), err)
		}
		if len(es) != 1 {
			return fmt.Errorf("tcp stream of socket %d: %d entries, want 1", ie.GetIno(), len(es))
		}
		set.TCPStreams[ie.GetIno()] = &TCPStream{Entry: es[0].Msg.(*pb.TcpStreamEntry), Data: es[0].Payload}
	}
	return nil
}
