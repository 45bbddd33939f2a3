package files

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
)

// Terminals. With -j/--shell-job a terminal the task got from outside (the
// shell's pty or console) is recorded with its settings and, on restore,
// replaced by crtools' own terminal (Restorer.ShellTTY) with the dumped
// termios applied, so a full-screen program keeps its raw mode. Without -j
// the dump is refused. Pseudo-terminal pairs created inside the tree (a
// /dev/ptmx master) are not supported yet and are refused.

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

func (d *Dumper) dumpTTY(c *Collected, e *pb.FileEntry, f *os.File, st *unix.Stat_t, link string, flags uint32, fown *pb.FownEntry, desc string) error {
	maj, min := unix.Major(st.Rdev), unix.Minor(st.Rdev)
	if maj == 5 && min == 2 {
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
	if maj >= 136 && maj <= 143 {
		info.Pty = &pb.TtyPtyEntry{Index: u32p(uint32((maj-136)<<20 | min))}
	}
	if sid, pgrp, ttyNr, err := sessionOf(c.Pid); err == nil && uint64(ttyNr) == st.Rdev {
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

// sessionOf reads session, foreground process group and tty_nr from
// /proc/PID/stat (fields after the command name, which may hold spaces and
// parentheses).
func sessionOf(pid int) (sid, tpgid, ttyNr int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 6 {
		return 0, 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	// f[0] state, f[1] ppid, f[2] pgrp, f[3] session, f[4] tty_nr, f[5] tpgid
	sid, err = strconv.Atoi(f[3])
	if err == nil {
		ttyNr, err = strconv.Atoi(f[4])
	}
	if err == nil {
		tpgid, err = strconv.Atoi(f[5])
	}
	return sid, tpgid, ttyNr, err
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
	if r.ShellTTY == nil {
		return nil, fmt.Errorf("terminal file %d: restore with -j/--shell-job from a terminal", te.GetId())
	}
	f, err := reopen(r.ShellTTY, int(te.GetFlags())|unix.O_NOCTTY)
	if err != nil {
		return nil, err
	}
	if info := r.set.TtyInfo[te.GetTtyInfoId()]; info != nil && info.GetTermios() != nil {
		ti := info.GetTermios()
		t := unix.Termios{Iflag: ti.GetCIflag(), Oflag: ti.GetCOflag(), Cflag: ti.GetCCflag(), Lflag: ti.GetCLflag(),
			Line: uint8(ti.GetCLine()), Ispeed: ti.GetCIspeed(), Ospeed: ti.GetCOspeed()}
		for i, c := range ti.GetCCc() {
			if i < len(t.Cc) {
				t.Cc[i] = uint8(c)
			}
		}
		if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, &t); err != nil {
			f.Close()
			return nil, fmt.Errorf("set terminal settings: %w", os.NewSyscallError("ioctl(TCSETS)", err))
		}
	}
	if err := setFileFlags(f, te.GetFlags()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
