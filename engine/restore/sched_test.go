package restore

import (
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/test/testenv"
)

// restoreSched sets policy and nice from outside, the nice value of a
// SCHED_IDLE thread too (sched_setattr leaves it alone), skips a thread
// that already has the dumped scheduling (SCHED_DEADLINE is refused
// earlier, by load: TestSchedDeadlineRefused in test/e2e). Real-time policies are left out: a
// real-time task on the shared test host could starve it.
func TestRestoreSched(t *testing.T) {
	testenv.RequireRoot(t, "setting another process's scheduling and lowering its nice value")
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := cmd.Process.Pid
	tc := func(policy uint32, nice int32) *pb.ThreadCoreEntry {
		return &pb.ThreadCoreEntry{SchedPolicy: proto.Uint32(policy), SchedNice: proto.Int32(nice), SchedPrio: proto.Uint32(0)}
	}
	for _, c := range []struct {
		policy uint32
		nice   int32
	}{{unix.SCHED_BATCH, 7}, {unix.SCHED_IDLE, 4}, {unix.SCHED_NORMAL, -3}, {unix.SCHED_NORMAL, 0}} {
		if err := restoreSched(pid, tc(c.policy, c.nice), nil); err != nil {
			t.Fatalf("policy %d nice %d: %v", c.policy, c.nice, err)
		}
		a, err := unix.SchedGetAttr(pid, 0)
		if err != nil {
			t.Fatal(err)
		}
		nice, err := unix.Getpriority(unix.PRIO_PROCESS, pid) // 20 - nice
		if err != nil {
			t.Fatal(err)
		}
		if a.Policy != c.policy || int32(20-nice) != c.nice {
			t.Errorf("after restoreSched(policy %d, nice %d): policy %d nice %d", c.policy, c.nice, a.Policy, 20-nice)
		}
	}
	// What the thread has already is not set again: an initial state
	// that claims the wanted one leaves the thread as it is.
	initial := &unix.SchedAttr{Policy: unix.SCHED_BATCH, Nice: 5}
	if err := restoreSched(pid, tc(unix.SCHED_BATCH, 5), initial); err != nil {
		t.Fatal(err)
	}
	if a, err := unix.SchedGetAttr(pid, 0); err != nil || a.Policy != unix.SCHED_NORMAL || a.Nice != 0 {
		t.Errorf("restoreSched with the initial scheduling changed it: %+v %v", a, err)
	}
	// No policy in the image (older images): nothing to do.
	if err := restoreSched(pid, &pb.ThreadCoreEntry{}, nil); err != nil {
		t.Errorf("image without scheduling: %v", err)
	}
}
