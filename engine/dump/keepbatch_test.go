package dump

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

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

// TestTracerDeathAfterCollect: crtools dies (its tracer thread ends
// without detaching anything) after the injections of a dump whose tree
// was to be killed (KillAtFinish: the threads are not settled, but wait
// in the SIGTRAP stop of their last batch with SIGTRAP blocked): the
// kernel detaches them and the tree runs on, each thread with SIGTRAP
// queued again but blocked instead of delivered (which would kill it).
func TestTracerDeathAfterCollect(t *testing.T) {
	requireRoot(t)
	pid := startDetached(t, keepBatchSrc)
	d := collected(t, engine.DumpOptions{Pid: pid, Log: testLog(t), KillAtFinish: true})
	held := 0
	for _, th := range d.allThreads() {
		if th.held {
			held++
		}
	}
	if held != 2 {
		t.Errorf("%d threads left in their SIGTRAP stop with SIGTRAP blocked, want both", held)
	}
	// The tracer thread exits as crtools' would (exit_ptrace).
	d.tr.Close()
	d.tr, d.frozen = nil, false
	deadline := time.Now().Add(5 * time.Second)
	for {
		states, err := threadStates(pid)
		if err != nil {
			t.Fatalf("task %d after its tracer died: %v", pid, err)
		}
		if states == "SS" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("threads of %d in states %q after their tracer died, want both sleeping", pid, states)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Still so a moment later: no SIGTRAP was delivered.
	time.Sleep(100 * time.Millisecond)
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("task %d a moment after its tracer died: %v", pid, err)
	}
	if states, err := threadStates(pid); err != nil || states != "SS" {
		t.Errorf("threads of %d in states %q (%v) a moment after their tracer died", pid, states, err)
	}
}

// threadStates is the state letter of every thread of pid, in the order
// of /proc/PID/task.
func threadStates(pid int) (string, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return "", err
	}
	var s strings.Builder
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, e.Name()))
		if err != nil {
			return "", err
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) {
			return "", fmt.Errorf("stat of thread %s: %q", e.Name(), b)
		}
		s.WriteByte(b[i+2])
	}
	return s.String(), nil
}
