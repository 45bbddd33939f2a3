package restore

import (
	"fmt"

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
	root, err := ns.Load(r.opts.ImagesDir, ids)
	if err != nil {
		return err
	}
	r.ns = root
	if root.Flags != 0 {
		r.log.Info().Str("hostname", root.UTS.GetNodename()).Bool("uts", root.UTS != nil).Bool("ipc", root.IPC != nil).
			Msg("the root task gets namespaces of its own")
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
	return nil
}
