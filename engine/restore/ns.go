package restore

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/ns"
)

// Namespaces of the root task (engine/ns): loadNamespaces reads their
// images, the root is cloned with nsCloneFlags, and restoreNamespaces fills
// the new namespaces before any child is cloned into them.

// loadNamespaces reads the namespace images of the tree.
func (r *restorer) loadNamespaces(img *imageSet) error {
	var ids []*pb.TaskKobjIdsEntry
	for _, t := range img.tasks {
		ids = append(ids, t.ids)
	}
	root, err := ns.Load(r.opts.ImagesDir, img.tasks[0].pid, ids)
	if err != nil {
		return err
	}
	r.ns = root
	if root.Mnt != nil {
		// Checked now, before any task exists.
		if _, err := root.Mnt.Ops(r.opts.Root); err != nil {
			return err
		}
	} else if r.opts.Root != "" {
		return fmt.Errorf("-r/--root %s: these images hold no mount namespace (dump with -n mnt) to put under it", r.opts.Root)
	}
	if len(r.opts.VethPairs) > 0 && root.Net == nil {
		// Not ignored silently, not an error either: a job spec may
		// name pairs for whatever images it is given.
		r.log.Info().Int("pairs", len(r.opts.VethPairs)).Msg("--veth-pair: these images hold no network namespace, so there is no veth device to map")
	}
	if root.Flags != 0 {
		r.log.Info().Str("hostname", root.UTS.GetNodename()).Bool("uts", root.UTS != nil).Bool("ipc", root.IPC != nil).
			Bool("pid", root.PidNS).Bool("net", root.Net != nil).Bool("mnt", root.Mnt != nil).Msg("the root task gets namespaces of its own")
	}
	return nil
}

// nsCloneFlags are the CLONE_NEW* flags of the root task.
func (r *restorer) nsCloneFlags() uint64 {
	if r.ns == nil {
		return 0
	}
	return r.ns.Flags
}

// restoreNamespaces sets the state of the root's new namespaces: hostname
// and domainname by injected syscalls in the root puppet, IPC sysctls from
// a crtools thread that joins the root's IPC namespace.
// Preconditions: on the tracer thread; root is the stopped root puppet.
func (r *restorer) restoreNamespaces(root *puppet) error {
	if r.ns == nil {
		return nil
	}
	if err := r.restoreMounts(root); err != nil {
		return fmt.Errorf("restore mount namespace of task %d: %w", root.pid, err)
	}
	if u := r.ns.UTS; u != nil {
		for _, x := range []struct {
			what string
			nr   int
			val  string
		}{{"set hostname", unix.SYS_SETHOSTNAME, u.GetNodename()}, {"set domainname", unix.SYS_SETDOMAINNAME, u.GetDomainname()}} {
			a, err := root.putString(x.val)
			if err != nil {
				return err
			}
			if _, err := root.callf(x.what, x.nr, a, uint64(len(x.val))); err != nil {
				return err
			}
		}
	}
	if err := r.ns.ApplyIPC(root.pid); err != nil {
		return fmt.Errorf("restore ipc namespace of task %d: %w", root.pid, err)
	}
	// Links made here are deleted by Kill if the restore fails.
	if err := r.ns.Net.Apply(root.pid, r.opts.VethPairs, &r.netLinks); err != nil {
		return fmt.Errorf("restore network namespace of task %d: %w", root.pid, err)
	}
	return nil
}

// newPidNS tells whether the tree is restored into a new pid namespace:
// the root is PID 1 there and every task gets its image PID inside it
// (clone3 set_tid from a puppet inside the namespace), so the PIDs of
// crtools' namespace need not be free.
func (r *restorer) newPidNS() bool { return r.ns != nil && r.ns.PidNS }

// pgidOf returns the process group of pr's leader as the images number
// it: read from outside in crtools' pid namespace, by an injected
// getpgid inside the tree's own.
// Preconditions: on the tracer thread; the leader puppet is stopped.
func (r *restorer) pgidOf(pr *proc) (int, error) {
	if !r.newPidNS() {
		return unix.Getpgid(pr.threads[0].pid)
	}
	g, err := pr.threads[0].callf("read process group (getpgid)", unix.SYS_GETPGID, 0)
	return int(g), err
}

// pgidIn returns the process group of pid, a pid as the images number it:
// read from outside in crtools' pid namespace, by a getpgid that p (a
// puppet of the tree) injects inside the tree's own, where the same
// number names another task.
// Preconditions: on the tracer thread; p is stopped.
func (r *restorer) pgidIn(p *puppet, pid int) (int, error) {
	if !r.newPidNS() {
		return unix.Getpgid(pid)
	}
	g, err := p.callf(fmt.Sprintf("read process group of %d (getpgid)", pid), unix.SYS_GETPGID, uint64(pid))
	return int(g), err
}

// giveCrtoolsFd opens, in the first puppet (still in crtools' pid
// namespace), a pidfd of crtools above every fd number of the images.
// Every puppet cloned from it inherits it, so that puppets in the new pid
// namespace can take crtools' files with pidfd_getfd (special.go) until
// their own files are in place (dropCrtoolsFd).
// Preconditions: on the tracer thread; before any task is cloned.
func (r *restorer) giveCrtoolsFd(first *puppet) error {
	if !r.newPidNS() {
		return nil
	}
	min := uint64(3)
	for _, t := range r.img.tasks {
		for _, fi := range t.fds {
			min = max(min, uint64(fi.GetFd())+1)
		}
	}
	fd, err := first.callf("open pidfd of crtools", unix.SYS_PIDFD_OPEN, uint64(os.Getpid()), 0)
	if err != nil {
		return err
	}
	high, err := first.callf(fmt.Sprintf("move the pidfd of crtools to fd %d or above", min), unix.SYS_FCNTL, fd, unix.F_DUPFD, min)
	if _, cerr := first.callf("close pidfd of crtools", unix.SYS_CLOSE, fd); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	first.crtoolsFd = int64(high)
	return nil
}

// closeInherited closes the files the puppet inherited from crtools, but
// the pidfd of crtools (giveCrtoolsFd).
// The calls are queued; from them on crtools knows the fd table of the
// puppet (fdtable.go).
func (p *puppet) closeInherited() error {
	if p.crtoolsFd < 0 {
		if err := p.queuef("close inherited files", unix.SYS_CLOSE_RANGE, 0, uint64(^uint32(0)), 0); err != nil {
			return err
		}
		p.fds = newFdTable()
		return nil
	}
	k := uint64(p.crtoolsFd)
	if k > 0 {
		if err := p.queuef("close inherited files", unix.SYS_CLOSE_RANGE, 0, k-1, 0); err != nil {
			return err
		}
	}
	if err := p.queuef("close inherited files", unix.SYS_CLOSE_RANGE, k+1, uint64(^uint32(0)), 0); err != nil {
		return err
	}
	p.fds = newFdTable(k)
	return nil
}

// dropCrtoolsFd closes the inherited pidfd of crtools once the puppet's
// files are restored: the restored task must not keep it.
func (p *puppet) dropCrtoolsFd() error {
	if p.crtoolsFd < 0 {
		return nil
	}
	return p.queuef("close the pidfd of crtools", unix.SYS_CLOSE, uint64(p.crtoolsFd))
}

// restoreMounts builds the root's new mount namespace (engine/ns mnt.go)
// by syscalls injected into the root: every mount private, the -r
// directory bound on itself, each dumped mount under it (tmpfs contents
// extracted by crtools through /proc/PID/root), then pivot_root into it.
// Preconditions: on the tracer thread; root was cloned with CLONE_NEWNS
// and no other task is in its namespace yet.
func (r *restorer) restoreMounts(root *puppet) error {
	if r.ns.Mnt == nil {
		return nil
	}
	ops, err := r.ns.Mnt.Ops(r.opts.Root)
	if err != nil {
		return err
	}
	str := func(s string) (uint64, error) {
		if s == "" {
			return 0, nil
		}
		return root.putString(s)
	}
	slash, err := str("/")
	if err != nil {
		return err
	}
	// Nothing done here may reach crtools' namespace.
	if _, err := root.callf("make every mount private", unix.SYS_MOUNT, 0, slash, 0, unix.MS_REC|unix.MS_PRIVATE, 0); err != nil {
		return err
	}
	seen := fmt.Sprintf("/proc/%d/root", root.pid)
	for _, op := range ops {
		if fi, err := os.Stat(seen + op.Target); err != nil || !fi.IsDir() {
			return fmt.Errorf("mount %s: no directory %s to mount on under -r %s", op.Mountpoint, op.Target, r.opts.Root)
		}
		var a [4]uint64
		for i, s := range []string{op.Source, op.Target, op.FSType, op.Data} {
			if a[i], err = str(s); err != nil {
				return err
			}
		}
		what := fmt.Sprintf("mount %s (%s %s)", op.Mountpoint, op.FSType, op.Source)
		if _, err := root.callf(what, unix.SYS_MOUNT, a[0], a[1], a[2], op.Flags, a[3]); err != nil {
			return err
		}
		if op.Remount&^unix.MS_RELATIME != 0 {
			tgt, err := str(op.Target)
			if err != nil {
				return err
			}
			if _, err := root.callf("set flags of bind mount "+op.Mountpoint, unix.SYS_MOUNT, 0, tgt, 0, unix.MS_REMOUNT|unix.MS_BIND|op.Remount, 0); err != nil {
				return err
			}
		}
		if op.Tar != "" {
			if err := ns.ExtractTmpfs(op.Tar, seen+op.Target); err != nil {
				return err
			}
		}
	}
	dir, err := str(r.opts.Root)
	if err != nil {
		return err
	}
	if _, err := root.callf("enter the new root", unix.SYS_CHDIR, dir); err != nil {
		return err
	}
	dot, err := str(".")
	if err != nil {
		return err
	}
	if _, err := root.callf("pivot_root into -r "+r.opts.Root, unix.SYS_PIVOT_ROOT, dot, dot); err != nil {
		return err
	}
	if dot, err = str("."); err != nil {
		return err
	}
	if _, err := root.callf("detach the old root", unix.SYS_UMOUNT2, dot, unix.MNT_DETACH); err != nil {
		return err
	}
	if slash, err = str("/"); err != nil {
		return err
	}
	_, err = root.callf("go to the new root", unix.SYS_CHDIR, slash)
	return err
}
