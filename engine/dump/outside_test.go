package dump

import (
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/proc"
)

// TestReadOutsideCoreLimits: the rlimits of a task of crtools' own ids
// (read with prlimit) and of a task of another uid (prlimit refuses
// without CAP_SYS_RESOURCE: read from /proc/PID/limits) are those
// /proc/PID/limits shows, a lowered one included.
func TestReadOutsideCoreLimits(t *testing.T) {
	requireRoot(t)
	for _, c := range []struct {
		name string
		cred *syscall.Credential
	}{{"own ids", nil}, {"other uid", &syscall.Credential{Uid: 65534, Gid: 65534, NoSetGroups: true}}} {
		t.Run(c.name, func(t *testing.T) {
			// A limit of its own, lowered by the task itself.
			cmd := exec.Command("bash", "-c", "ulimit -Sn 123 && ulimit -Hn 456 && exec sleep 100")
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			pid := cmd.Process.Pid
			lowered := unix.Rlimit{Cur: 123, Max: 456}
			var perm error
			var l unix.Rlimit
			if err := unix.Prlimit(pid, unix.RLIMIT_CORE, nil, &l); err != nil {
				perm = err
			}
			if (c.cred != nil) != (perm != nil) {
				t.Fatalf("prlimit of the task: %v; this test wants it to fail exactly for the other uid", perm)
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				st, err := proc.ReadStat(pid)
				if err == nil && st.Comm == "sleep" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("task %d never exec'd sleep: %v %v", pid, st, err)
				}
				time.Sleep(time.Millisecond)
			}
			o, err := readOutsideCore(pid)
			if err != nil {
				t.Fatal(err)
			}
			want, err := proc.ReadLimits(pid)
			if err != nil {
				t.Fatal(err)
			}
			if o.rlimits != want {
				t.Errorf("rlimits %v, /proc/%d/limits says %v", o.rlimits, pid, want)
			}
			if o.rlimits[unix.RLIMIT_NOFILE] != lowered {
				t.Errorf("RLIMIT_NOFILE %v, want %v", o.rlimits[unix.RLIMIT_NOFILE], lowered)
			}
		})
	}
}
