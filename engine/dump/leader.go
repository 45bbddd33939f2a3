package dump

import (
	"fmt"
	"strings"

	"github.com/crtools/crtools/engine/proc"
)

// sigkillBit is SIGKILL's bit in a /proc pending mask: a group exit queues
// it on every thread before they leave.
const sigkillBit = 1 << (9 - 1)

// A process whose main thread called pthread_exit while other threads run
// on has a zombie leader ('Z' in /proc/PID/stat, listed in /proc/PID/task)
// that cannot be seized (EPERM) and shows nothing of the process: its
// memory map, fds, cwd/root/exe and namespaces are gone with it. Dump
// leaves it unseized (task.leaderExited), reads the process through a
// live thread (task.kpid), and writes the leader's core with the process's
// state but without registers, which restore reads as an exited leader.
// (CRIU has no image of such a process: it dumps it as a plain zombie,
// its issue 57.)

// isLeaderExited tells whether pid, whose leader is in state, is such a
// process: its leader a zombie, other threads alive (a plain zombie's
// other threads are gone or leaving with the group exit).
func isLeaderExited(pid int, state byte) bool {
	return state == 'Z' && len(liveOtherThreads(pid)) > 0
}

// refuseLeaderExiting returns an error naming pid when its leader is on
// its way out (PF_EXITING, not a zombie yet) while other threads run: once
// seized it would never stop, so the dump gives up and says to try again
// (it is a zombie, which dump takes, a moment later). It also serves a
// leader that exited while being frozen. It returns nil when no other
// thread lives (a process exiting as a whole).
func refuseLeaderExiting(pid int, comm string) error {
	live := liveOtherThreads(pid)
	if len(live) == 0 {
		return nil
	}
	tids := make([]string, len(live))
	for i, tid := range live {
		tids[i] = fmt.Sprint(tid)
	}
	return fmt.Errorf("pid %d (%s): its main thread exited while crtools froze it, %d other thread(s) running on (tid %s); "+
		"dump it again (its exited main thread is then dumped as such)", pid, comm, len(live), strings.Join(tids, ", "))
}

// liveOtherThreads lists the threads of pid other than the leader that are
// neither exited nor on their way out (PF_EXITING, or SIGKILL pending from
// a group exit). A thread that cannot be read is gone.
func liveOtherThreads(pid int) []int {
	tids, err := proc.ListTasks(pid)
	if err != nil {
		return nil
	}
	var live []int
	for _, tid := range tids {
		if tid == pid {
			continue
		}
		st, err := proc.ReadTaskStat(pid, tid)
		if err != nil || st.Exited() || st.IsExiting() {
			continue
		}
		if s, err := proc.ReadTaskStatus(pid, tid); err != nil || s.SigPnd&sigkillBit != 0 {
			continue
		}
		live = append(live, tid)
	}
	return live
}
