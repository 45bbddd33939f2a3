package restore

import "golang.org/x/sys/unix"

// Shell jobs (-j/--shell-job). crtools(1): the restored task inherits
// session and process group from crtools. The root is created as crtools'
// child (CLONE_PARENT), so it is born in crtools' session; the tasks of the
// root's dumped session stay in it (no setsid), a task that led its process
// group leads a new one there, and the group that had the terminal in the
// foreground at dump time gets crtools' terminal (files.ShellForeground).

// shellJobSession marks the tasks of the root's session as living in
// crtools' session: sid 0 never equals a pid, so no setsid is injected and
// setProcessGroups treats the former session leader as a group leader.
func shellJobSession(tasks []*taskImage) {
	if len(tasks) == 0 {
		return
	}
	sid := tasks[0].sid
	for _, t := range tasks {
		if t.sid == sid {
			t.sid = 0
		}
	}
}

// shellForeground gives crtools' terminal to the restored foreground group.
// A failure (crtools' terminal is not its controlling terminal, say) is
// logged, not fatal: the tasks still run on the terminal, only without job
// control. Preconditions: the tasks are still stopped.
func (r *restorer) shellForeground() {
	if !r.opts.ShellJob || r.img == nil || r.img.special == nil {
		return
	}
	// live: the group pgid of the images (inside the tree's pid
	// namespace, -n pid) as crtools sees it, if a task of the tree is in
	// it: the pid of its leader's puppet.
	live := func(pgid int) int {
		outer := pgid
		for _, pr := range r.procs {
			if pr.t.pid == pgid {
				outer = pr.threads[0].pid
				break
			}
		}
		for _, pr := range r.procs {
			if !pr.t.dead() && pr.t.pgid == pgid {
				if got, err := unix.Getpgid(pr.threads[0].pid); err == nil && got == outer {
					return outer
				}
				return 0
			}
		}
		return 0
	}
	pgrp, err := r.img.special.ShellForeground(live)
	if err != nil {
		r.log.Warn().Err(err).Msg("shell job: terminal foreground not set")
		return
	}
	if pgrp != 0 {
		r.log.Debug().Int("pgrp", pgrp).Msg("shell job: process group is the foreground of crtools' terminal")
	}
}
