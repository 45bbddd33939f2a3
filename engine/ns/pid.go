package ns

import (
	"fmt"

	"github.com/crtools/crtools/engine/proc"
)

// Pid namespaces (-n pid). The dumped tree's root must be the init (PID 1)
// of its own pid namespace and every task of the tree must be in that
// namespace. As in CRIU's images, the pstree and the per-task image names
// carry the pids seen inside the namespace (the root is 1); restore
// creates a new pid namespace for the root and clones every task with its
// inner pid (engine/restore/ns.go), so the PIDs of crtools' namespace may
// be in use.

// InnerIDs are a task's pid, process group and session as seen inside its
// own pid namespace (the last column of NSpid, NSpgid, NSsid of
// /proc/PID/status). A group or session whose leader is outside the
// namespace reads 0.
type InnerIDs struct {
	Pid, Pgid, Sid int
}

// ReadInner reads the inner ids of tid (a task or a thread) of process pid.
func ReadInner(pid, tid int) (InnerIDs, error) {
	st, err := proc.ReadTaskStatus(pid, tid)
	if err != nil {
		return InnerIDs{}, fmt.Errorf("read pid namespace ids of %d: %w", tid, err)
	}
	in, err := InnerFromStatus(st)
	if err != nil {
		return InnerIDs{}, fmt.Errorf("read pid namespace ids of %d: %w", tid, err)
	}
	return in, nil
}

// InnerFromStatus takes the inner ids from a status already read.
func InnerFromStatus(st *proc.Status) (InnerIDs, error) {
	if len(st.NSpid) == 0 || len(st.NSpgid) == 0 || len(st.NSsid) == 0 {
		return InnerIDs{}, fmt.Errorf("no NSpid/NSpgid/NSsid lines in status")
	}
	return InnerIDs{Pid: st.NSpid[len(st.NSpid)-1], Pgid: st.NSpgid[len(st.NSpgid)-1], Sid: st.NSsid[len(st.NSsid)-1]}, nil
}
