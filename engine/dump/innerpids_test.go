package dump

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/files"
	"github.com/crtools/crtools/engine/image/pb"
)

// TestInnerFilePids: the pids engine/files recorded in crtools' pid
// namespace (a terminal's session and group, a file's owner, a lock's task)
// become the tree's own; an owner outside the tree becomes none, and an
// owner shared by two entries is renumbered once.
func TestInnerFilePids(t *testing.T) {
	s := &dumpState{special: files.NewDumper(files.Options{})}
	set := s.special.Set()
	fown := func(typ, pid uint32) *pb.FownEntry {
		return &pb.FownEntry{Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(0), PidType: proto.Uint32(typ), Pid: proto.Uint32(pid)}
	}
	task, group, outside, none := fown(1, 5001), fown(2, 5002), fown(1, 777), fown(0, 0)
	shared := fown(0, 5003) // a thread of 5001 (F_SETOWN_EX)
	set.Files = []*pb.FileEntry{
		{Type: pb.FdTypes_PIPE.Enum(), Pipe: &pb.PipeEntry{Fown: task}},
		{Type: pb.FdTypes_EVENTFD.Enum(), Efd: &pb.EventfdFileEntry{Fown: group}},
		{Type: pb.FdTypes_UNIXSK.Enum(), Usk: &pb.UnixSkEntry{Fown: outside}},
		{Type: pb.FdTypes_PIPE.Enum(), Pipe: &pb.PipeEntry{Fown: none}},
		{Type: pb.FdTypes_REG.Enum(), Reg: &pb.RegFileEntry{Fown: shared}},
		{Type: pb.FdTypes_REG.Enum(), Reg: &pb.RegFileEntry{Fown: shared}},
	}
	set.Locks = []*pb.FileLockEntry{{Pid: proto.Int32(5002), Fd: proto.Int32(3)}}
	set.TtyInfo = map[uint32]*pb.TtyInfoEntry{1: {Type: pb.TtyType_PTY.Enum(), Sid: proto.Uint32(5001), Pgrp: proto.Uint32(5002)}}
	// 5001 is the tree's init (1), 5002 its child (2), leader of a group;
	// 5003 a thread of 5001 (3); 5003's tid maps like a task's pid.
	s.innerFilePids(map[int]int{5001: 1, 5002: 2, 5003: 3})

	for _, c := range []struct {
		name    string
		o       *pb.FownEntry
		typ     uint32
		pid     uint32
		wantOwn int
	}{{"task", task, 1, 1, 1}, {"group", group, 2, 2, -2}, {"outside", outside, 0, 0, 0}, {"none", none, 0, 0, 0}, {"shared", shared, 0, 3, 3}} {
		if c.o.GetPidType() != c.typ || c.o.GetPid() != c.pid {
			t.Errorf("%s owner: type %d pid %d, want type %d pid %d", c.name, c.o.GetPidType(), c.o.GetPid(), c.typ, c.pid)
		}
		own, tid, _, ok := files.FownArgs(c.o)
		if own != c.wantOwn || ok != (c.wantOwn != 0) || tid != (c.name == "shared") {
			t.Errorf("%s owner: F_SETOWN %d (thread %v, set %v), want %d", c.name, own, tid, ok, c.wantOwn)
		}
	}
	if p := set.Locks[0].GetPid(); p != 2 {
		t.Errorf("lock of pid %d, want 2", p)
	}
	if tty := set.TtyInfo[1]; tty.GetSid() != 1 || tty.GetPgrp() != 2 {
		t.Errorf("terminal session %d group %d, want 1 and 2", tty.GetSid(), tty.GetPgrp())
	}
}
