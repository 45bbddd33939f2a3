package files

import (
	"os"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
)

// TestCheckLockOwners: a lock whose pid is no task of the images would be
// silently lost by TakeLocks; the restore refuses it up front.
func TestCheckLockOwners(t *testing.T) {
	set := NewSet()
	set.Locks = []*pb.FileLockEntry{{Flag: u32p(FlFlock), Pid: i32p(2), Fd: i32p(44)}}
	r := NewRestorer(set, zerolog.Nop())
	isTask := func(pid int) bool { return pid == 1 || pid == 2 }
	if err := r.CheckLockOwners(isTask); err != nil {
		t.Errorf("lock of task 2: %v", err)
	}
	set.Locks = append(set.Locks, &pb.FileLockEntry{Flag: u32p(FlPosix), Pid: i32p(41234), Fd: i32p(43)})
	err := r.CheckLockOwners(isTask)
	if err == nil || !strings.Contains(err.Error(), "POSIX lock of pid 41234 through fd 43") {
		t.Errorf("lock of pid 41234, no task: err %v, want a refusal naming it", err)
	}
}

// TestDumpFownKinds: a process group as the owner is recorded as a group
// (F_GETOWN_EX: plain F_GETOWN returns it negated, which the syscall
// convention reads as an errno for a group below 4096, always so in a
// young pid namespace), and a thread as a thread.
func TestDumpFownKinds(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	pg := unix.Getpgrp()
	if _, err := unix.FcntlInt(r.Fd(), unix.F_SETOWN, -pg); err != nil {
		t.Fatalf("F_SETOWN -%d: %v", pg, err)
	}
	o, err := dumpFown(r)
	if err != nil {
		t.Fatalf("dumpFown: %v", err)
	}
	if o.GetPidType() != 2 || o.GetPid() != uint32(pg) {
		t.Errorf("owner type %d pid %d, want group (2) %d", o.GetPidType(), o.GetPid(), pg)
	}
	own, tid, _, ok := FownArgs(o)
	if own != -pg || tid || !ok {
		t.Errorf("FownArgs: own %d thread %v set %v, want %d false true", own, tid, ok, -pg)
	}
	// A thread as the owner (F_SETOWN_EX F_OWNER_TID) stays a thread.
	if err := setOwnEx(int(w.Fd()), fOwnerEx{Type: fOwnerTID, Pid: int32(unix.Gettid())}); err != nil {
		t.Fatal(err)
	}
	if o, err = dumpFown(w); err != nil {
		t.Fatalf("dumpFown: %v", err)
	}
	if o.GetPidType() != 0 || o.GetPid() != uint32(unix.Gettid()) {
		t.Errorf("owner type %d pid %d, want thread (0) %d", o.GetPidType(), o.GetPid(), unix.Gettid())
	}
	if own, tid, _, _ := FownArgs(o); own != unix.Gettid() || !tid {
		t.Errorf("FownArgs: own %d thread %v, want %d true", own, tid, unix.Gettid())
	}
}
