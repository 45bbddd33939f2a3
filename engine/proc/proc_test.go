package proc

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func statLine(comm string) string {
	// 52 fields as kernel 6.x prints them; comm in parentheses.
	return "4242 (" + comm + ") S 1 4242 4242 34816 4242 4194560 123 0 0 0 1 2 0 0 20 0 1 0 " +
		"555 2551808 213 18446744073709551615 94000000000000 94000000004096 140730000000000 0 0 0 0 0 " +
		"0 0 0 0 17 1 0 0 0 0 0 94000000008192 94000000009000 94000010000000 140730000001000 " +
		"140730000001010 140730000001010 140730000002000 0\n"
}

func TestParseStat(t *testing.T) {
	for _, comm := range []string{"cat", "(a) b)", "a b c", ")", "((", "x) S 1 2 3 (y", ""} {
		s, err := ParseStat([]byte(statLine(comm)))
		if err != nil {
			t.Fatalf("comm %q: %v", comm, err)
		}
		if s.Comm != comm || s.Pid != 4242 || s.State != 'S' || s.Ppid != 1 || s.Pgrp != 4242 {
			t.Errorf("comm %q: got %+v", comm, s)
		}
		if s.StartCode != 94000000000000 || s.EndCode != 94000000004096 || s.StartStack != 140730000000000 {
			t.Errorf("comm %q: code/stack: %+v", comm, s)
		}
		if s.StartData != 94000000008192 || s.EndData != 94000000009000 || s.StartBrk != 94000010000000 ||
			s.ArgStart != 140730000001000 || s.ArgEnd != 140730000001010 || s.EnvStart != 140730000001010 ||
			s.EnvEnd != 140730000002000 || s.ExitCode != 0 || s.ExitSignal != 17 {
			t.Errorf("comm %q: mm fields: %+v", comm, s)
		}
		if s.Session != 4242 || s.TtyNr != 34816 || s.Tpgid != 4242 {
			t.Errorf("comm %q: session/terminal: %+v", comm, s)
		}
		if s.Flags != 4194560 || s.IsKernelThread() {
			t.Errorf("comm %q: flags %x", comm, s.Flags)
		}
	}
	bad := []string{"", "123", "123 (x", "x (y) S 1", "1 (x) S 1 2 3", "1 (x) SS " + strings.Repeat("0 ", 60),
		"1 (x) S " + strings.Repeat("z ", 60)}
	for _, b := range bad {
		if _, err := ParseStat([]byte(b)); err == nil {
			t.Errorf("ParseStat(%q) succeeded", b)
		}
	}
}

func TestParseStatSelfAndKthread(t *testing.T) {
	s, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.Pid != os.Getpid() || s.Ppid != os.Getppid() || s.StartBrk == 0 || s.ArgStart == 0 || s.IsKernelThread() {
		t.Errorf("self: %+v", s)
	}
	k, err := ReadStat(2) // kthreadd
	if err != nil {
		t.Fatal(err)
	}
	if !k.IsKernelThread() {
		t.Errorf("pid 2 is not a kernel thread: flags %x", k.Flags)
	}
	if k.TtyNr != 0 || k.Tpgid != -1 {
		t.Errorf("pid 2 has a terminal: tty_nr %d, tpgid %d", k.TtyNr, k.Tpgid)
	}
}

func TestParseStatus(t *testing.T) {
	in := "Name:\ta\\nb\\\\c\nUmask:\t0027\nState:\tS (sleeping)\nTgid:\t10\nNgid:\t0\nPid:\t11\nPPid:\t1\n" +
		"TracerPid:\t0\nUid:\t0\t1\t2\t3\nGid:\t4\t5\t6\t7\nFDSize:\t64\nGroups:\t1 2 30 \nNSpid:\t11\t1\nNSpgid:\t9\t0\nNSsid:\t8\t0\n" +
		"Threads:\t2\nSigQ:\t0/1000\nSigPnd:\t0000000000000100\nShdPnd:\t0000000000004000\n" +
		"SigBlk:\t0000000000010000\nSigIgn:\t0000000000001000\nSigCgt:\t0000000180000200\n" +
		"CapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n" +
		"CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t0\n"
	s, err := ParseStatus([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "a\nb\\c" || s.Umask != 027 || !s.HasUmask || s.State != 'S' || s.Tgid != 10 || s.Pid != 11 ||
		s.Uid != [4]uint32{0, 1, 2, 3} || s.Gid != [4]uint32{4, 5, 6, 7} || len(s.Groups) != 3 || s.Groups[2] != 30 ||
		s.SigPnd != 0x100 || s.ShdPnd != 0x4000 || s.SigBlk != 0x10000 || s.SigIgn != 0x1000 ||
		s.SigCgt != 0x180000200 || s.CapEff != 0x1ffffffffff || s.NoNewPrivs != 1 || s.Threads != 2 ||
		!slices.Equal(s.NSpid, []int{11, 1}) || !slices.Equal(s.NSpgid, []int{9, 0}) || !slices.Equal(s.NSsid, []int{8, 0}) {
		t.Errorf("got %+v", s)
	}
	// A comm with a newline cannot forge a TracerPid line: the kernel
	// escapes it, and a raw one (impossible from the kernel) is parsed
	// as a separate key at worst; the real key still wins by order.
	for _, b := range []string{"", "Name:\tx\n", strings.Replace(in, "Uid:\t0\t1\t2\t3", "Uid:\t0 1", 1),
		strings.Replace(in, "SigCgt:\t0000000180000200", "SigCgt:\tzz", 1)} {
		if _, err := ParseStatus([]byte(b)); err == nil {
			t.Errorf("ParseStatus(%q) succeeded", b)
		}
	}
}

func TestParseMaps(t *testing.T) {
	in := "55d1c0a00000-55d1c0a01000 r--p 00000000 fd:00 1234                       /usr/bin/with space\n" +
		"55d1c0a01000-55d1c0a02000 r-xp 00001000 fd:00 1234                       /usr/bin/with space\n" +
		"55d1c0a03000-55d1c0a04000 rw-s 00000000 00:01 99                         /dev/zero (deleted)\n" +
		"55d1c0a04000-55d1c0a05000 rw-p 00002000 fd:00 77                         /tmp/new\\012line (deleted)\n" +
		"55d1c0a05000-55d1c0a06000 ---p 00000000 00:00 0 \n" +
		"7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]\n" +
		"ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n"
	m, err := ParseMaps([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 7 {
		t.Fatalf("got %d mappings", len(m))
	}
	if m[0].Path != "/usr/bin/with space" || m[0].Start != 0x55d1c0a00000 || !m[0].Read || m[0].Write || m[0].Shared ||
		m[0].DevMajor != 0xfd || m[0].Inode != 1234 || !m[0].IsFile() {
		t.Errorf("m0 %+v", m[0])
	}
	if m[1].Offset != 0x1000 || !m[1].Exec {
		t.Errorf("m1 %+v", m[1])
	}
	if !m[2].Shared || m[2].Path != "/dev/zero (deleted)" || TrimDeleted(m[2].Path) != "/dev/zero" {
		t.Errorf("m2 %+v", m[2])
	}
	if m[3].Path != "/tmp/new\nline (deleted)" {
		t.Errorf("m3 path %q", m[3].Path)
	}
	if m[4].Path != "" || m[4].Read || m[4].IsFile() {
		t.Errorf("m4 %+v", m[4])
	}
	if m[5].Path != "[stack]" || m[6].End != 0xffffffffff601000 {
		t.Errorf("m5/6 %+v %+v", m[5], m[6])
	}
	for _, b := range []string{"zz\n", "1000-0000 rw-p 0 00:00 0\n", "1000-2000 rw-x 0 00:00 0\n",
		"1000-2000 rw-p 0 0000 0\n", "1000-2000 rw-p\n", "Rss: 4 kB\n", "1000-2000 rw-p 0 00:00 q\n"} {
		if _, err := ParseMaps([]byte(b)); err == nil {
			t.Errorf("ParseMaps(%q) succeeded", b)
		}
	}
}

func TestParseSmaps(t *testing.T) {
	in := "7f0000000000-7f0000004000 rw-p 00000000 00:00 0 \n" +
		"Size:                 16 kB\nRss:                   8 kB\nSwap:                  4 kB\n" +
		"VmFlags: rd wr mr mw me gd ac dd\n" +
		"7f0000004000-7f0000005000 r--p 00000000 00:00 0                  [vvar]\nRss: 0 kB\nVmFlags: rd mr pf io de dd\n"
	m, err := ParseMaps([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || m[0].Rss != 8192 || m[0].Swap != 4096 || !m[0].Flag("gd") || !m[0].Flag("dd") || m[0].Flag("sh") ||
		m[1].Path != "[vvar]" || !m[1].Flag("io") {
		t.Errorf("got %+v", m)
	}
	if len(m) == 2 && (m[0].VmFlags != "rd wr mr mw me gd ac dd" || m[1].Rss != 0) {
		t.Errorf("VmFlags %q, Rss of [vvar] %d", m[0].VmFlags, m[1].Rss)
	}
	for _, v := range []string{"Rss: 4 MB", "Rss: kB", "Rss: 4 kB x", "Rss:", "Swap: 4", "Rss: -4 kB"} {
		if _, err := ParseMaps([]byte("1000-2000 rw-p 0 00:00 0\n" + v + "\n")); err == nil {
			t.Errorf("ParseMaps accepted %q", v)
		}
	}
	self, err := ReadSmaps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var stack bool
	for _, x := range self {
		if x.Path == "[stack]" && x.Flag("gd") {
			stack = true
		}
		if x.VmFlags == "" {
			t.Errorf("no VmFlags for %+v", x)
		}
	}
	if !stack {
		t.Error("no [stack] with gd flag in own smaps")
	}
}

func TestParseFdInfo(t *testing.T) {
	fi, err := ParseFdInfo([]byte("pos:\t7\nflags:\t02102002\nmnt_id:\t29\nino:\t123\neventfd-count: 5\n"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Pos != 7 || fi.Flags != 02102002 || fi.MntID != 29 || fi.Ino != 123 || len(fi.Extra) != 1 {
		t.Errorf("got %+v", fi)
	}
	for _, b := range []string{"", "pos:\t1\n", "pos: x\nflags: 0\n", "pos: 1\nflags: 9\n"} {
		if _, err := ParseFdInfo([]byte(b)); err == nil {
			t.Errorf("ParseFdInfo(%q) succeeded", b)
		}
	}
}

func TestParseTimers(t *testing.T) {
	in := "ID: 0\nsignal: 14/00007ffc12345678\nnotify: signal/pid.100\nClockID: 1\n" +
		"ID: 1\nsignal: 34/0000000000000000\nnotify: thread/tid.101\nClockID: 0\n" +
		"ID: 2\nsignal: 0/0000000000000000\nnotify: none/pid.100\nClockID: 7\n"
	ts, err := ParseTimers([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 3 || ts[0].Signo != 14 || ts[0].SivalPtr != 0x7ffc12345678 || ts[0].Notify != SigevSignal ||
		ts[0].NotifyID != 100 || ts[0].ClockID != 1 || ts[1].Notify != SigevThreadID || ts[1].NotifyID != 101 ||
		ts[2].Notify != SigevNone || ts[2].ClockID != 7 {
		t.Errorf("got %+v", ts)
	}
	for _, b := range []string{"signal: 1/0\n", "ID: x\n", "ID: 0\nnotify: bogus/pid.1\n", "ID: 0\nsignal: 1\n"} {
		if _, err := ParseTimers([]byte(b)); err == nil {
			t.Errorf("ParseTimers(%q) succeeded", b)
		}
	}
}

func TestParseAuxvChildren(t *testing.T) {
	a, err := ReadAuxv(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if len(a) < 4 || a[len(a)-2] != 0 {
		t.Errorf("auxv %v", a)
	}
	if _, err := ParseAuxv(make([]byte, 15)); err == nil {
		t.Error("odd auxv accepted")
	}
	c, err := ParseChildren([]byte("12 13 \n"))
	if err != nil || len(c) != 2 || c[1] != 13 {
		t.Errorf("children %v %v", c, err)
	}
	if _, err := ParseChildren([]byte("12 x")); err == nil {
		t.Error("bad children accepted")
	}
	if _, err := ParseHex([]byte("zz")); err == nil {
		t.Error("bad hex accepted")
	}
	if p, err := ReadPersonality(os.Getpid()); err != nil || p&0xff != 0 {
		t.Errorf("personality %x %v", p, err)
	}
}

func TestListNumbers(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fds, err := ListFds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSorted(fds) || !slices.Contains(fds, 0) || !slices.Contains(fds, int(f.Fd())) {
		t.Errorf("fds %v: not sorted or without 0 and %d", fds, f.Fd())
	}
	tids, err := ListTasks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSorted(tids) || !slices.Contains(tids, os.Getpid()) {
		t.Errorf("threads %v: not sorted or without %d", tids, os.Getpid())
	}
	if _, err := ListTasks(1 << 22); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("threads of a pid that does not exist: %v, want ErrNotExist", err)
	}
}

// TestReadLimits compares /proc/self/limits with prlimit, after setting
// a soft limit that is neither 0 nor unlimited.
func TestReadLimits(t *testing.T) {
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &old); err != nil {
		t.Fatal(err)
	}
	if old.Max == unix.RLIM_INFINITY || old.Max > 12345 {
		if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 12345, Max: old.Max}); err != nil {
			t.Fatal(err)
		}
		defer unix.Setrlimit(unix.RLIMIT_CORE, &old)
	}
	got, err := ReadLimits(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for r := range got {
		var want unix.Rlimit
		if err := unix.Prlimit(os.Getpid(), r, nil, &want); err != nil {
			t.Fatal(err)
		}
		if got[r] != want {
			t.Errorf("limit %d: got %+v, prlimit says %+v", r, got[r], want)
		}
	}
}

// TestReadRecord: the one-piece files a dump reads come whole with
// ReadRecord (no read at their end), the same as ReadFile's.
func TestReadRecord(t *testing.T) {
	for _, name := range []string{"limits", "auxv", "personality", "oom_score_adj", "loginuid", "fdinfo/0"} {
		path := "/proc/self/" + name
		want, err := ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ReadRecord(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) || len(got) == 0 {
			t.Errorf("%s: ReadRecord %q, ReadFile %q", name, got, want)
		}
	}
	// A status and a stat change between reads (times, switches); they
	// must still come whole.
	st, err := ReadRecord("/proc/self/status")
	if err != nil || !bytes.HasPrefix(st, []byte("Name:")) || !bytes.Contains(st, []byte("\nSigIgn:")) ||
		!bytes.HasSuffix(st, []byte("\n")) {
		t.Errorf("status: %q, %v", st, err)
	}
	if _, err := ReadStat(os.Getpid()); err != nil {
		t.Error(err)
	}
}
