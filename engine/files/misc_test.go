package files

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
)

func init() {
	// A deleted file open read-write at offset 3, twice (one dup), and a
	// second open file description of the same deleted inode.
	helpers["ghost"] = func(dir string) ([]int, func() error) {
		p := filepath.Join(dir, "gone.txt")
		fd, _ := unix.Open(p, unix.O_RDWR|unix.O_CREAT, 0o640)
		unix.Write(fd, []byte("ghost contents"))
		unix.Seek(fd, 3, 0)
		fd2, _ := unix.Open(p, unix.O_RDONLY, 0)
		unix.Unlink(p)
		return []int{fd, fd2}, func() error {
			b := make([]byte, 64)
			n, _ := unix.Read(fd, b)
			if string(b[:n]) != "st contents" {
				return fmt.Errorf("read %q", b[:n])
			}
			return nil
		}
	}
}

func TestGhostFileContentsTravel(t *testing.T) {
	dir := t.TempDir()
	h := startHelper(t, "ghost", dir)

	small := newTestDumper(t, Options{GhostLimit: 4})
	if _, err := small.Dump(h.Pid, h.Fds[0]); err == nil || !strings.Contains(err.Error(), "ghost file limit") || !strings.Contains(err.Error(), "--link-remap") {
		t.Errorf("dump over the ghost limit: %v", err)
	}

	d := newTestDumper(t, Options{})
	cs := dumpAll(t, d, h.Pid, h.Fds)
	reg := cs[0].Entry.GetReg()
	if cs[0].Kind != pb.FdTypes_REG || reg.GetName() != filepath.Join(dir, "gone.txt") || reg.GetPos() != 3 {
		t.Errorf("ghost reg entry %v", reg)
	}
	g := d.Set().Ghosts[cs[0].ID]
	if g == nil || string(g.Data) != "ghost contents" || g.Entry.GetMode()&0o777 != 0o640 {
		t.Fatalf("ghost %+v", g)
	}
	if d.Set().Ghosts[cs[1].ID] != g {
		t.Error("second open of the same deleted inode did not share the ghost")
	}
	h.check()

	rs := NewRestorer(roundTrip(t, d.Set()), d.log)
	defer rs.Close()
	f, err := rs.Open(cs[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	f2, err := rs.Open(cs[1].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	n, _ := unix.Read(int(f.Fd()), b)
	if string(b[:n]) != "st contents" {
		t.Errorf("restored ghost reads %q at its offset", b[:n])
	}
	var st1, st2 unix.Stat_t
	unix.Fstat(int(f.Fd()), &st1)
	unix.Fstat(int(f2.Fd()), &st2)
	if st1.Nlink != 0 || st1.Ino != st2.Ino || st1.Mode&0o777 != 0o640 {
		t.Errorf("restored ghost: nlink %d, inodes %d/%d, mode %o", st1.Nlink, st1.Ino, st2.Ino, st1.Mode)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("restore left %v in the directory", ents)
	}
	unix.Pwrite(int(f.Fd()), []byte("!"), 6)
	if n, _ := unix.Pread(int(f2.Fd()), b, 0); string(b[:n]) != "ghost !ontents" {
		t.Errorf("two opens do not share the inode: %q", b[:n])
	}
}

func init() {
	// An O_TMPFILE file (linkable although it has no name) for --link-remap.
	helpers["tmpfile"] = func(dir string) ([]int, func() error) {
		fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR, 0o600)
		if err != nil {
			panic(err)
		}
		unix.Write(fd, []byte("tmpfile data"))
		return []int{fd}, func() error { return nil }
	}
}

func TestLinkRemap(t *testing.T) {
	dir := t.TempDir()
	h := startHelper(t, "tmpfile", dir)
	d := newTestDumper(t, Options{LinkRemap: true})
	c := dumpAll(t, d, h.Pid, h.Fds)[0]
	hidden := d.Set().LinkRemaps[c.ID]
	if hidden == "" || d.Set().Ghosts[c.ID] != nil {
		t.Fatalf("link remap %q ghost %v", hidden, d.Set().Ghosts[c.ID])
	}
	if b, err := os.ReadFile(hidden); err != nil || string(b) != "tmpfile data" {
		t.Fatalf("hidden name %s: %q %v", hidden, b, err)
	}
	h.kill()
	rs := NewRestorer(roundTrip(t, d.Set()), d.log)
	f, err := rs.Open(c.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	n, _ := unix.Pread(int(f.Fd()), b, 0)
	if string(b[:n]) != "tmpfile data" {
		t.Errorf("restored %q", b[:n])
	}
	// A failed restore keeps the hidden name (the file's only copy)
	// for another try.
	failed := NewRestorer(roundTrip(t, d.Set()), d.log)
	if _, err := failed.Open(c.ID, nil); err != nil {
		t.Fatal(err)
	}
	failed.KeepLinkRemaps()
	failed.Close()
	if b, err := os.ReadFile(hidden); err != nil || string(b) != "tmpfile data" {
		t.Errorf("hidden name after a failed restore: %q %v", b, err)
	}
	rs.Close()
	if _, err := os.Stat(hidden); !os.IsNotExist(err) {
		t.Errorf("hidden name still there after restore: %v", err)
	}

	// A failed dump removes the names it created.
	h2 := startHelper(t, "tmpfile", dir)
	d2 := newTestDumper(t, Options{LinkRemap: true})
	c2 := dumpAll(t, d2, h2.Pid, h2.Fds)[0]
	if err := d2.Rollback(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d2.Set().LinkRemaps[c2.ID]); !os.IsNotExist(err) {
		t.Errorf("rollback left the link-remap name: %v", err)
	}
}

func init() {
	helpers["locks"] = func(dir string) ([]int, func() error) {
		open := func(n string) int {
			fd, err := unix.Open(filepath.Join(dir, n), unix.O_RDWR|unix.O_CREAT, 0o644)
			if err != nil {
				panic(err)
			}
			return fd
		}
		a, b, c := open("flock"), open("ofd"), open("posix")
		unix.Flock(a, unix.LOCK_EX)
		unix.FcntlFlock(uintptr(b), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_RDLCK, Start: 10, Len: 5})
		unix.FcntlFlock(uintptr(c), unix.F_SETLK, &unix.Flock_t{Type: unix.F_WRLCK, Start: 100})
		return []int{a, b, c}, func() error { return nil }
	}
}

func TestFileLocks(t *testing.T) {
	dir := t.TempDir()
	h := startHelper(t, "locks", dir)
	d := newTestDumper(t, Options{})
	c, err := d.Dump(h.Pid, h.Fds[0])
	if err == nil || !strings.Contains(err.Error(), "-l/--file-locks") || !strings.Contains(err.Error(), filepath.Join(dir, "flock")) {
		t.Fatalf("dump of a locked file without -l: %v", err)
	}
	d = newTestDumper(t, Options{FileLocks: true})
	var got []string
	for _, fd := range h.Fds {
		c, err = d.Dump(h.Pid, fd)
		if err == nil || c == nil || c.Kind != pb.FdTypes_REG {
			t.Fatalf("dump regular file fd %d: %v (want ErrNotHandled with the locks)", fd, err)
		}
		for _, l := range c.Locks {
			got = append(got, fmt.Sprintf("%s/%d/%d+%d/fd%d", lockKindName(l.GetFlag()), l.GetType(), l.GetStart(), l.GetLen(), l.GetFd()))
		}
	}
	want := fmt.Sprintf("[flock/1/0+0/fd%d OFD/0/10+5/fd%d POSIX/1/100+0/fd%d]", h.Fds[0], h.Fds[1], h.Fds[2])
	if fmt.Sprint(got) != want {
		t.Fatalf("locks %v, want %s", got, want)
	}
	h.kill()

	// Restore: the engine opens the regular files; crtools takes the
	// flock and OFD locks on them and gets the POSIX one back to inject.
	rs := NewRestorer(roundTrip(t, d.Set()), d.log)
	defer rs.Close()
	if err := rs.CheckOptions(); err == nil || !strings.Contains(err.Error(), "-l/--file-locks") || !strings.Contains(err.Error(), fmt.Sprintf("flock lock of pid %d through fd %d", h.Pid, h.Fds[0])) {
		t.Errorf("restore check without FileLocks: %v", err)
	}
	rs.FileLocks = true
	if err := rs.CheckOptions(); err != nil {
		t.Errorf("restore check with FileLocks: %v", err)
	}
	var files []*os.File
	for i, n := range []string{"flock", "ofd", "posix"} {
		f, err := os.OpenFile(filepath.Join(dir, n), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
		posix, err := rs.TakeLocks(h.Pid, h.Fds[i], f)
		if err != nil {
			t.Fatal(err)
		}
		if (i == 2) != (len(posix) == 1) {
			t.Errorf("fd %d: posix locks to inject %v", h.Fds[i], posix)
		}
		if i == 2 {
			cmd, b := PosixLockArgs(posix[0])
			if cmd != unix.F_SETLK || len(b) != FlockSize || b[0] != unix.F_WRLCK || b[8] != 100 {
				t.Errorf("posix lock args %d %x", cmd, b)
			}
		}
	}
	other, _ := os.OpenFile(filepath.Join(dir, "flock"), os.O_RDWR, 0)
	defer other.Close()
	if err := unix.Flock(int(other.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != unix.EWOULDBLOCK {
		t.Errorf("flock not held after restore: %v", err)
	}
	ofd, _ := os.OpenFile(filepath.Join(dir, "ofd"), os.O_RDWR, 0)
	defer ofd.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Start: 12, Len: 1}
	if err := unix.FcntlFlock(ofd.Fd(), unix.F_OFD_GETLK, &lk); err != nil || lk.Type != unix.F_RDLCK || lk.Start != 10 || lk.Len != 5 {
		t.Errorf("OFD lock after restore: %v %+v", err, lk)
	}
}

func TestPosixLockArgsLayout(t *testing.T) {
	// struct flock on x86-64: short l_type, short l_whence, (pad), off_t
	// l_start at 8, off_t l_len at 16, pid_t l_pid at 24, (pad) = 32.
	if FlockSize != 32 {
		t.Fatalf("FlockSize %d", FlockSize)
	}
	_, b := PosixLockArgs(&pb.FileLockEntry{Type: u32p(unix.F_RDLCK), Start: i64p(0x0102), Len: i64p(0x0304)})
	if b[0] != 0 || b[8] != 2 || b[9] != 1 || b[16] != 4 || b[17] != 3 {
		t.Errorf("layout %x", b)
	}
}

func init() {
	helpers["fifo"] = func(path string) ([]int, func() error) {
		fd, err := unix.Open(path, unix.O_RDWR, 0)
		if err != nil {
			panic(err)
		}
		unix.Write(fd, []byte("fifo payload"))
		w, _ := unix.Open(path, unix.O_WRONLY, 0)
		return []int{fd, w}, func() error {
			b, _ := readAllNonblock(fd)
			return expectBytes("fifo", b, []byte("fifo payload"))
		}
	}
}

func TestFifoDataAndPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	h := startHelper(t, "fifo", path)
	d := newTestDumper(t, Options{})
	cs := dumpAll(t, d, h.Pid, h.Fds)
	fe := cs[0].Entry.GetFifo()
	if cs[0].Kind != pb.FdTypes_FIFO || fe.GetPipeId() != cs[1].Entry.GetFifo().GetPipeId() {
		t.Fatalf("fifo entries %v %v", fe, cs[1].Entry.GetFifo())
	}
	pd := d.Set().PipeData[fe.GetPipeId()]
	if pd == nil || string(pd.Data) != "fifo payload" {
		t.Fatalf("fifo data %+v", pd)
	}
	h.check()
	rs := NewRestorer(roundTrip(t, d.Set()), d.log)
	defer rs.Close()
	rf, err := rs.Open(cs[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	wf, err := rs.Open(cs[1].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	unix.Write(int(wf.Fd()), []byte("+"))
	b, _ := readAllNonblock(int(rf.Fd()))
	if string(b) != "fifo payload+" {
		t.Errorf("restored fifo %q", b)
	}
}

func openPty(t *testing.T) (master int, slavePath string) {
	t.Helper()
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(m) })
	unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0)
	n, _ := unix.IoctlGetInt(m, unix.TIOCGPTN)
	return m, fmt.Sprintf("/dev/pts/%d", n)
}

func init() {
	// The slave of a pair whose master the test holds: a terminal from
	// outside, like a shell's.
	helpers["tty-slave"] = func(path string) ([]int, func() error) {
		s, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY, 0)
		if err != nil {
			panic(err)
		}
		return []int{s}, func() error { return nil }
	}
	// A pair of its own, the slave without echo and with a window size.
	helpers["pty-pair"] = func(string) ([]int, func() error) {
		m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY, 0)
		if err != nil {
			panic(err)
		}
		unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0)
		n, _ := unix.IoctlGetInt(m, unix.TIOCGPTN)
		s, err := unix.Open(fmt.Sprintf("/dev/pts/%d", n), unix.O_RDWR|unix.O_NOCTTY, 0)
		if err != nil {
			panic(err)
		}
		tio, _ := unix.IoctlGetTermios(s, unix.TCGETS)
		tio.Lflag &^= unix.ECHO
		unix.IoctlSetTermios(s, unix.TCSETS, tio)
		unix.IoctlSetWinsize(m, unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 100})
		return []int{m, s}, func() error { return nil }
	}
}

func TestPtyPairInsideTheTree(t *testing.T) {
	h := startHelper(t, "pty-pair", "")
	d := newTestDumper(t, Options{})
	cs := dumpAll(t, d, h.Pid, h.Fds)
	mi := d.Set().TtyInfo[cs[0].Entry.GetTty().GetTtyInfoId()]
	si := d.Set().TtyInfo[cs[1].Entry.GetTty().GetTtyInfoId()]
	if mi.GetType() != pb.TtyType_PTY || si.GetType() != pb.TtyType_PTY || mi.GetPty().GetIndex() != si.GetPty().GetIndex() || mi.GetId() == si.GetId() {
		t.Fatalf("pair infos %v / %v", mi, si)
	}
	h.kill()
	rs := NewRestorer(roundTrip(t, d.Set()), d.log)
	defer rs.Close()
	m, err := rs.Open(cs[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := rs.Open(cs[1].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	tio, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if err != nil || tio.Lflag&unix.ECHO != 0 || tio.Lflag&unix.ICANON == 0 {
		t.Errorf("restored slave termios %+v %v (want ECHO off, ICANON on)", tio, err)
	}
	if ws, err := unix.IoctlGetWinsize(int(s.Fd()), unix.TIOCGWINSZ); err != nil || ws.Row != 40 || ws.Col != 100 {
		t.Errorf("restored window size %+v %v", ws, err)
	}
	// The two ends are one pair: a line typed on the master is read on
	// the slave.
	unix.Write(int(m.Fd()), []byte("hello\n"))
	unix.SetNonblock(int(s.Fd()), true)
	var got []byte
	buf := make([]byte, 64)
	for i := 0; i < 100 && !strings.Contains(string(got), "\n"); i++ {
		n, _ := unix.Read(int(s.Fd()), buf)
		if n > 0 {
			got = append(got, buf[:n]...)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if string(got) != "hello\n" {
		t.Errorf("slave read %q", got)
	}
}

func TestTerminalsRefusedWithoutShellJob(t *testing.T) {
	_, path := openPty(t)
	h := startHelper(t, "tty-slave", path)
	d := newTestDumper(t, Options{})
	_, err := d.Dump(h.Pid, h.Fds[0])
	if err == nil || !strings.Contains(err.Error(), "-j/--shell-job") || !strings.Contains(err.Error(), fmt.Sprintf("fd %d of pid %d (%s)", h.Fds[0], h.Pid, path)) {
		t.Errorf("terminal without -j: %v", err)
	}
	d = newTestDumper(t, Options{ShellJob: true})
	c, err := d.Dump(h.Pid, h.Fds[0])
	if err != nil {
		t.Fatal(err)
	}
	info := d.Set().TtyInfo[c.Entry.GetTty().GetTtyInfoId()]
	if info == nil || info.GetTermios() == nil || info.GetPty() == nil || info.GetType() != pb.TtyType_EXT_TTY {
		t.Fatalf("tty info %v", info)
	}
	// Restore on "crtools' terminal": here another pty of the test.
	_, mine := openPty(t)
	tty, err := os.OpenFile(mine, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	rs := NewRestorer(roundTrip(t, d.Set()), d.log)
	defer rs.Close()
	if _, err := rs.Open(c.ID, nil); err == nil || !strings.Contains(err.Error(), "--shell-job") {
		t.Errorf("restore of a terminal without a shell tty: %v", err)
	}
	rs.ShellTTY = tty
	f, err := rs.Open(c.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	var a, b unix.Stat_t
	unix.Fstat(int(f.Fd()), &a)
	unix.Fstat(int(tty.Fd()), &b)
	if a.Rdev != b.Rdev {
		t.Errorf("restored terminal is %x, want crtools' %x", a.Rdev, b.Rdev)
	}
}

func init() {
	// /dev/null opened through a node that is then removed.
	helpers["evasive"] = func(node string) ([]int, func() error) {
		fd, err := unix.Open(node, unix.O_RDWR, 0)
		if err != nil {
			panic(err)
		}
		unix.Unlink(node)
		return []int{fd}, func() error { return nil }
	}
}

func TestEvasiveDevices(t *testing.T) {
	node := filepath.Join(t.TempDir(), "mynull")
	if err := unix.Mknod(node, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatalf("mknod: %v", err)
	}
	h := startHelper(t, "evasive", node)
	d := newTestDumper(t, Options{})
	if _, err := d.Dump(h.Pid, h.Fds[0]); err == nil || !strings.Contains(err.Error(), "--evasive-devices") || !strings.Contains(err.Error(), node) {
		t.Fatalf("dump of a device whose node is gone: %v", err)
	}
	d = newTestDumper(t, Options{EvasiveDevices: true})
	c, err := d.Dump(h.Pid, h.Fds[0])
	if err != nil {
		t.Fatal(err)
	}
	reg := c.Entry.GetReg()
	var st unix.Stat_t
	if err := unix.Stat(reg.GetName(), &st); err != nil || st.Rdev != unix.Mkdev(1, 3) || reg.GetFlags()&unix.O_ACCMODE != unix.O_RDWR {
		t.Errorf("saved as %q flags %#o: rdev %x %v", reg.GetName(), reg.GetFlags(), st.Rdev, err)
	}
	// A device still reachable is left to the engine.
	null, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	if _, err := d.Dump(os.Getpid(), int(null.Fd())); !errors.Is(err, ErrNotHandled) {
		t.Errorf("/dev/null of the test: %v, want ErrNotHandled", err)
	}
}
