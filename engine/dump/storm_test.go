package dump

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/proc"
)

// A process that forks all the time: children fork a grandchild once and
// exit after a few milliseconds, so the tree changes while it is frozen.
const stormSrc = `
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
int main(void) {
	signal(SIGCHLD, SIG_IGN); /* children are reaped by the kernel */
	FILE *f = fopen(getenv("READY"), "w");
	fprintf(f, "ready\n");
	fclose(f);
	for (;;) {
		pid_t c = fork();
		if (c == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (fork() == 0) { usleep(3000); _exit(0); }
			usleep(2000);
			_exit(0);
		}
		usleep(200);
	}
}
`

// TestDumpForkStorm: freezing a tree that forks and exits all the time
// either dumps a consistent tree or fails cleanly; either way, nothing is
// left traced or stopped afterwards and the root runs on.
func TestDumpForkStorm(t *testing.T) {
	requireRoot(t)
	pid := startDetached(t, stormSrc)
	ok := 0
	for i := 0; i < 10; i++ {
		dir := filepath.Join(t.TempDir(), fmt.Sprint(i))
		os.Mkdir(dir, 0o700)
		d, err := New(engine.DumpOptions{Pid: pid, Log: testLog(t)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = dumpPid(t, pid, dir, engine.FinishLeaveRunning)
		d.Close()
		if err == nil {
			ok++
		} else {
			t.Logf("dump %d failed cleanly: %v", i, err)
		}
		// Nothing traced, nothing stopped by us.
		time.Sleep(5 * time.Millisecond)
		s, err := proc.ReadStatus(pid)
		if err != nil || s.TracerPid != 0 || s.State == 't' || s.State == 'T' {
			t.Fatalf("root after dump %d: %+v %v", i, s, err)
		}
		kids, _ := proc.ReadChildren(pid, pid)
		for _, k := range kids {
			if ks, err := proc.ReadStatus(k); err == nil && ks.TracerPid != 0 {
				t.Errorf("child %d still traced by %d", k, ks.TracerPid)
			}
		}
	}
	if ok == 0 {
		t.Errorf("no dump of the fork storm succeeded")
	}
	syscall.Kill(pid, syscall.SIGKILL)
}
