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
	"github.com/crtools/crtools/engine/proc"
)

// keepBatchSrc: a process with a second thread, both waiting. It is ready
// once the thread runs its own code: glibc starts a thread with every
// signal blocked and gives it its mask only right before its routine, so a
// mask read earlier (TestTracerDeathAfterCollect's "before") was all
// blocked in about one run in eight, and the test failed.
const keepBatchSrc = `#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static volatile int started;

static void *idle(void *a)
{
	(void)a;
	__atomic_store_n(&started, 1, __ATOMIC_SEQ_CST);
	for (;;)
		pause();
	return NULL;
}

int main(void)
{
	pthread_t t;
	FILE *f;

	if (pthread_create(&t, NULL, idle, NULL))
		return 2;
	while (!__atomic_load_n(&started, __ATOMIC_SEQ_CST))
		usleep(100);
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

// TestTracerDeathAfterCollect: a crtools killed after collect (here: its
// tracer thread exits, as in exit_ptrace) leaves the tree running as it
// was, with every thread's blocked mask the one it had before the dump.
// A SIGTRAP left blocked would outlive crtools and turn the program's next
// int3 into a kill: force_sig resets the handler of a blocked SIGTRAP.
func TestTracerDeathAfterCollect(t *testing.T) {
	requireRoot(t)
	pid := startDetached(t, keepBatchSrc)
	masks := func() map[int]uint64 {
		tids, err := proc.ListTasks(pid)
		if err != nil {
			t.Fatalf("threads of %d: %v", pid, err)
		}
		m := map[int]uint64{}
		for _, tid := range tids {
			st, err := proc.ReadTaskStatus(pid, tid)
			if err != nil {
				t.Fatalf("status of %d/%d: %v", pid, tid, err)
			}
			m[tid] = st.SigBlk
		}
		return m
	}
	before := masks()
	d := collected(t, engine.DumpOptions{Pid: pid, Log: testLog(t), KillAtFinish: true})
	// The tracer thread exits as crtools' would.
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
	time.Sleep(100 * time.Millisecond)
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("task %d a moment after its tracer died: %v", pid, err)
	}
	after := masks()
	for tid, m := range before {
		if after[tid] != m {
			t.Errorf("thread %d: blocked mask %#x after its tracer died, %#x before the dump", tid, after[tid], m)
		}
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
