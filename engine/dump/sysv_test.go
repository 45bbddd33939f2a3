package dump

import (
	"errors"
	"os"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/ns"
	"github.com/crtools/crtools/engine/proc"
	"github.com/crtools/crtools/test/testenv"
)

func TestSysVKey(t *testing.T) {
	for _, c := range []struct {
		path string
		key  uint32
		ok   bool
	}{
		{"/SYSV00000000 (deleted)", 0, true},
		{"/SYSV5eed0001 (deleted)", 0x5eed0001, true},
		{"/SYSVffffffff (deleted)", 0xffffffff, true},
		{"/SYSV00000000", 0, false},           // a file of that name
		{"/SYSV0000000 (deleted)", 0, false},  // 7 digits
		{"/SYSVxyz00000 (deleted)", 0, false}, // not hex
		{"/SYSV+0000001 (deleted)", 0, false}, // a sign
		{"/tmp/SYSV00000000 (deleted)", 0, false},
		{"/SYSV00000000 (deleted) (deleted)", 0, false},
		{"", 0, false},
	} {
		key, ok := sysvKey(c.path)
		if key != c.key || ok != c.ok {
			t.Errorf("sysvKey(%q) = %#x, %v; want %#x, %v", c.path, key, ok, c.key, c.ok)
		}
	}
}

// TestSysVWhole: an attachment must cover its whole segment (restore
// attaches whole segments); split parts join into one attachment.
func TestSysVWhole(t *testing.T) {
	att := func(start, end, size uint64) []sysvAttach {
		return []sysvAttach{{pid: 1, shmid: 7, start: start, end: end, size: size}}
	}
	if err := checkSysVWhole(att(0x10000, 0x14000, 3*4096+100)); err != nil {
		t.Errorf("whole attachment refused: %v", err)
	}
	if err := checkSysVWhole(att(0x10000, 0x13000, 3*4096+100)); err == nil || !strings.Contains(err.Error(), "part of the attachment was unmapped") {
		t.Errorf("short attachment: %v", err)
	}
	// The second VMA of an attachment extends it; one from a later
	// offset with no start is refused.

	m2 := &proc.Mapping{Start: 0x12000, End: 0x14000, Inode: 7, Offset: 0x2000, Shared: true}
	atts := []sysvAttach{{pid: 1, shmid: 7, start: 0x10000, end: 0x12000, size: 0x4000}}
	atts, err := addSysV(atts, 1, m2, 0)
	if err != nil || len(atts) != 1 || atts[0].end != 0x14000 {
		t.Errorf("second part: %v %+v", err, atts)
	}
	if _, err := addSysV(nil, 1, m2, 0); err == nil || !strings.Contains(err.Error(), "from offset 0x2000") {
		t.Errorf("part without its start: %v", err)
	}

}

// TestAddSysVSegmentsClosesOnConflict: when a segment's number is taken
// by shared memory already collected, the files of the segments not taken
// as shmem objects are closed (Collect's error path closes only those it
// holds).
func TestAddSysVSegmentsClosesOnConflict(t *testing.T) {
	open := func() *os.File {
		f, err := os.Open("/dev/null")
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	segs := []ns.SysVShm{{ID: 7, Size: 4096, File: open()}, {ID: 8, Size: 4096, File: open()}}
	s := &dumpState{shmem: map[uint64]*shmemObj{7: {ino: 7, pid: 1}}}
	if err := s.addSysVSegments(segs, 1); err == nil {
		t.Fatal("no error for segment 7, whose number shared memory has")
	}
	s.closeShmemFiles()
	for _, g := range segs {
		if err := g.File.Close(); !errors.Is(err, os.ErrClosed) {
			t.Errorf("segment %d's file is open after the failed add (close: %v)", g.ID, err)
		}
	}
}

// TestCheckSysVOwnRmidForced: in an IPC namespace with
// kernel/shm_rmid_forced set (a new one, on a thread of the test), a
// segment that only the dumped tree attaches would go with the killed
// tree: checkSysVOwn refuses it, and takes it once another attachment
// keeps it.
func TestCheckSysVOwnRmidForced(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (a new IPC namespace)")
	}
	if err := testenv.InFreshIPCNS(func() error {
		if err := os.WriteFile("/proc/sys/kernel/shm_rmid_forced", []byte("1"), 0); err != nil {
			return err
		}
		id, err := unix.SysvShmGet(unix.IPC_PRIVATE, 4096, unix.IPC_CREAT|0o600)
		if err != nil {
			return err
		}
		mem, err := unix.SysvShmAttach(id, 0, 0) // the "tree's" one VMA
		if err != nil {
			return err
		}
		defer unix.SysvShmDetach(mem) // the last: it destroys the segment
		start := uint64(uintptr(unsafe.Pointer(&mem[0])))
		atts := []sysvAttach{{pid: os.Getpid(), shmid: uint64(id), start: start, end: start + 4096, size: 4096, vmas: 1}}
		if err := checkSysVOwn(atts); err == nil || !strings.Contains(err.Error(), "shm_rmid_forced") {
			t.Errorf("segment only the tree attaches, shm_rmid_forced 1: %v, want refused", err)
		}
		other, err := unix.SysvShmAttach(id, 0, 0)
		if err != nil {
			return err
		}
		defer unix.SysvShmDetach(other)
		if err := checkSysVOwn(atts); err != nil {
			t.Errorf("segment attached outside the tree too: %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
