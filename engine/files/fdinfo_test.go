package files

import (
	"testing"

	"github.com/crtools/crtools/engine/proc"
)

func TestParseFdinfo(t *testing.T) {
	fi, err := parseFdinfo("pos:\t12\nflags:\t02004002\nmnt_id:\t17\nino:\t1038\ntfd:        5 events: 80000019 data:        10000004d  pos:0 ino:40e sdev:10\nlock:\t1: POSIX  ADVISORY  WRITE 9339 fe:00:9978920 0 EOF\n")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Pos != 12 || fi.Flags != 0o2004002 || fi.MntID != 17 || fi.Ino != 1038 || len(fi.Lines) != 2 {
		t.Errorf("%+v", fi)
	}
	m := fields("tfd:" + fi.withPrefix("tfd:")[0])
	if m["tfd"] != "5" || m["events"] != "80000019" || m["data"] != "10000004d" || m["pos"] != "0" || m["ino"] != "40e" || m["sdev"] != "10" {
		t.Errorf("epoll fields %v", m)
	}
	for _, bad := range []string{"", "pos:\t1\n", "flags:\t9\n", "flags:\t0\npos: x\n", "flags:0\nino:-1\n"} {
		if _, err := parseFdinfo(bad); err == nil {
			t.Errorf("parseFdinfo(%q) accepted", bad)
		}
	}
}

func TestParseLockLine(t *testing.T) {
	for _, tc := range []struct {
		in   string
		ok   bool
		flag uint32
		len  int64
	}{
		{"1: FLOCK  ADVISORY  WRITE 9339 fe:00:9978919 0 EOF", true, FlFlock, 0},
		{"2: OFDLCK ADVISORY  READ -1 fe:00:9978919 10 14", true, FlOFD, 5},
		{"3: POSIX  ADVISORY  WRITE 1 00:2f:1 100 100", true, FlPosix, 1},
		{"4: LEASE  ACTIVE    READ 1 00:2f:1 0 EOF", false, 0, 0},
		{"5: POSIX  ADVISORY  WRITE 1 00:2f:1 10 5", false, 0, 0},
		{"6: POSIX  ADVISORY", false, 0, 0},
		{"7: POSIX  ADVISORY  WRITE 1 00:2f:1 x EOF", false, 0, 0},
	} {
		le, err := parseLockLine(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v", tc.in, err)
			continue
		}
		if tc.ok && (le.GetFlag() != tc.flag || le.GetLen() != tc.len) {
			t.Errorf("%q: %v", tc.in, le)
		}
	}
	if le, err := parseLockLine("1: -> POSIX  ADVISORY  WRITE 1 00:2f:1 0 EOF"); le != nil || err != nil {
		t.Errorf("waiter: %v %v", le, err)
	}
}

func TestHandlesAndMountNames(t *testing.T) {
	raw := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	if got := unpackHandle(packHandle(raw), len(raw)); string(got) != string(raw) {
		t.Errorf("handle round trip %x", got)
	}
	if got := proc.UnescapeOctal(`/mnt/a\040b`); got != "/mnt/a b" {
		t.Errorf("unescape %q", got)
	}
}
