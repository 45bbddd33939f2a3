package ns

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/proc"
)

// Dump is the namespace state of a tree, ready to be written.
type Dump struct {
	uts   *pb.UtsnsEntry
	utsID uint32
	ipc   *pb.IpcVarEntry
	ipcID uint32
	sysv  *sysvDump // SysV objects of the ipc namespace (sysv.go)
	net   *netDump
	mnt   *mntDump
}

// Seen is what the caller read of the frozen tree already, so that
// CollectWith reads nothing twice; a nil Link or RootStatus is read from
// /proc.
type Seen struct {
	// Link returns /proc/PID/ns/NAME's target, as os.Readlink would.
	Link func(pid int, name string) (string, error)
	// RootStatus is the root task's /proc status (-n pid: its inner ids).
	RootStatus *proc.Status
	// Socket tells whether task pid holds a socket (-n net refuses it):
	// the first such descriptor and its /proc/PID/fd link
	// ("socket:[123]"), ok false if none. The caller's list must be of
	// every descriptor of the task. Required with -n net (the dump
	// engine lists every descriptor anyway: no second walk of /proc/PID/fd).
	Socket func(pid int) (fd int, link string, ok bool)
}

// CollectWith checks the namespaces of every task of the tree against
// crtools' own and the requested ones, and reads the requested namespaces
// of the root. pids[0] is the root; ids[i] are the kobj ids of pids[i]
// (their *_ns_id fields name the images). seen is what the caller read
// already.
func CollectWith(pids []int, ids []*pb.TaskKobjIdsEntry, requested []string, seen Seen) (_ *Dump, err error) {
	link := seen.Link
	if link == nil {
		link = func(pid int, name string) (string, error) { return nsLink(strconv.Itoa(pid), name) }
	}
	if len(pids) == 0 || len(ids) != len(pids) {
		return nil, fmt.Errorf("collect namespaces: %d tasks, %d ids", len(pids), len(ids))
	}
	if err := CheckRequested(requested); err != nil {
		return nil, err
	}
	req := map[string]bool{}
	for _, n := range requested {
		req[n] = true
	}
	root := pids[0]
	for _, name := range Known {
		self, err := nsLink("self", name)
		if err != nil {
			return nil, err
		}
		rootLink, err := link(root, name)
		if err != nil {
			return nil, err
		}
		if req[name] && rootLink == self {
			return nil, fmt.Errorf("checkpoint %s namespace (-n %s): the root task %d shares crtools' %s namespace %s, it has none of its own to checkpoint", name, name, root, name, self)
		}
		for _, pid := range pids {
			l, err := link(pid, name)
			if err != nil {
				return nil, err
			}
			switch {
			case !req[name] && l != self && Supported[name]:
				return nil, fmt.Errorf("task %d is in a %s namespace of its own (%s, crtools is in %s): checkpoint it with -n %s", pid, name, l, self, name)
			case !req[name] && l != self:
				return nil, fmt.Errorf("task %d is in a %s namespace of its own (%s): checkpointing %s namespaces (-n %s): %w", pid, name, l, name, name, engine.ErrNotSupported)
			case req[name] && l != rootLink:
				return nil, fmt.Errorf("task %d is in another %s namespace (%s) than the root task %d (%s): nested %s namespaces: %w", pid, name, l, root, rootLink, name, engine.ErrNotSupported)
			}
		}
	}
	if req["pid"] {
		var in InnerIDs
		var err error
		if seen.RootStatus != nil {
			in, err = InnerFromStatus(seen.RootStatus)
			if err != nil {
				err = fmt.Errorf("read pid namespace ids of %d: %w", root, err)
			}
		} else {
			in, err = ReadInner(root, root)
		}
		if err != nil {
			return nil, err
		}
		if in.Pid != 1 {
			return nil, fmt.Errorf("checkpoint pid namespace (-n pid): the root task %d is PID %d in its pid namespace; crtools checkpoints a pid namespace from its init (PID 1), dump that process instead", root, in.Pid)
		}
	}
	d := &Dump{}
	defer func() {
		if err != nil {
			d.sysv.close() // the SysV segments' files (sysv.go)
		}
	}()
	if req["uts"] {
		d.utsID = idOf(ids[0], "uts")
		err := inNamespace(root, "uts", func() error {
			var u unix.Utsname
			if err := unix.Uname(&u); err != nil {
				return fmt.Errorf("uname: %w", err)
			}
			d.uts = &pb.UtsnsEntry{Nodename: proto.String(unix.ByteSliceToString(u.Nodename[:])),
				Domainname: proto.String(unix.ByteSliceToString(u.Domainname[:]))}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read uts namespace of pid %d: %w", root, err)
		}
	}
	if req["ipc"] {
		d.ipcID = idOf(ids[0], "ipc")
		err := inNamespace(root, "ipc", func() error {
			v, err := readIPCVars()
			if err != nil {
				return err
			}
			d.ipc = v
			d.sysv, err = collectSysV()
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("read ipc namespace of pid %d: %w", root, err)
		}
	}
	if req["mnt"] {
		m, err := collectMnt(root, idOf(ids[0], "mnt"))
		if err != nil {
			return nil, err
		}
		d.mnt = m
	}
	if req["net"] {
		if seen.Socket == nil {
			return nil, fmt.Errorf("collect the network namespace: the caller gave no Seen.Socket to check the tasks' sockets with")
		}
		n, err := collectNet(root, pids, idOf(ids[0], "net"), seen.Socket)
		if err != nil {
			return nil, err
		}
		d.net = n
	}
	return d, nil
}

// Write writes the namespace images into dir.
func (d *Dump) Write(dir string) error {
	if d == nil {
		return nil
	}
	if d.uts != nil {
		if err := image.WriteFile(dir, image.UTSNS, uint64(d.utsID), d.uts); err != nil {
			return fmt.Errorf("write uts namespace: %w", err)
		}
	}
	if d.ipc != nil {
		if err := image.WriteFile(dir, image.IPCVar, uint64(d.ipcID), d.ipc); err != nil {
			return fmt.Errorf("write ipc namespace: %w", err)
		}
		if d.sysv != nil {
			if err := d.sysv.write(dir, d.ipcID); err != nil {
				return fmt.Errorf("write ipc namespace: %w", err)
			}
		}
	}
	if d.mnt != nil {
		if err := d.mnt.write(dir); err != nil {
			return err
		}
	}
	if d.net != nil {
		if err := d.net.write(dir); err != nil {
			return err
		}
	}
	return nil
}

// ipcSysctls are the per-IPC-namespace sysctls, in IpcVarEntry's order.
var ipcSysctls = []string{
	"kernel/msgmax", "kernel/msgmnb", "kernel/msgmni", "kernel/auto_msgmni",
	"kernel/shmmax", "kernel/shmall", "kernel/shmmni", "kernel/shm_rmid_forced",
	"fs/mqueue/queues_max", "fs/mqueue/msg_max", "fs/mqueue/msgsize_max",
	"fs/mqueue/msg_default", "fs/mqueue/msgsize_default",
}

func readSysctl(name string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func readUint(name string) (uint64, error) {
	s, err := readSysctl(name)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse sysctl %s %q: %w", name, s, err)
	}
	return v, nil
}

// readIPCVars reads the IPC sysctls of the calling thread's namespace.
func readIPCVars() (*pb.IpcVarEntry, error) {
	v := map[string]uint64{}
	for _, n := range ipcSysctls {
		x, err := readUint(n)
		if err != nil {
			return nil, err
		}
		v[n] = x
	}
	sem, err := readSysctl("kernel/sem")
	if err != nil {
		return nil, err
	}
	var sems []uint32
	for _, f := range strings.Fields(sem) {
		x, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("parse sysctl kernel/sem %q: %w", sem, err)
		}
		sems = append(sems, uint32(x))
	}
	u32 := func(n string) *uint32 { return proto.Uint32(uint32(v[n])) }
	return &pb.IpcVarEntry{
		SemCtls: sems, MsgCtlmax: u32("kernel/msgmax"), MsgCtlmnb: u32("kernel/msgmnb"), MsgCtlmni: u32("kernel/msgmni"),
		AutoMsgmni: u32("kernel/auto_msgmni"), ShmCtlmax: proto.Uint64(v["kernel/shmmax"]), ShmCtlall: proto.Uint64(v["kernel/shmall"]),
		ShmCtlmni: u32("kernel/shmmni"), ShmRmidForced: u32("kernel/shm_rmid_forced"),
		MqQueuesMax: u32("fs/mqueue/queues_max"), MqMsgMax: u32("fs/mqueue/msg_max"), MqMsgsizeMax: u32("fs/mqueue/msgsize_max"),
		MqMsgDefault: u32("fs/mqueue/msg_default"), MqMsgsizeDefault: u32("fs/mqueue/msgsize_default"),
	}, nil
}
