package files

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/proc"
)

// Terminals. With -j/--shell-job a terminal the task got from outside (the
// shell's pty or console) is recorded with its settings and, on restore,
// replaced by crtools' own terminal (Restorer.ShellTTY) with the dumped
// termios applied, so a full-screen program keeps its raw mode. Without -j
// the dump is refused.
//
// A pseudo-terminal pair whose master (/dev/ptmx) is held in the tree is
// the tree's own: each end gets a TtyInfoEntry (type PTY, its rdev, the
// pair's index) as in CRIU, and restore opens a new pair with the same
// settings (termios, window size, packet mode, lock). The new pair has the
// number the kernel gives (the slave's /dev/pts name may differ: the
// kernel hands out numbers, and a task can only see its terminal's number
// change), and one open file description of the master is supported. Bytes
// in flight in the pair are kept (tty-data.img, below). A slave that is the
// controlling terminal of a session led by a task of the tree is recorded
// in the slave's info (sid, foreground group); restore makes it the
// session's controlling terminal again, with that foreground group
// (SessionTerminal, used by the restore engine in the session leader).

func isTTYDev(rdev uint64) bool {
	maj, min := unix.Major(rdev), unix.Minor(rdev)
	switch {
	case maj >= 136 && maj <= 143: // Unix98 pty slaves
		return true
	case maj == 4: // virtual consoles and serial
		return true
	case maj == 5 && (min == 0 || min == 1 || min == 2): // /dev/tty, /dev/console, /dev/ptmx
		return true
	}
	return false
}

func isPtmx(rdev uint64) bool { return unix.Major(rdev) == 5 && unix.Minor(rdev) == 2 }

func ptsIndex(rdev uint64) (uint32, bool) {
	maj, min := unix.Major(rdev), unix.Minor(rdev)
	if maj < 136 || maj > 143 {
		return 0, false
	}
	return (maj-136)*256 + min, true
}

// ptyMasters finds the pseudo-terminal masters held in the tree, by index.
func (d *Dumper) ptyMasters(pid int) map[uint32]bool {
	if d.masters != nil {
		return d.masters
	}
	d.masters = map[uint32]bool{}
	tree := d.opts.Tree
	if len(tree) == 0 {
		tree = []int{pid}
	}
	for _, p := range tree {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
		if err != nil {
			continue
		}
		for _, de := range ents {
			var st unix.Stat_t
			if unix.Stat(fmt.Sprintf("/proc/%d/fd/%s", p, de.Name()), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || !isPtmx(st.Rdev) {
				continue
			}
			fd, err := strconv.Atoi(de.Name())
			if err != nil {
				continue
			}
			f, err := d.getfd(p, fd)
			if err != nil {
				continue
			}
			if n, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCGPTN); err == nil {
				d.masters[uint32(n)] = true
			}
			f.Close()
		}
	}
	return d.masters
}

const ptyMasterInfo = 1 << 31 // tty info ids: master of pair N is N|ptyMasterInfo, its slave N

func (d *Dumper) dumpTTY(c *Collected, e *pb.FileEntry, f *os.File, st *unix.Stat_t, link string, flags uint32, fown *pb.FownEntry, desc string) error {
	idx, slave := ptsIndex(st.Rdev)
	if isPtmx(st.Rdev) || (slave && d.ptyMasters(c.Pid)[idx]) {
		return d.dumpPty(c, e, f, st, flags, fown)
	}
	if isPtmx(st.Rdev) {
		return fmt.Errorf("pseudo-terminal master %s: %w", link, ErrUnsupported)
	}
	if !d.opts.ShellJob {
		return fmt.Errorf("it is the terminal %s; dump with -j/--shell-job to restore the task on crtools' terminal", link)
	}
	typ := pb.TtyType_EXT_TTY
	info := &pb.TtyInfoEntry{
		Id: u32p(c.ID), Type: &typ, Locked: boolp(false), Exclusive: boolp(false), PacketMode: boolp(false),
		Sid: u32p(0), Pgrp: u32p(0), Rdev: u32p(uint32(st.Rdev)),
	}
	if slave {
		info.Pty = &pb.TtyPtyEntry{Index: u32p(idx)}
	}
	if sid, pgrp, ttyNr, err := d.sessionOf(c.Pid); err == nil && uint64(ttyNr) == st.Rdev {
		info.Sid, info.Pgrp = u32p(uint32(sid)), u32p(uint32(pgrp))
	}
	if t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
		info.Termios = termiosEntry(t)
	}
	if w, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil {
		info.Winsize = &pb.WinsizeEntry{WsRow: u32p(uint32(w.Row)), WsCol: u32p(uint32(w.Col)), WsXpixel: u32p(uint32(w.Xpixel)), WsYpixel: u32p(uint32(w.Ypixel))}
	}
	if _, ok := d.set.TtyInfo[uint32(st.Rdev)]; !ok {
		info.Id = u32p(uint32(st.Rdev))
		d.set.TtyInfo[uint32(st.Rdev)] = info
	}
	e.Tty = &pb.TtyFileEntry{Id: u32p(c.ID), TtyInfoId: u32p(uint32(st.Rdev)), Flags: u32p(flags), Fown: fown}
	return nil
}

// sessionOf returns session, foreground process group and tty_nr of pid,
// from the /proc/PID/stat the caller read already (Options.TaskStat), else
// from a fresh one.
func (d *Dumper) sessionOf(pid int) (sid, tpgid, ttyNr int, err error) {
	var st *proc.Stat
	if d.opts.TaskStat != nil {
		st = d.opts.TaskStat(pid)
	}
	if st == nil {
		if st, err = proc.ReadStat(pid); err != nil {
			return 0, 0, 0, err
		}
	}
	return st.Session, st.Tpgid, st.TtyNr, nil
}

func termiosEntry(t *unix.Termios) *pb.TermiosEntry {
	cc := make([]uint32, len(t.Cc))
	for i, c := range t.Cc {
		cc[i] = uint32(c)
	}
	return &pb.TermiosEntry{
		CIflag: u32p(t.Iflag), COflag: u32p(t.Oflag), CCflag: u32p(t.Cflag), CLflag: u32p(t.Lflag),
		CLine: u32p(uint32(t.Line)), CIspeed: u32p(t.Ispeed), COspeed: u32p(t.Ospeed), CCc: cc,
	}
}

func (r *Restorer) openTTY(e *pb.FileEntry) (*os.File, error) {
	te := e.GetTty()
	if info := r.set.TtyInfo[te.GetTtyInfoId()]; info.GetType() == pb.TtyType_PTY {
		return r.openPty(te, info)
	}
	if r.ShellTTY == nil {
		return nil, fmt.Errorf("terminal file %d: restore with -j/--shell-job from a terminal", te.GetId())
	}
	f, err := reopen(r.ShellTTY, int(te.GetFlags())|unix.O_NOCTTY)
	if err != nil {
		return nil, err
	}
	if info := r.set.TtyInfo[te.GetTtyInfoId()]; info != nil {
		if err := applyTermios(f, info); err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := setFileFlags(f, te.GetFlags()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// dumpPty records one end of a pair held in the tree.
func (d *Dumper) dumpPty(c *Collected, e *pb.FileEntry, f *os.File, st *unix.Stat_t, flags uint32, fown *pb.FownEntry) error {
	fd := int(f.Fd())
	master := isPtmx(st.Rdev)
	var idx uint32
	if master {
		n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
		if err != nil {
			return fmt.Errorf("get pseudo-terminal number: %w", os.NewSyscallError("ioctl(TIOCGPTN)", err))
		}
		idx = uint32(n)
	} else {
		idx, _ = ptsIndex(st.Rdev)
	}
	infoID := idx
	if master {
		infoID |= ptyMasterInfo
	}
	if _, ok := d.set.TtyInfo[infoID]; !ok {
		typ := pb.TtyType_PTY
		info := &pb.TtyInfoEntry{
			Id: u32p(infoID), Type: &typ, Locked: boolp(false), Exclusive: boolp(false), PacketMode: boolp(false),
			Sid: u32p(0), Pgrp: u32p(0), Rdev: u32p(uint32(st.Rdev)), Pty: &pb.TtyPtyEntry{Index: u32p(idx)},
		}
		// Termios and window size are the pair's (ioctls on the master
		// act on the slave side).
		if t, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
			info.Termios = termiosEntry(t)
		}
		if w, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ); err == nil {
			info.Winsize = &pb.WinsizeEntry{WsRow: u32p(uint32(w.Row)), WsCol: u32p(uint32(w.Col)), WsXpixel: u32p(uint32(w.Xpixel)), WsYpixel: u32p(uint32(w.Ypixel))}
		}
		if v, err := unix.IoctlGetInt(fd, unix.TIOCGEXCL); err == nil {
			info.Exclusive = boolp(v != 0)
		}
		if master {
			if v, err := unix.IoctlGetInt(fd, unix.TIOCGPTLCK); err == nil {
				info.Locked = boolp(v != 0)
			}
			if v, err := unix.IoctlGetInt(fd, unix.TIOCGPKT); err == nil {
				info.PacketMode = boolp(v != 0)
			}
		}
		if sid, pgrp := d.ptySession(c.Pid, idx); sid != 0 {
			info.Sid, info.Pgrp = u32p(uint32(sid)), u32p(uint32(pgrp))
		}
		d.set.TtyInfo[infoID] = info
		if master {
			if err := d.dumpPtyData(f, idx); err != nil {
				return err
			}
		}
	}
	e.Tty = &pb.TtyFileEntry{Id: u32p(c.ID), TtyInfoId: u32p(infoID), Flags: u32p(flags), Fown: fown}
	return nil
}

// ptySlaveRdev is the device number of the slave of pair idx.
func ptySlaveRdev(idx uint32) uint64 { return unix.Mkdev(136+idx/256, idx%256) }

// ptySession tells which session of the tree has the slave of pair idx as
// its controlling terminal (tty_nr of /proc/PID/stat), and the terminal's
// foreground process group. Only a session whose leader is in the tree
// counts: restore can only give the terminal to a leader it creates.
func (d *Dumper) ptySession(pid int, idx uint32) (sid, pgrp int) {
	if d.cttys == nil {
		d.cttys = map[uint64][2]int{}
		tree := d.opts.Tree
		if len(tree) == 0 {
			tree = []int{pid}
		}
		inTree := map[int]bool{}
		for _, p := range tree {
			inTree[p] = true
		}
		for _, p := range tree {
			s, tpgid, ttyNr, err := d.sessionOf(p)
			if err != nil || ttyNr == 0 || !inTree[s] {
				continue
			}
			d.cttys[uint64(ttyNr)] = [2]int{s, tpgid}
		}
	}
	v := d.cttys[ptySlaveRdev(idx)]
	if v[1] < 0 {
		v[1] = 0 // no foreground group
	}
	return v[0], v[1]
}

// SessionTerminal gives, for the session led by sid, a new open file of the
// restored slave that was its controlling terminal and the foreground
// process group it had (0: none); nil if the session had no terminal of
// the tree. The restore engine has the session leader make it its
// controlling terminal (TIOCSCTTY) and set the foreground (TIOCSPGRP)
// before the tasks run.
func (r *Restorer) SessionTerminal(sid int) (*os.File, int, error) {
	if r.set == nil || sid <= 0 {
		return nil, 0, nil
	}
	var ids []uint32
	for id := range r.set.TtyInfo {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		info := r.set.TtyInfo[id]
		if info.GetType() != pb.TtyType_PTY || int(info.GetSid()) != sid {
			continue
		}
		p, err := r.pty(info.GetPty().GetIndex())
		if err != nil {
			return nil, 0, fmt.Errorf("restore pseudo-terminal %d: %w", info.GetPty().GetIndex(), err)
		}
		path := fmt.Sprintf("/dev/pts/%d", p.index)
		f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY, 0)
		if err != nil {
			return nil, 0, fmt.Errorf("open the controlling terminal of session %d: %w", sid, err)
		}
		r.keep = append(r.keep, f)
		return f, int(info.GetPgrp()), nil
	}
	return nil, 0, nil
}

// ptyPair is a restored pseudo-terminal pair.
type ptyPair struct {
	master     *os.File
	index      int
	masterUsed bool
}

// pty creates (once) the pair for dumped index idx with the settings of
// its infos.
func (r *Restorer) pty(idx uint32) (*ptyPair, error) {
	if p, ok := r.ptys[idx]; ok {
		return p, nil
	}
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open a pseudo-terminal: %w", os.NewSyscallError("open", err))
	}
	m := os.NewFile(uintptr(fd), "ptmx")
	r.keep = append(r.keep, m)
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		return nil, os.NewSyscallError("ioctl(TIOCSPTLCK)", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		return nil, os.NewSyscallError("ioctl(TIOCGPTN)", err)
	}
	p := &ptyPair{master: m, index: n}
	r.ptys[idx] = p
	for _, info := range []*pb.TtyInfoEntry{r.set.TtyInfo[idx], r.set.TtyInfo[idx|ptyMasterInfo]} {
		if info == nil {
			continue
		}
		if err := applyTermios(m, info); err != nil {
			return nil, err
		}
		if w := info.GetWinsize(); w != nil {
			ws := unix.Winsize{Row: uint16(w.GetWsRow()), Col: uint16(w.GetWsCol()), Xpixel: uint16(w.GetWsXpixel()), Ypixel: uint16(w.GetWsYpixel())}
			if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &ws); err != nil {
				return nil, os.NewSyscallError("ioctl(TIOCSWINSZ)", err)
			}
		}
		if info.GetPacketMode() {
			if err := unix.IoctlSetPointerInt(fd, unix.TIOCPKT, 1); err != nil {
				return nil, os.NewSyscallError("ioctl(TIOCPKT)", err)
			}
		}
	}
	if err := r.restorePtyData(p, idx); err != nil {
		return nil, err
	}
	return p, nil
}

func (r *Restorer) openPty(te *pb.TtyFileEntry, info *pb.TtyInfoEntry) (*os.File, error) {
	p, err := r.pty(info.GetPty().GetIndex())
	if err != nil {
		return nil, fmt.Errorf("restore pseudo-terminal %d: %w", info.GetPty().GetIndex(), err)
	}
	var f *os.File
	if isPtmx(uint64(info.GetRdev())) {
		if p.masterUsed {
			return nil, fmt.Errorf("second open of the master of pseudo-terminal %d: %w", info.GetPty().GetIndex(), ErrUnsupported)
		}
		p.masterUsed = true
		f = p.master
	} else {
		path := fmt.Sprintf("/dev/pts/%d", p.index)
		fd, err := unix.Open(path, int(te.GetFlags())&^(unix.O_CREAT|unix.O_TRUNC|unix.O_EXCL)|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", path, os.NewSyscallError("open", err))
		}
		f = os.NewFile(uintptr(fd), path)
		r.keep = append(r.keep, f)
	}
	// The lock (unlockpt not called yet) is set last: a locked pair
	// refuses to open its slave.
	if isPtmx(uint64(info.GetRdev())) && info.GetLocked() {
		if err := unix.IoctlSetPointerInt(int(p.master.Fd()), unix.TIOCSPTLCK, 1); err != nil {
			return nil, os.NewSyscallError("ioctl(TIOCSPTLCK)", err)
		}
	}
	if err := setFileFlags(f, te.GetFlags()); err != nil {
		return nil, err
	}
	return f, nil
}

func applyTermios(f *os.File, info *pb.TtyInfoEntry) error {
	ti := info.GetTermios()
	if ti == nil {
		return nil
	}
	t := unix.Termios{Iflag: ti.GetCIflag(), Oflag: ti.GetCOflag(), Cflag: ti.GetCCflag(), Lflag: ti.GetCLflag(),
		Line: uint8(ti.GetCLine()), Ispeed: ti.GetCIspeed(), Ospeed: ti.GetCOspeed()}
	for i, c := range ti.GetCCc() {
		if i < len(t.Cc) {
			t.Cc[i] = uint8(c)
		}
	}
	if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, &t); err != nil {
		return fmt.Errorf("set terminal settings: %w", os.NewSyscallError("ioctl(TCSETS)", err))
	}
	return nil
}

// ShellForeground gives crtools' terminal (-j) back to the process group
// that had the dumped terminal in the foreground, so that a full-screen
// program keeps getting its input and SIGWINCH. With -j the tree lives in
// crtools' session (crtools(1): it inherits session and process group), so
// the group can own crtools' terminal. live takes a group as the images
// number it and returns its id as crtools sees it if the group was
// restored (the image's id inside a pid namespace of the tree's own
// differs), else 0: a foreground group outside the tree, or crtools' own,
// is left as it is. The caller runs this while the tasks are still
// stopped, before they run: a job started in the background would be
// stopped by SIGTTOU at its first terminal setting. It returns the group
// it made foreground (0: none). If the restored window size differs from
// the terminal's, the group gets a SIGWINCH (delivered once it runs) to
// redraw for the new size.
func (r *Restorer) ShellForeground(live func(pgid int) int) (int, error) {
	if r.ShellTTY == nil || r.set == nil {
		return 0, nil
	}
	for _, info := range r.set.TtyInfo {
		if info.GetType() != pb.TtyType_EXT_TTY || info.GetPgrp() == 0 {
			continue
		}
		pgrp := live(int(info.GetPgrp()))
		if pgrp == 0 {
			continue
		}
		fd := int(r.ShellTTY.Fd())
		cur, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
		if err != nil {
			// Not crtools' controlling terminal: nobody's foreground
			// can be set on it.
			return 0, fmt.Errorf("read the foreground process group of crtools' terminal (is it crtools' controlling terminal?): %w", os.NewSyscallError("ioctl(TIOCGPGRP)", err))
		}
		if cur != pgrp {
			if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, pgrp); err != nil {
				return 0, fmt.Errorf("make process group %d the foreground of crtools' terminal: %w", pgrp, os.NewSyscallError("ioctl(TIOCSPGRP)", err))
			}
		}
		if w := info.GetWinsize(); w != nil {
			if ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ); err == nil && (uint32(ws.Row) != w.GetWsRow() || uint32(ws.Col) != w.GetWsCol()) {
				_ = unix.Kill(-pgrp, unix.SIGWINCH)
			}
		}
		return pgrp, nil
	}
	return 0, nil
}

// Bytes in flight in a pair of the tree. A terminal cannot be read without
// consuming, so the dump reads what waits at each end (the slave's input
// queue, the master's input queue) while the tree is frozen and writes it
// straight back into the same pair; restore writes it into the new pair.
// Writing back goes through the other end with the slave in a raw mode (no
// echo, no signals, no input or output translation) so the bytes arrive
// as they were, then the pair's settings are put back. In canonical mode
// the slave's pending lines come back as one pushed chunk: no byte is lost,
// but a reader may get several lines in one read.

// rawTermios is t with every translation off: non-canonical, no echo, no
// signals, no CR/NL mapping, no output processing; reads return at once.
func rawTermios(t unix.Termios) unix.Termios {
	t.Lflag &^= unix.ICANON | unix.ECHO | unix.ECHOE | unix.ECHOK | unix.ECHONL | unix.ECHOCTL | unix.ECHOKE | unix.ISIG | unix.IEXTEN
	t.Iflag &^= unix.ICRNL | unix.INLCR | unix.IGNCR | unix.ISTRIP | unix.IUCLC | unix.IXON | unix.IXOFF | unix.PARMRK
	t.Oflag &^= unix.OPOST
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 0, 0
	return t
}

// drainTTY reads what waits in f's input queue (TIOCINQ says how much; the
// flip buffers are given a moment to land).
func drainTTY(f *os.File, packet bool) ([]byte, error) {
	fd := int(f.Fd())
	var out []byte
	buf := make([]byte, 4096)
	for quiet := 0; quiet < 3; {
		n, err := unix.IoctlGetInt(fd, unix.TIOCINQ)
		if err != nil {
			return nil, os.NewSyscallError("ioctl(TIOCINQ)", err)
		}
		if n == 0 {
			quiet++
			time.Sleep(time.Millisecond)
			continue
		}
		quiet = 0
		if n > len(buf) {
			n = len(buf)
		}
		got, err := unix.Read(fd, buf[:n])
		if err != nil {
			return nil, os.NewSyscallError("read", err)
		}
		b := buf[:got]
		if packet && len(b) > 0 {
			b = b[1:] // the packet-mode status byte
		}
		out = append(out, b...)
	}
	return out, nil
}

// injectTTY writes data into the pair at w and waits (bounded) until the
// other end r has it in its input queue.
func injectTTY(w, r *os.File, data []byte) error {
	for off := 0; off < len(data); {
		n, err := unix.Write(int(w.Fd()), data[off:])
		if err == unix.EAGAIN || err == unix.EINTR {
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			return os.NewSyscallError("write", err)
		}
		off += n
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		n, err := unix.IoctlGetInt(int(r.Fd()), unix.TIOCINQ)
		if err != nil {
			return os.NewSyscallError("ioctl(TIOCINQ)", err)
		}
		if n >= len(data) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d bytes arrived", n, len(data))
		}
		time.Sleep(time.Millisecond)
	}
}

// ptyData moves the queued bytes of a pair: from (dump) reads them
// out first, then data[0] (the slave's input) and data[1] (the master's)
// are written in. slave may be nil (no slave open: only the master's
// queue). The slave's settings are restored at the end.
func ptyData(master, slave *os.File, packet, read bool, data *[2][]byte) error {
	if slave == nil {
		if read {
			b, err := drainTTY(master, packet)
			if err != nil {
				return fmt.Errorf("read the master's queue: %w", err)
			}
			data[1] = b
		}
		if len(data[1]) > 0 {
			return fmt.Errorf("%d bytes for the master's queue but no slave to write them from", len(data[1]))
		}
		return nil
	}
	orig, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		return os.NewSyscallError("ioctl(TCGETS)", err)
	}
	raw := rawTermios(*orig)
	if err := unix.IoctlSetTermios(int(slave.Fd()), unix.TCSETS, &raw); err != nil {
		return os.NewSyscallError("ioctl(TCSETS)", err)
	}
	err = func() error {
		if read {
			var err error
			if data[0], err = drainTTY(slave, false); err != nil {
				return fmt.Errorf("read the slave's queue: %w", err)
			}
			if data[1], err = drainTTY(master, packet); err != nil {
				return fmt.Errorf("read the master's queue: %w", err)
			}
		}
		if len(data[0]) > 0 {
			if err := injectTTY(master, slave, data[0]); err != nil {
				return fmt.Errorf("write the slave's queue: %w", err)
			}
		}
		if len(data[1]) > 0 {
			if err := injectTTY(slave, master, data[1]); err != nil {
				return fmt.Errorf("write the master's queue: %w", err)
			}
		}
		return nil
	}()
	if serr := unix.IoctlSetTermios(int(slave.Fd()), unix.TCSETS, orig); err == nil && serr != nil {
		err = os.NewSyscallError("ioctl(TCSETS)", serr)
	}
	return err
}

// dumpPtyData saves (and puts back) the queued bytes of pair idx, whose
// master the tree holds as f. crtools opens the slave by its name (a
// locked pair, whose slave was never opened, has nothing queued; a slave
// closed before is closed again, which the master sees as before).
func (d *Dumper) dumpPtyData(f *os.File, idx uint32) error {
	var slave *os.File
	if s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", idx), os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0); err == nil {
		defer s.Close()
		slave = s
	}
	packet := false
	if v, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCGPKT); err == nil {
		packet = v != 0
	}
	var data [2][]byte
	if err := ptyData(f, slave, packet, true, &data); err != nil {
		return fmt.Errorf("queued bytes of pseudo-terminal %d: %w", idx, err)
	}
	if len(data[0]) > 0 {
		d.set.TtyData[idx] = data[0]
	}
	if len(data[1]) > 0 {
		d.set.TtyData[idx|ptyMasterInfo] = data[1]
	}
	return nil
}

// restorePtyData writes the saved queues into the new pair p (dumped index
// idx), before any task holds it.
func (r *Restorer) restorePtyData(p *ptyPair, idx uint32) error {
	data := [2][]byte{r.set.TtyData[idx], r.set.TtyData[idx|ptyMasterInfo]}
	if len(data[0]) == 0 && len(data[1]) == 0 {
		return nil
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", p.index), os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("open the slave of the new pseudo-terminal: %w", err)
	}
	// Kept open until the tasks hold the slave: closing the only slave
	// would hang the pair up for the master.
	r.keep = append(r.keep, s)
	return ptyData(p.master, s, false, false, &data)
}

func writeTtyData(dir string, set *Set) error {
	if len(set.TtyData) == 0 {
		return nil
	}
	var ids []uint32
	for id := range set.TtyData {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var m []proto.Message
	for _, id := range ids {
		m = append(m, &pb.TtyDataEntry{TtyId: u32p(id), Data: set.TtyData[id]})
	}
	return image.WriteFile(dir, image.TTYData, 0, m...)
}

func readTtyData(dir string, set *Set) error {
	if !image.Exists(dir, image.TTYData, 0) {
		return nil
	}
	es, err := image.ReadFile(dir, image.TTYData, 0)
	if err != nil {
		return err
	}
	for _, e := range es {
		t := e.Msg.(*pb.TtyDataEntry)
		set.TtyData[t.GetTtyId()] = append(set.TtyData[t.GetTtyId()], t.GetData()...)
	}
	return nil
}
