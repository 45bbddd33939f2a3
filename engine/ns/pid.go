package ns

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
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
	path := fmt.Sprintf("/proc/%d/task/%d/status", pid, tid)
	f, err := os.Open(path)
	if err != nil {
		return InnerIDs{}, fmt.Errorf("read pid namespace ids of %d: %w", tid, err)
	}
	defer f.Close()
	var out InnerIDs
	found := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int
		switch key {
		case "NSpid":
			dst = &out.Pid
		case "NSpgid":
			dst = &out.Pgid
		case "NSsid":
			dst = &out.Sid
		default:
			continue
		}
		f := strings.Fields(val)
		if len(f) == 0 {
			return InnerIDs{}, fmt.Errorf("parse %s of %s: empty", key, path)
		}
		v, err := strconv.Atoi(f[len(f)-1])
		if err != nil {
			return InnerIDs{}, fmt.Errorf("parse %s of %s: %w", key, path, err)
		}
		*dst = v
		found++
	}
	if err := sc.Err(); err != nil {
		return InnerIDs{}, fmt.Errorf("read %s: %w", path, err)
	}
	if found != 3 {
		return InnerIDs{}, fmt.Errorf("read %s: no NSpid/NSpgid/NSsid lines", path)
	}
	return out, nil
}
