package restore

import (
	"sync"

	"github.com/crtools/crtools/engine/files"
	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
)

// The images of a tree, decoded once by Load and read by the later phases.
// Structures are per task and per thread from the start so that trees and
// threads (issue 4) only add loops, not new shapes.

// imageSet is everything Load read from an images directory.
type imageSet struct {
	dir       string
	inventory *pb.InventoryEntry
	tasks     []*taskImage // pstree order: a parent before its children; tasks[0] is the root
	files     map[uint32]*pb.FileEntry
	shmem     map[uint64]*image.PageIndex // pagemap-shmem-<shmid>.img by shmid

	// fdOwners records, during restore, which task got each open file
	// first, so that other tasks share it (files.go).
	// Two lanes of RestoreState use it (lanes.go): fdOwnersMu guards it.
	fdOwners   map[uint32]fdOwner
	fdOwnersMu sync.Mutex
	special    *files.Restorer // pipes, sockets, ... (special.go)
	memfds     *memfdSet       // memfd.img (memfd.go)
	// seccomp tells whether a thread of the tree is under seccomp
	// (seccomp.go): the puppets are traced with PTRACE_O_SUSPEND_SECCOMP.
	seccomp bool
}

// taskImage is one process of the tree.
type taskImage struct {
	pid, ppid, pgid, sid int
	tids                 []int // threads, the leader (== pid) first

	cores   map[int]*pb.CoreEntry // by tid
	ids     *pb.TaskKobjIdsEntry
	mm      *pb.MmEntry
	pagemap *image.PageIndex
	fds     []*pb.FdinfoEntry
	fs      *pb.FsEntry
	// seccomp is the seccomp state of the threads under seccomp, by
	// tid; nil when none is (seccomp.go).
	seccomp map[int]*threadSeccomp

	parent   *taskImage
	children []*taskImage
}

// dead tells whether the task is a zombie.
func (t *taskImage) dead() bool { return t.core().GetTc().GetTaskState() == taskDead }

// leaderExited tells whether t's main thread had exited (pthread_exit in
// main) while its other threads ran on: the leader's core then holds the
// process's state (task_core_entry, ids) but no registers (no
// thread_info), for the leader had none. Restore creates the leader like
// any, and once the other threads exist makes it exit again (exitLeader).
func (t *taskImage) leaderExited() bool {
	return !t.dead() && len(t.tids) > 1 && t.core().GetThreadInfo() == nil
}

// core returns the leader's core entry.
func (t *taskImage) core() *pb.CoreEntry { return t.cores[t.pid] }

// VMA status bits of vma_entry.status (CRIU's image ABI).
const (
	vmaAreaRegular  = 1 << 0
	vmaAreaStack    = 1 << 1
	vmaAreaVsyscall = 1 << 2
	vmaAreaVdso     = 1 << 3
	vmaAreaHeap     = 1 << 5
	vmaFilePrivate  = 1 << 6
	vmaFileShared   = 1 << 7
	vmaAnonShared   = 1 << 8
	vmaAnonPrivate  = 1 << 9
	vmaAreaSysvipc  = 1 << 10
	vmaAreaSocket   = 1 << 11
	vmaAreaVvar     = 1 << 12
	vmaAreaAioring  = 1 << 13
	vmaAreaMemfd    = 1 << 14
	vmaUnsupp       = 1 << 31
)

// Task states of task_core_entry.task_state.
const (
	taskAlive   = 1
	taskDead    = 2
	taskStopped = 3
)
