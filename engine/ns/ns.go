// Package ns checkpoints and restores the namespaces of a process tree
// (crtools(1) -n/--namespaces).
//
// What is implemented:
//
//   - uts: hostname and domainname of the root task's UTS namespace
//     (utsns-ID.img); restore clones the root task with CLONE_NEWUTS and
//     sets both names by injected syscalls in it (engine/restore/ns.go).
//
//   - ipc: the IPC sysctls of the root's IPC namespace (ipcns-var-ID.img)
//     and its SysV objects (sysv.go: ipcns-{shm,msg,sem}-ID.img); restore
//     clones the root with CLONE_NEWIPC and, from a crtools thread that
//     joined the new namespace, writes the sysctls and recreates the
//     objects with their ids, before any task attaches a segment.
//
//   - pid: the root is the init of its own pid namespace; images keep the
//     pids seen inside (pid.go) and restore clones the root with
//     CLONE_NEWPID and every task with its inner pid.
//
//   - net: loopback and veth links, addresses and routes (net.go);
//     restore creates the veth pairs with their outside ends in crtools'
//     namespace (--veth-pair).
//
//   - mnt: the mount table (mnt.go): tmpfs with its contents, proc,
//     sysfs, devpts, mqueue, bind mounts of directories crtools sees;
//     restore builds it under the -r/--root directory and pivot_roots.
//
// Everything else (user, cgroup and time namespaces, nested namespaces
// inside the tree, other mount kinds, network devices other than lo and
// veth, sockets inside a checkpointed network namespace) is refused with
// engine.ErrNotSupported rather than dumped incompletely.
//
// Dump rule: a task whose namespace differs from crtools' own must have
// that namespace checkpointed with -n, else its state would be restored
// into crtools' namespace; -n for a namespace the root shares with crtools
// is an error too (there is nothing of its own to save).
//
// Thread rule: reading or writing per-namespace state from crtools runs on
// a throwaway goroutine locked to its OS thread that setns()es in and back
// (inNamespace); if it cannot get back, the thread stays locked and dies
// with its goroutine.
package ns

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image/pb"
)

// Names of the namespaces -n knows, in crtools(1)'s order.
var Known = []string{"uts", "ipc", "mnt", "pid", "net"}

// Supported are the namespaces this package dumps and restores.
var Supported = map[string]bool{"uts": true, "ipc": true, "pid": true, "net": true, "mnt": true}

// CheckRequested refuses namespaces crtools cannot checkpoint yet.
func CheckRequested(requested []string) error {
	var bad []string
	for _, n := range requested {
		if !Supported[n] {
			bad = append(bad, n)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("checkpointing the %s namespace (-n %s): %w", strings.Join(bad, ", "), strings.Join(bad, ","), engine.ErrNotSupported)
	}
	return nil
}

// nsLink is the /proc/PID/ns/NAME link, e.g. "uts:[4026531838]"; "self"
// for crtools itself.
func nsLink(pid string, name string) (string, error) {
	l, err := os.Readlink("/proc/" + pid + "/ns/" + name)
	if err != nil {
		return "", fmt.Errorf("read %s namespace of %s: %w", name, pid, err)
	}
	return l, nil
}

// idOf returns the TaskKobjIdsEntry field of namespace name.
func idOf(ids *pb.TaskKobjIdsEntry, name string) uint32 {
	switch name {
	case "uts":
		return ids.GetUtsNsId()
	case "ipc":
		return ids.GetIpcNsId()
	case "net":
		return ids.GetNetNsId()
	case "mnt":
		return ids.GetMntNsId()
	case "pid":
		return ids.GetPidNsId()
	}
	return 0
}
