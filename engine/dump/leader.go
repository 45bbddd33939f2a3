package dump

import (
	"fmt"
	"strings"

	"github.com/crtools/crtools/engine/proc"
)

// sigkillBit is SIGKILL's bit in a /proc pending mask: a group exit queues
// it on every thread before they leave.
const sigkillBit = 1 << (9 - 1)

// refuseLeaderExited returns an error naming pid when its leader (main
// thread) has exited but other threads still run: a process whose main
// thread called pthread_exit. Its leader is a zombie ('Z' in
// /proc/PID/stat), so without this check it would be dumped as a plain
// zombie and its live threads lost without a word. Restore cannot rebuild
// such a process (its leader would have to exit after the other threads
// are made), so dump refuses it. It returns nil for a plain zombie, whose
// other threads are gone or leaving with the group exit.
func refuseLeaderExited(pid int, comm string) error {
	live := liveOtherThreads(pid)
	if len(live) == 0 {
		return nil
	}
	tids := make([]string, len(live))
	for i, tid := range live {
		tids[i] = fmt.Sprint(tid)
	}
	return fmt.Errorf("pid %d (%s): its main thread has exited while %d other thread(s) still run (tid %s); "+
		"a process whose main thread exited cannot be dumped", pid, comm, len(live), strings.Join(tids, ", "))
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
