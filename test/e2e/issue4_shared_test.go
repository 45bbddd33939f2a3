//go:build acceptance

// Known failure (recorded in the acceptance notes of issue 4): after
// restore the CLONE_FILES fd table and the CLONE_FS fs info of two
// processes are no longer shared. Kept out of the default run until
// engine/restore creates such tasks sharing them; run it with
// go test -tags acceptance ./test/e2e -run TestIssue4SharedResources

package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/crtools/crtools/test/harness"
)

// sharedSrc: a root and two children sharing what issue 4 lists.
//
//	C1 (fork)                           shares the open file description
//	                                    of fd F (one offset) and a
//	                                    MAP_SHARED memfd page with root;
//	C2 (clone CLONE_FILES|CLONE_FS)     shares root's fd table and fs info
//	                                    (umask, cwd) and the memfd page.
//
// Verify asks each child, through the shared page, to act and checks the
// effect from the root: a write by C1 moves root's offset of F; an fd
// opened by C2 is open in root; a umask set by root is the one C2 sees;
// both children's counters move.
const sharedSrc = `#include "crt.h"
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>

struct shared {
	volatile int req, ack, fd, mask;
	volatile uint64_t count[3];
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
	F = open("shared.dat", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (F < 0 || write(F, "start", 5) != 5)
		crt_die("open shared.dat");
	c1 = fork();
	if (c1 < 0)
		crt_die("fork");
	if (c1 == 0)
		child(1, root);
	c2 = syscall(SYS_clone, CLONE_FILES | CLONE_FS | SIGCHLD, 0, 0, 0, 0);
	if (c2 < 0)
		crt_die("clone");
	if (c2 == 0)
		child(2, root);
	while (!sh->count[1] || !sh->count[2])
		crt_sleep_ms(1);
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			uint64_t b1 = sh->count[1], b2 = sh->count[2];
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
			for (end = crt_now() + 3000000000LL; (sh->count[1] == b1 || sh->count[2] == b2) && crt_now() < end;)
				crt_sleep_ms(1);
			CRT_CHECK(sh->count[1] > b1 && sh->count[2] > b2, "children stuck at %" PRIu64 " %" PRIu64,
				  b1, b2);
			if (crt_usr2) {
				kill(c1, SIGKILL);
				kill(c2, SIGKILL);
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
