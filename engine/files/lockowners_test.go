package files

import (
	"strings"
	"testing"

	"github.com/rs/zerolog"

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
