package dump

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/proc"
	"github.com/crtools/crtools/test/testenv"
)

func requireRoot(t *testing.T) {
	testenv.RequireRoot(t, "ptrace of other processes")
}

func TestFreezeRefusals(t *testing.T) {
	requireRoot(t)
	for _, c := range []struct {
		pid  int
		want string
	}{
		{os.Getpid(), "is crtools itself"},
		{2, "kernel thread"},
		{1 << 22, "does not exist"},
	} {
		d, err := New(engine.DumpOptions{Pid: c.pid, Log: testLog(t)})
		if err != nil {
			t.Fatal(err)
		}
		err = d.Freeze(context.Background())
		d.Close()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("pid %d: got %v, want %q", c.pid, err, c.want)
		}
	}
	if _, err := New(engine.DumpOptions{}); err == nil {
		t.Error("New without a pid succeeded")
	}
}

// A tree of a parent with two threads and a child, each writing ready.
const treeSrc = `
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <signal.h>
#include <unistd.h>
static void *spin(void *a) { (void)a; for (;;) pause(); return NULL; }
int main(void) {
	pthread_t th;
	pthread_create(&th, NULL, spin, NULL);
	pid_t c = fork();
	if (c == 0) { prctl(PR_SET_PDEATHSIG, SIGKILL); for (;;) pause(); }
	FILE *f = fopen(getenv("READY"), "w");
	fprintf(f, "ready %d\n", c);
	fclose(f);
	for (;;) pause();
}
`

// TestDumpTreeWithThreads freezes a process with a second thread and a
// child, and checks that the images hold both tasks, both threads, and
// that -R leaves all of them running untraced.
func TestDumpTreeWithThreads(t *testing.T) {
	requireRoot(t)
	pid := startDetached(t, treeSrc)
	kids, err := proc.ReadChildren(pid, pid)
	if err != nil || len(kids) != 1 {
		t.Fatalf("children of %d: %v %v", pid, kids, err)
	}
	defer syscall.Kill(kids[0], syscall.SIGKILL)
	dir := t.TempDir()
	if _, err := dumpPid(t, pid, dir, engine.FinishLeaveRunning); err != nil {
		t.Fatal(err)
	}
	ents, err := image.ReadFile(dir, image.Pstree, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 2 {
		t.Fatalf("pstree has %d entries, want 2", len(ents))
	}
	root, child := ents[0].Msg.(*pb.PstreeEntry), ents[1].Msg.(*pb.PstreeEntry)
	if int(root.GetPid()) != pid || len(root.GetThreads()) != 2 || root.GetThreads()[0] != uint32(pid) ||
		int(child.GetPid()) != kids[0] || int(child.GetPpid()) != pid {
		t.Errorf("pstree %v / %v", root, child)
	}
	for _, tid := range root.GetThreads() {
		var c pb.CoreEntry
		if err := image.ReadOne(dir, image.Core, uint64(tid), &c); err != nil {
			t.Fatalf("core of thread %d: %v", tid, err)
		}
		if c.GetThreadInfo().GetGpregs().GetFsBase() == 0 || c.GetThreadCore() == nil {
			t.Errorf("thread %d: core %v", tid, &c)
		}
		if (tid == uint32(pid)) != (c.GetTc() != nil) {
			t.Errorf("thread %d: task core present %v", tid, c.GetTc() != nil)
		}
	}
	for _, p := range []int{pid, kids[0]} {
		s, err := proc.ReadStatus(p)
		if err != nil || s.TracerPid != 0 || s.State == 't' {
			t.Errorf("pid %d after -R: %+v %v", p, s, err)
		}
	}
}

// schedSrc: the leader keeps the default policy; one thread sets nice 7,
// another SCHED_BATCH with nice 3.
const schedSrc = `
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
static volatile int ready;
static void *nice7(void *a) {
	(void)a;
	setpriority(PRIO_PROCESS, syscall(SYS_gettid), 7);
	__atomic_add_fetch(&ready, 1, __ATOMIC_SEQ_CST);
	for (;;) pause();
	return NULL;
}
static void *batch3(void *a) {
	struct sched_param p = {0};
	(void)a;
	sched_setscheduler(0, SCHED_BATCH, &p);
	setpriority(PRIO_PROCESS, syscall(SYS_gettid), 3);
	__atomic_add_fetch(&ready, 1, __ATOMIC_SEQ_CST);
	for (;;) pause();
	return NULL;
}
int main(void) {
	pthread_t a, b;
	pthread_create(&a, NULL, nice7, NULL);
	while (ready < 1) usleep(100);
	pthread_create(&b, NULL, batch3, NULL);
	while (ready < 2) usleep(100);
	FILE *f = fopen(getenv("READY"), "w");
	fprintf(f, "ready\n");
	fclose(f);
	for (;;) pause();
}
`

// TestThreadSched checks that each thread's own policy and nice value
// are dumped (threadSched reads them with sched_getattr).
func TestThreadSched(t *testing.T) {
	requireRoot(t)
	pid := startDetached(t, schedSrc)
	dir := t.TempDir()
	if _, err := dumpPid(t, pid, dir, engine.FinishLeaveRunning); err != nil {
		t.Fatal(err)
	}
	ents, err := image.ReadFile(dir, image.Pstree, 0)
	if err != nil {
		t.Fatal(err)
	}
	threads := ents[0].Msg.(*pb.PstreeEntry).GetThreads()
	if len(threads) != 3 {
		t.Fatalf("threads %v, want 3", threads)
	}
	want := []struct {
		nice   int32
		policy uint32
	}{{0, 0}, {7, 0}, {3, 3}} // SCHED_OTHER 0, SCHED_BATCH 3
	for i, tid := range threads {
		var c pb.CoreEntry
		if err := image.ReadOne(dir, image.Core, uint64(tid), &c); err != nil {
			t.Fatalf("core of thread %d: %v", tid, err)
		}
		tc := c.GetThreadCore()
		if tc.GetSchedNice() != want[i].nice || tc.GetSchedPolicy() != want[i].policy || tc.GetSchedPrio() != 0 {
			t.Errorf("thread %d: nice %d policy %d prio %d, want nice %d policy %d", tid,
				tc.GetSchedNice(), tc.GetSchedPolicy(), tc.GetSchedPrio(), want[i].nice, want[i].policy)
		}
	}
}

// threadChildSrc: the last thread forks the child (its parent is that
// thread, not the leader); the child forks a grandchild. argv[1] threads
// that only wait are started before it.
const threadChildSrc = `
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <signal.h>
#include <unistd.h>
static volatile pid_t child;
static void *forker(void *a) {
	(void)a;
	pid_t c = fork();
	if (c == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (fork() == 0) { prctl(PR_SET_PDEATHSIG, SIGKILL); for (;;) pause(); }
		for (;;) pause();
	}
	child = c;
	for (;;) pause();
	return NULL;
}
static void *idle(void *a) { (void)a; for (;;) pause(); return NULL; }
int main(int argc, char **argv) {
	pthread_t th;
	for (int i = argc > 1 ? atoi(argv[1]) : 0; i > 0; i--)
		pthread_create(&th, NULL, idle, NULL);
	pthread_create(&th, NULL, forker, NULL);
	while (!child) usleep(1000);
	usleep(20000);
	FILE *f = fopen(getenv("READY"), "w");
	fprintf(f, "ready %d\n", child);
	fclose(f);
	for (;;) pause();
}
`

// TestDumpChildOfThread: a child forked by a thread other than the leader
// (and that child's own child) are found by the freeze, which reads only
// the leader's children before the threads are stopped and every thread's
// after.
func TestDumpChildOfThread(t *testing.T) {
	requireRoot(t)
	// Two threads, and twelve (whose children are read on two
	// goroutines, the forker's by the second: readChildren).
	for _, idle := range []string{"0", "10"} {
		t.Run("idle="+idle, func(t *testing.T) { testDumpChildOfThread(t, idle) })
	}
}

func testDumpChildOfThread(t *testing.T, idle string) {
	pid, ready := startDetachedReady(t, threadChildSrc, idle)
	kid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(ready, "ready")))
	if err != nil {
		t.Fatalf("ready line %q: %v", ready, err)
	}
	defer syscall.Kill(kid, syscall.SIGKILL)
	dir := t.TempDir()
	if _, err := dumpPid(t, pid, dir, engine.FinishLeaveRunning); err != nil {
		t.Fatal(err)
	}
	ents, err := image.ReadFile(dir, image.Pstree, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 3 {
		t.Fatalf("pstree has %d entries, want 3 (the process, its thread's child and grandchild)", len(ents))
	}
	got := map[uint32]uint32{}
	for _, e := range ents {
		p := e.Msg.(*pb.PstreeEntry)
		got[p.GetPid()] = p.GetPpid()
	}
	if got[uint32(kid)] != uint32(pid) {
		t.Errorf("pstree %v: child %d of pid %d missing", got, kid, pid)
	}
}
