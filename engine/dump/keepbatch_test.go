package dump

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/crtools/crtools/engine"
)

// keepBatchSrc: a process with a second thread, both waiting.
const keepBatchSrc = `#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void *idle(void *a) { (void)a; for (;;) pause(); return NULL; }

int main(void)
{
	pthread_t t;
	FILE *f;

	if (pthread_create(&t, NULL, idle, NULL))
		return 2;
	if (!(f = fopen(getenv("READY"), "w")))
		return 2;
	fputs("ready\n", f);
	fclose(f);
	for (;;)
		pause();
}
`

// TestKeptBatchUnmapped: with KillAtFinish the injections leave their
// batch memory mapped in the frozen task (two mappings more while frozen),
// and a failed dump's Resume, or a Finish that lets the tree run, takes it
// away: the task's memory map is the one it had before the dump.
func TestKeptBatchUnmapped(t *testing.T) {
	requireRoot(t)
	for _, finish := range []string{"resume", "leave-running", "leave-stopped"} {
		t.Run(finish, func(t *testing.T) {
			pid := startDetached(t, keepBatchSrc)
			maps := func() string {
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
				if err != nil {
					t.Fatal(err)
				}
				return string(b)
			}
			before := maps()
			d := collected(t, engine.DumpOptions{Pid: pid, Log: testLog(t), KillAtFinish: true})
			ctx := context.Background()
			// The batch is a code page (r-x) and its tables (rw-): two
			// mappings.
			if n, m := strings.Count(before, "\n"), strings.Count(maps(), "\n"); m != n+2 {
				t.Errorf("frozen after collect: %d mappings, want the %d of before and the batch's two", m, n)
			}
			var err error
			switch finish {
			case "resume":
				err = d.Resume()
			case "leave-running":
				if err = d.WriteImages(ctx, t.TempDir()); err == nil {
					err = d.Finish(engine.FinishLeaveRunning)
				}
			case "leave-stopped":
				if err = d.WriteImages(ctx, t.TempDir()); err == nil {
					err = d.Finish(engine.FinishLeaveStopped)
				}
			}
			if err != nil {
				t.Fatalf("%s: %v", finish, err)
			}
			if after := maps(); after != before {
				t.Errorf("memory map after %s:\n%s\nbefore the dump:\n%s", finish, after, before)
			}
			if finish == "leave-stopped" {
				syscall.Kill(pid, syscall.SIGCONT)
			}
			if err := syscall.Kill(pid, 0); err != nil {
				t.Errorf("task %d after %s: %v", pid, finish, err)
			}
		})
	}
}
