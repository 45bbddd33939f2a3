package ns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/proc"
)

// Root is what restore needs to give the root task its namespaces.
type Root struct {
	// Flags are the CLONE_NEW* flags to clone the root task with.
	Flags uint64
	UTS   *pb.UtsnsEntry  // nil: the root shares crtools' UTS namespace
	IPC   *pb.IpcVarEntry // nil: the root shares crtools' IPC namespace
	// PidNS: the tree had a pid namespace of its own, whose init is the
	// root (image pid 1); it is restored into a new one (CLONE_NEWPID),
	// every task with its image pid inside.
	PidNS bool
	// Net is the network namespace to build (net.go); nil: the root
	// shares crtools'.
	Net *NetRestore
	// Mnt is the mount namespace to build (mnt.go); nil: the root
	// shares crtools'.
	Mnt *MntRestore
	// sysv are the SysV objects of the IPC namespace (sysv.go), read
	// from dir.
	sysv *sysvDump
	dir  string
}

// unsupportedImages are images of namespaces restore cannot rebuild yet.
var unsupportedImages = []struct{ glob, what string }{
	{"netns-*.img", "network namespaces"},
}

// dirNames lists the names in dir (proc.ReadDirNames: plain system
// calls); those read before an error, if it cannot be read.
func dirNames(dir string) []string {
	var names []string
	_ = proc.ReadDirNames(dir, func(name string) { names = append(names, name) })
	return names
}

// Load reads the namespace images of dir. rootPid is the root's pid in
// the images; ids are the kobj ids of every task, the root's first.
func Load(dir string, rootPid int, ids []*pb.TaskKobjIdsEntry) (*Root, error) {
	// One read of the directory for every pattern (filepath.Glob would
	// read and sort it once per pattern: some 300 names each for a
	// 50-task tree). An unreadable directory matches nothing, as with
	// Glob; reading the images says what is wrong with it.
	names := dirNames(dir)
	for _, u := range unsupportedImages {
		first := ""
		for _, n := range names {
			if ok, err := filepath.Match(u.glob, n); err != nil {
				return nil, fmt.Errorf("look for %s images: %w", u.glob, err)
			} else if ok && (first == "" || n < first) {
				first = n
			}
		}
		if first != "" {
			return nil, fmt.Errorf("restore %s (%s): %w", u.what, first, engine.ErrNotSupported)
		}
	}
	r := &Root{}
	// As CRIU's images, a tree dumped with its pid namespace keeps the
	// pids seen inside it, so its root, the namespace's init, is pid 1;
	// no other tree can have a root with pid 1 (crtools' own init cannot
	// be dumped), so that alone marks it.
	if rootPid == 1 {
		r.PidNS, r.Flags = true, r.Flags|unix.CLONE_NEWPID
	}
	if len(ids) == 0 || ids[0] == nil {
		return r, nil
	}
	if r.PidNS {
		if err := notNested(ids, "pid"); err != nil {
			return nil, err
		}
	}
	if id := ids[0].GetMntNsId(); id != 0 && image.Exists(dir, image.Mnts, uint64(id)) {
		if err := notNested(ids, "mnt"); err != nil {
			return nil, err
		}
		m, err := loadMnt(dir, id)
		if err != nil {
			return nil, err
		}
		r.Mnt, r.Flags = m, r.Flags|unix.CLONE_NEWNS
	}
	if id := ids[0].GetNetNsId(); id != 0 && image.Exists(dir, image.Netdev, uint64(id)) {
		if err := notNested(ids, "net"); err != nil {
			return nil, err
		}
		n, err := loadNet(dir, id)
		if err != nil {
			return nil, err
		}
		r.Net, r.Flags = n, r.Flags|unix.CLONE_NEWNET
	}
	for _, n := range []struct {
		name string
		kind *image.Kind
		flag uint64
		msg  proto.Message
	}{
		{"uts", image.UTSNS, unix.CLONE_NEWUTS, &pb.UtsnsEntry{}},
		{"ipc", image.IPCVar, unix.CLONE_NEWIPC, &pb.IpcVarEntry{}},
	} {
		id := idOf(ids[0], n.name)
		if id == 0 || !image.Exists(dir, n.kind, uint64(id)) {
			continue
		}
		if err := notNested(ids, n.name); err != nil {
			return nil, err
		}
		rd, err := image.Open(dir, n.kind, uint64(id))
		if err != nil {
			return nil, fmt.Errorf("open %s namespace image: %w", n.name, err)
		}
		err = rd.Next(n.msg)
		rd.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s namespace image: %w", n.name, err)
		}
		r.Flags |= n.flag
		switch m := n.msg.(type) {
		case *pb.UtsnsEntry:
			r.UTS = m
		case *pb.IpcVarEntry:
			r.IPC = m
			if r.sysv, err = loadSysV(dir, id); err != nil {
				return nil, fmt.Errorf("read SysV objects of the ipc namespace: %w", err)
			}
			r.dir = dir
		}
	}
	return r, nil
}

// notNested refuses a task whose namespace name differs from the root's
// (ids[0]): nested namespaces are not restored.
func notNested(ids []*pb.TaskKobjIdsEntry, name string) error {
	id := idOf(ids[0], name)
	for i, t := range ids[1:] {
		// A zombie may carry no ids: it has no namespaces left.
		if x := idOf(t, name); x != 0 && x != id {
			return fmt.Errorf("restore task #%d in another %s namespace than the root: nested %s namespaces: %w", i+1, name, name, engine.ErrNotSupported)
		}
	}
	return nil
}

// ApplyIPC writes the dumped IPC sysctls into the IPC namespace of pid
// (the restored root, already in its new namespace) and recreates its
// SysV objects. The dumped limits may be below what the objects took
// when they were created (shmmax lowered after a create), and
// shm_rmid_forced destroys a segment at its last detach (restore's own,
// after filling it): the objects are created under limits raised to fit
// them with shm_rmid_forced off (sysvDump.room), and the dumped values
// are written after.
func (r *Root) ApplyIPC(pid int) error {
	if r == nil || r.IPC == nil {
		return nil
	}
	write := func(instead map[string]string) error {
		var errs []error
		for _, s := range ipcSysctlSets(r.IPC) {
			if x, ok := instead[s.name]; ok {
				s.val = x
			}
			if err := os.WriteFile("/proc/sys/"+s.name, []byte(s.val), 0); err != nil {
				errs = append(errs, fmt.Errorf("set sysctl %s to %s: %w", s.name, s.val, err))
			}
		}
		return errors.Join(errs...)
	}
	return inNamespace(pid, "ipc", func() error {
		if r.sysv.empty() {
			return write(nil)
		}
		if err := write(r.sysv.room(r.IPC)); err != nil {
			return err
		}
		if err := r.sysv.restore(r.dir, r.IPC); err != nil {
			return err
		}
		return write(nil)
	})
}

// ipcSysctlSets are the sysctls v gives, in the order to write them.
func ipcSysctlSets(v *pb.IpcVarEntry) []struct{ name, val string } {
	u := func(x uint64) string { return strconv.FormatUint(x, 10) }
	var sem []string
	for _, s := range v.GetSemCtls() {
		sem = append(sem, u(uint64(s)))
	}
	sets := []struct {
		name, val string
	}{
		{"kernel/msgmax", u(uint64(v.GetMsgCtlmax()))}, {"kernel/msgmnb", u(uint64(v.GetMsgCtlmnb()))},
		{"kernel/msgmni", u(uint64(v.GetMsgCtlmni()))},
		{"kernel/shmmax", u(v.GetShmCtlmax())}, {"kernel/shmall", u(v.GetShmCtlall())},
		{"kernel/shmmni", u(uint64(v.GetShmCtlmni()))}, {"kernel/shm_rmid_forced", u(uint64(v.GetShmRmidForced()))},
		{"fs/mqueue/queues_max", u(uint64(v.GetMqQueuesMax()))}, {"fs/mqueue/msg_max", u(uint64(v.GetMqMsgMax()))},
		{"fs/mqueue/msgsize_max", u(uint64(v.GetMqMsgsizeMax()))},
	}
	if len(sem) > 0 {
		sets = append(sets, struct{ name, val string }{"kernel/sem", strings.Join(sem, " ")})
	}
	// The defaults must not exceed the maxima: write them last.
	if v.MqMsgDefault != nil {
		sets = append(sets, struct{ name, val string }{"fs/mqueue/msg_default", u(uint64(v.GetMqMsgDefault()))})
	}
	if v.MqMsgsizeDefault != nil {
		sets = append(sets, struct{ name, val string }{"fs/mqueue/msgsize_default", u(uint64(v.GetMqMsgsizeDefault()))})
	}
	return sets
}
