package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/test/harness"
)

// TestDumpLeaderExitedRefused: a process whose main thread called
// pthread_exit while other threads run (its leader a zombie) cannot be
// restored, so dump refuses it, naming its pid and the reason, with exit
// code 1, and leaves the tree running untraced: the threads go on counting.
// Before the refusal, dump took such a process for a plain zombie and lost
// its live threads ("self": refused as "a zombie"; "child": dumped, and
// the dump's kill ended the threads).
func TestDumpLeaderExitedRefused(t *testing.T) {
	harness.RequireRoot(t)
	harness.Subreaper()
	bin := harness.BuildC(t, "leaderexit.c")
	for _, mode := range []string{"self", "child"} {
		t.Run(mode, func(t *testing.T) {
			w := harness.StartWorkload(t, bin, mode)
			// The harness's Kill cannot tell that a process with a
			// zombie leader is the workload (its environ is gone).
			t.Cleanup(func() { _ = unix.Kill(w.Pid, unix.SIGKILL) })
			w.MustReady(10 * time.Second)
			w.MustVerify(10 * time.Second)
			target := w.Pid
			if mode == "child" {
				b, err := os.ReadFile(filepath.Join(w.Dir, "child"))
				if err != nil {
					t.Fatal(err)
				}
				if target, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = unix.Kill(target, unix.SIGKILL) })
			}
			dir := filepath.Join(t.TempDir(), "images")
			code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", dir)
			if code != 1 {
				t.Fatalf("dump of a tree with a leader-exited process: exit %d, want 1\n%s", code, out)
			}
			for _, want := range []string{fmt.Sprintf("pid %d", target), "main thread has exited"} {
				if !strings.Contains(out, want) {
					t.Errorf("dump refusal %q lacks %q", out, want)
				}
			}
			if _, err := os.Stat(dir); err == nil {
				t.Errorf("refused dump left %s behind", dir)
			}
			for _, pid := range []int{w.Pid, target} {
				tids, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
				if err != nil {
					t.Fatalf("threads of pid %d after the refused dump: %v", pid, err)
				}
				for _, e := range tids {
					tid, _ := strconv.Atoi(e.Name())
					if tr := tracerOf(tid); tr > 0 {
						t.Errorf("thread %d of pid %d still traced by %d after a refused dump", tid, pid, tr)
					}
				}
			}
			// The counting thread went on (the workload checks it).
			w.MustVerify(10 * time.Second)
			if err := w.VerifyAndExit(10 * time.Second); err != nil {
				t.Fatal(err)
			}
		})
	}
}
