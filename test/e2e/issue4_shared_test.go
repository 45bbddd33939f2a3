package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crtools/crtools/test/harness"
)

// sharedSrc: a root and two children sharing what issue 4 lists.
//
//	C1 (fork)                           shares the open file description
//	                                    of fd F (one offset) and a
//	                                    MAP_SHARED memfd page with root;
//	C2 (clone CLONE_FILES|CLONE_FS)     shares root's fd table and fs info
//	                                    (umask, cwd) and the memfd page;
//	C3 (cloned by C1 with               a child of root sharing C1's fd
//	    CLONE_PARENT|CLONE_FILES)       table (restored from its sibling).
//
// Verify (before the dump and after the restore) asks each child, through
// the shared page, to act and checks the effect from the root: a write by
// C1 moves root's offset of F; an fd opened by C2 is open in root and one
// opened by root is open in C2; a umask and a cwd set by root are the ones
// C2 sees (and set back); an fd opened by C3 is open in C1, and closed
// there when C3 closes it; every child's counter moves.
const sharedSrc = `#include "crt.h"
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>

struct shared {
	volatile int req, ack, fd, mask, ok, fd3, pid3;
	volatile uint64_t count[4];
	char cwd[512];
};
static struct shared *sh;
static int F;

static void child(int me, pid_t parent)
{
	signal(SIGUSR1, SIG_IGN);
	signal(SIGUSR2, SIG_IGN);
	for (;;) {
		int r = sh->req;

		if (getppid() != parent)
			_exit(0);
		if (r && sh->ack != r) {
			if (me == 1 && r == 1) {
				if (write(F, "c", 1) != 1)
					_exit(3);
				sh->ack = r;
			} else if (me == 2 && r == 2) {
				sh->fd = open("/dev/null", O_RDONLY);
				sh->ack = r;
			} else if (me == 2 && (r == 3 || r == 4)) {
				mode_t m = umask(0);

				umask(m);
				sh->mask = m;
				sh->ack = r;
			} else if (me == 2 && r == 5) {
				if (!getcwd(sh->cwd, sizeof(sh->cwd)))
					strcpy(sh->cwd, "?");
				sh->ack = r;
			} else if (me == 2 && r == 6) {
				sh->ok = fcntl(sh->fd, F_GETFD) >= 0;
				sh->ack = r;
			} else if (me == 3 && r == 7) {
				sh->fd3 = open("/dev/null", O_RDONLY);
				sh->ack = r;
			} else if (me == 1 && r == 8) {
				sh->ok = fcntl(sh->fd3, F_GETFD) >= 0;
				sh->ack = r;
			} else if (me == 3 && r == 9) {
				close(sh->fd3);
				sh->ack = r;
			}
		}
		__atomic_add_fetch(&sh->count[me], 1, __ATOMIC_SEQ_CST);
		crt_sleep_ms(1);
	}
}

static int ask(int r)
{
	int64_t end = crt_now() + 3000000000LL;

	sh->ack = 0;
	sh->req = r;
	while (sh->ack != r && crt_now() < end)
		crt_sleep_ms(1);
	sh->req = 0;
	return sh->ack == r;
}

int main(void)
{
	pid_t root = getpid(), c1, c2;
	int memfd;

	crt_init();
	memfd = memfd_create("shared", 0);
	if (memfd < 0 || ftruncate(memfd, 4096))
		crt_die("memfd");
	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (sh == MAP_FAILED)
		crt_die("mmap");
	/* The mapping is what is shared; a memfd descriptor is issue 5's. */
	close(memfd);
	if (mkdir("cwdsub", 0755) && errno != EEXIST)
		crt_die("mkdir cwdsub");
	F = open("shared.dat", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (F < 0 || write(F, "start", 5) != 5)
		crt_die("open shared.dat");
	c1 = fork();
	if (c1 < 0)
		crt_die("fork");
	if (c1 == 0) {
		/* C3: root's child (CLONE_PARENT) with C1's fd table. */
		pid_t c3 = syscall(SYS_clone, CLONE_PARENT | CLONE_FILES | SIGCHLD, 0, 0, 0, 0);

		if (c3 < 0)
			_exit(4);
		if (c3 == 0) {
			sh->pid3 = getpid();
			child(3, root);
		}
		child(1, root);
	}
	c2 = syscall(SYS_clone, CLONE_FILES | CLONE_FS | SIGCHLD, 0, 0, 0, 0);
	if (c2 < 0)
		crt_die("clone");
	if (c2 == 0)
		child(2, root);
	while (!sh->count[1] || !sh->count[2] || !sh->count[3])
		crt_sleep_ms(1);
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			uint64_t b1 = sh->count[1], b2 = sh->count[2], b3 = sh->count[3];
			off_t before = lseek(F, 0, SEEK_CUR);
			int64_t end;

			CRT_CHECK(ask(1), "C1 did not answer");
			CRT_CHECK(lseek(F, 0, SEEK_CUR) == before + 1,
				  "offset of the shared file is %ld after C1 wrote a byte, was %ld: not one open file",
				  (long)lseek(F, 0, SEEK_CUR), (long)before);
			CRT_CHECK(ask(2), "C2 did not answer");
			CRT_CHECK(sh->fd > 2 && fcntl(sh->fd, F_GETFD) >= 0,
				  "fd %d opened by C2 is not open in root: fd table not shared", sh->fd);
			if (sh->fd > 2)
				close(sh->fd);
			umask(027);
			CRT_CHECK(ask(3) && sh->mask == 027, "C2 sees umask %o after root set 027: fs not shared", sh->mask);
			umask(022);
			CRT_CHECK(ask(4) && sh->mask == 022, "C2 sees umask %o after root set 022: fs not shared", sh->mask);
			{
				char here[512], want[600];

				CRT_CHECK(getcwd(here, sizeof(here)) != NULL, "getcwd");
				snprintf(want, sizeof(want), "%s/cwdsub", here);
				CRT_CHECK(chdir("cwdsub") == 0, "chdir cwdsub");
				CRT_CHECK(ask(5) && strcmp(sh->cwd, want) == 0,
					  "C2 is in %s after root went to %s: fs not shared", sh->cwd, want);
				CRT_CHECK(chdir(here) == 0, "chdir back");
				CRT_CHECK(ask(5) && strcmp(sh->cwd, here) == 0,
					  "C2 is in %s after root went back to %s: fs not shared", sh->cwd, here);
			}
			sh->fd = open("/dev/null", O_WRONLY);
			CRT_CHECK(sh->fd > 2, "open /dev/null");
			CRT_CHECK(ask(6) && sh->ok, "fd %d opened by root is not open in C2: fd table not shared", sh->fd);
			close(sh->fd);
			sh->ok = 1;
			CRT_CHECK(ask(6) && !sh->ok, "fd %d closed by root is still open in C2: fd table not shared", sh->fd);
			CRT_CHECK(ask(7) && sh->fd3 > 2, "C3 did not open a file");
			sh->ok = 0;
			CRT_CHECK(ask(8) && sh->ok, "fd %d opened by C3 is not open in C1: fd table not shared", sh->fd3);
			CRT_CHECK(ask(9), "C3 did not close");
			sh->ok = 1;
			CRT_CHECK(ask(8) && !sh->ok, "fd %d closed by C3 is still open in C1: fd table not shared", sh->fd3);
			for (end = crt_now() + 3000000000LL;
			     (sh->count[1] == b1 || sh->count[2] == b2 || sh->count[3] == b3) && crt_now() < end;)
				crt_sleep_ms(1);
			CRT_CHECK(sh->count[1] > b1 && sh->count[2] > b2 && sh->count[3] > b3,
				  "children stuck at %" PRIu64 " %" PRIu64 " %" PRIu64, b1, b2, b3);
			if (crt_usr2) {
				kill(c1, SIGKILL);
				kill(c2, SIGKILL);
				kill(sh->pid3, SIGKILL);
			}
			crt_report();
		}
		crt_tick();
		sh->count[0]++;
		crt_sleep_ms(2);
	}
}
`

// TestIssue4SharedResources: an open file description shared after
// fork (one offset), an fd table shared with CLONE_FILES, fs info shared
// with CLONE_FS and a MAP_SHARED memfd page are shared again after
// restore (checked by the workload through each child, before and after).
func TestIssue4SharedResources(t *testing.T) {
	src := filepath.Join(t.TempDir(), "shared.c")
	if err := os.WriteFile(src, []byte(sharedSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	dumpRestoreVerify(t, harness.BuildC(t, src, "-I"+harness.WorkloadsDir(t)))
}

// sighandSrc: a root and a child made with CLONE_VM|CLONE_SIGHAND (not a
// thread): restore cannot give them one handler table, so dump refuses.
const sighandSrc = `#include "crt.h"
#include <sched.h>

static char stack[64 << 10] __attribute__((aligned(16)));
static volatile int started;

static int child(void *arg)
{
	(void)arg;
	started = 1;
	for (;;)
		syscall(SYS_pause);
	return 0;
}

int main(void)
{
	pid_t c;

	crt_init();
	c = clone(child, stack + sizeof(stack), CLONE_VM | CLONE_SIGHAND | SIGCHLD, NULL);
	if (c < 0)
		crt_die("clone");
	while (!started)
		crt_sleep_ms(1);
	{
		FILE *f = fopen("child", "w");

		if (!f || fprintf(f, "%d\n", c) < 0 || fclose(f))
			crt_die("write child pid");
	}
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			CRT_CHECK(kill(c, 0) == 0, "child %d gone", c);
			if (crt_usr2)
				kill(c, SIGKILL);
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(2);
	}
}
`

// TestIssue4SharedSighandRefused: a process sharing its signal handler
// table with another process (CLONE_SIGHAND without CLONE_THREAD) cannot be
// restored, so dump refuses, naming both pids, and leaves the tree running.
func TestIssue4SharedSighandRefused(t *testing.T) {
	harness.RequireRoot(t)
	src := filepath.Join(t.TempDir(), "sighand.c")
	if err := os.WriteFile(src, []byte(sighandSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	w := harness.StartWorkload(t, harness.BuildC(t, src, "-I"+harness.WorkloadsDir(t)))
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	b, err := os.ReadFile(filepath.Join(w.Dir, "child"))
	if err != nil {
		t.Fatal(err)
	}
	child := strings.TrimSpace(string(b))
	dir := filepath.Join(t.TempDir(), "images")
	code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", dir)
	if code != 1 {
		t.Fatalf("dump of a tree sharing signal handlers: exit %d, want 1\n%s", code, out)
	}
	for _, want := range []string{"signal handler", fmt.Sprint(w.Pid), child} {
		if !strings.Contains(out, want) {
			t.Errorf("dump refusal %q lacks %q", out, want)
		}
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("refused dump left %s behind", dir)
	}
	if tr := tracerOf(w.Pid); tr != 0 {
		t.Errorf("pid %d still traced by %d after a refused dump", w.Pid, tr)
	}
	w.MustVerify(10 * time.Second)
}

// sharedAnonSrc: a root and a child (clone CLONE_FILES) sharing an fd
// table and a MAP_SHARED|MAP_ANONYMOUS page, the child's counter. The
// child's mapping of the page is restored through an fd of the shared
// table; the root restores that table, and its files keep their numbers
// and offsets.
const sharedAnonSrc = `#include "crt.h"
#include <sched.h>
#include <sys/mman.h>

int main(void)
{
	volatile uint64_t *count;
	pid_t root = getpid(), c;
	int F;

	crt_init();
	count = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (count == MAP_FAILED)
		crt_die("mmap");
	F = open("anon.dat", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (F < 0 || write(F, "start", 5) != 5)
		crt_die("open anon.dat");
	c = syscall(SYS_clone, CLONE_FILES | SIGCHLD, 0, 0, 0, 0);
	if (c < 0)
		crt_die("clone");
	if (c == 0) {
		for (;;) {
			if (getppid() != root)
				_exit(0);
			(*count)++;
			crt_sleep_ms(1);
		}
	}
	while (!*count)
		crt_sleep_ms(1);
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			uint64_t before = *count;
			int64_t end = crt_now() + 3000000000LL;
			char buf[8];

			while (*count == before && crt_now() < end)
				crt_sleep_ms(1);
			CRT_CHECK(*count > before, "child stuck at %" PRIu64 ": the page is not shared", before);
			CRT_CHECK(lseek(F, 0, SEEK_CUR) == 5, "offset of fd %d is %ld, not 5", F, (long)lseek(F, 0, SEEK_CUR));
			CRT_CHECK(pread(F, buf, 5, 0) == 5 && !memcmp(buf, "start", 5), "fd %d is not anon.dat", F);
			if (crt_usr2)
				kill(c, SIGKILL);
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(2);
	}
}
`

// TestIssue4SharedTableAnonShared: a task whose fd table another task
// restores maps shared anonymous memory, which it opens through an fd of
// that table; the table's files are restored on their numbers.
func TestIssue4SharedTableAnonShared(t *testing.T) {
	src := filepath.Join(t.TempDir(), "shared_anon.c")
	if err := os.WriteFile(src, []byte(sharedAnonSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	dumpRestoreVerify(t, harness.BuildC(t, src, "-I"+harness.WorkloadsDir(t)))
}
