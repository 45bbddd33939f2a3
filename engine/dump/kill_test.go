package dump

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine"
)

// killParentSrc forks a child with a second thread and 64 MiB of written
// memory, says "ready CHILD", and writes how the child ended, as its real
// parent sees it in waitpid, to $READY.result.
const killParentSrc = `#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void *idle(void *a) { (void)a; for (;;) pause(); return NULL; }
static char *volatile mem;

int main(void)
{
	int p[2];
	char res[4096];
	pid_t c;
	int st;
	FILE *f;

	if (pipe(p))
		return 2;
	c = fork();
	if (c == 0) {
		size_t n = 64 << 20;
		pthread_t t;

		mem = malloc(n);
		memset(mem, 7, n);
		pthread_create(&t, NULL, idle, NULL);
		write(p[1], "x", 1);
		for (;;) pause();
	}
	read(p[0], res, 1);
	f = fopen(getenv("READY"), "w");
	fprintf(f, "ready %d\n", c);
	fclose(f);
	if (waitpid(c, &st, 0) != c)
		return 3;
	snprintf(res, sizeof(res), "%s.result", getenv("READY"));
	f = fopen(res, "w");
	fprintf(f, "%s %d\n", WIFSIGNALED(st) ? "signaled" : "exited", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
	fclose(f);
	return 0;
}
`

// TestFinishKillLetsGo: Finish(FinishKill) in a process that lives on
// (the engine used as a library) kills the tree without waiting for it,
// and lets go of it: the real parent, another process, sees its child
// killed by SIGKILL while the Dumper is still open. Were the killed tasks
// left traced by the dumper's thread, the parent would not see the exit
// until the Dumper is closed.
func TestFinishKillLetsGo(t *testing.T) {
	requireRoot(t)
	parent := startDetached(t, killParentSrc)
	readyPath := fmt.Sprintf("/proc/%d/environ", parent)
	env, err := os.ReadFile(readyPath)
	if err != nil {
		t.Fatal(err)
	}
	var ready string
	for _, kv := range strings.Split(string(env), "\x00") {
		if v, ok := strings.CutPrefix(kv, "READY="); ok {
			ready = v
		}
	}
	b, err := os.ReadFile(ready)
	if err != nil {
		t.Fatal(err)
	}
	var child int
	if _, err := fmt.Sscanf(string(b), "ready %d", &child); err != nil {
		t.Fatalf("ready file %q: %v", b, err)
	}
	t.Cleanup(func() { syscall.Kill(child, syscall.SIGKILL) })

	dir := t.TempDir()
	d := collected(t, engine.DumpOptions{Pid: child, Log: testLog(t)})
	ctx := context.Background()
	if err := d.WriteImages(ctx, dir); err != nil {
		d.Resume()
		t.Fatalf("write images: %v", err)
	}
	if err := d.Finish(engine.FinishKill); err != nil {
		t.Fatalf("finish: %v", err)
	}
	// The images are complete: the 64 MiB are in the pages file.
	if fi, err := os.Stat(dir + "/pages-1.img"); err != nil || fi.Size() < 64<<20 {
		t.Errorf("pages file: %v %v", fi, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, _ := os.ReadFile(ready + ".result")
		if s := strings.TrimSpace(string(res)); s != "" {
			if s != "signaled 9" {
				t.Fatalf("the parent saw its child end with %q, want signaled 9", s)
			}
			break
		}
		if time.Now().After(deadline) {
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", child))
			t.Fatalf("the parent did not see its killed child %d end while the dumper is open; child status:\n%s", child, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := syscall.Kill(child, 0); err != syscall.ESRCH {
		t.Errorf("killed child %d still exists after its parent reaped it: %v", child, err)
	}
}

// TestDieElsewhere: before the SIGKILL of a killing Finish, every thread
// of the tree (a parent with two threads and a child) is moved off the
// tracer's CPU, the first of crtools' mask, to the others (dieElsewhere);
// with one CPU nothing changes.
func TestDieElsewhere(t *testing.T) {
	requireRoot(t)
	pid := startDetached(t, treeSrc)
	var mask unix.CPUSet
	if err := unix.SchedGetaffinity(0, &mask); err != nil {
		t.Fatal(err)
	}
	d := frozen(t, engine.DumpOptions{Pid: pid, Log: testLog(t)})
	var tracer unix.CPUSet
	if err := d.tr.Do(func() error {
		d.dieElsewhere()
		return unix.SchedGetaffinity(0, &tracer)
	}); err != nil {
		t.Fatal(err)
	}
	own, rest := mask, mask
	if mask.Count() > 1 {
		own.Zero()
		rest.Zero()
		for c := 0; c < len(mask)*64; c++ {
			if mask.IsSet(c) {
				if own.Count() == 0 {
					own.Set(c)
				} else {
					rest.Set(c)
				}
			}
		}
	}
	if tracer != own {
		t.Errorf("tracer thread on CPUs %v, want %v", tracer, own)
	}
	threads := d.allThreads()
	if len(threads) != 3 {
		t.Fatalf("%d threads seized, want 3", len(threads))
	}
	for _, th := range threads {
		var got unix.CPUSet
		if err := unix.SchedGetaffinity(th.tid, &got); err != nil {
			t.Fatal(err)
		}
		if got != rest {
			t.Errorf("thread %d on CPUs %v, want %v", th.tid, got, rest)
		}
	}
	if err := d.Finish(engine.FinishKill); err != nil {
		t.Fatal(err)
	}
}
