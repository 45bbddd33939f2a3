/*
 * heirs: a root that forks N children (argv[1], default 6) which keep
 * most of the memory they got from it, so that restore creates them as
 * heirs, by fork from their restored parent (engine/restore/inherit.go),
 * and then makes the parent's and each child's memory differ in every way
 * that path handles:
 *
 *   common  8 pages the root filled before the forks, nobody writes since:
 *           every child must read the root's pattern;
 *   mine    8 pages the root filled; each child rewrites the first 4 with
 *           its own pattern (pages differing from the parent's);
 *   zeroed  4 pages nobody touched before the forks; the root fills them
 *           after (pages the parent has and the child has not: zeros);
 *   ro      2 pages each side fills after the forks with its own pattern
 *           and makes read-only (differing pages in a read-only VMA);
 *   gone    4 pages the root filled and unmaps after the forks (a VMA the
 *           child has and the parent has not);
 *   added   4 pages the root maps at a fixed address after the forks (a
 *           VMA the parent has and the child must not);
 *   heap    the root grows its heap after the forks (another brk);
 *   fmap    2 pages of a file the root maps privately, read-only, before
 *           the forks; each child makes the second writable and fills it
 *           with its own pattern (the parent's VMA split in two file
 *           VMAs of the child's own, one with a page of its own);
 *   fdirty  the same 2 pages mapped privately, writable; the root writes
 *           the first after the forks (a file page the parent has and the
 *           child has not: the file's contents).
 *
 * Each child also has a name and, for even ones, a parent-death signal of
 * its own; the root disables transparent huge pages before the forks
 * (PR_SET_THP_DISABLE, which fork copies), and every task checks it.
 * Scheduling: the root runs SCHED_BATCH at nice 2 from before the forks
 * (fork copies it); child i keeps that (i % 3 == 0), or sets SCHED_OTHER
 * nice 6 (1) or SCHED_IDLE nice 1 (2), and checks its own; child 1 locks
 * its own 4 pages of mine (mlock; fork copies no lock) and checks VmLck.
 * Every 5 ms it checks all of it (VmLck only when the root asks: reading
 * it opens a file) and writes "OK pid count checked count" or "FAIL
 * reason" into its record of the report file the root opened before the
 * forks (a child that opened a file of its own would not be a heir when
 * dumped at that moment); verify asks every child for a check, waits for
 * each child's report made since, moving on with the pid fork gave it,
 * and checks the root's own memory.
 */
#include "crt.h"

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sched.h>
#include <sys/wait.h>

#define MAXCHILD 64
#define PG 4096
#define ADDED ((void *)0x5a5a00000000ull)

static pid_t forked[MAXCHILD];
static uint64_t seen[MAXCHILD];
#define REC 128
/* Child i's slot for the root's check requests, after the records. */
#define REQ_AT(i) ((off_t)MAXCHILD * REC + (off_t)(i) * (off_t)sizeof(uint64_t))

static unsigned char *common, *mine, *zeroed, *ro, *gone, *fmap, *fdirty;
static int rfd; /* heirs.report: a record of REC bytes per child */

static unsigned char *anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		crt_die("mmap");
	return p;
}

static const int child_policy[3] = { SCHED_BATCH, SCHED_OTHER, SCHED_IDLE };
static const int child_nice[3] = { 2, 6, 1 };

static void child(int i, pid_t parent)
{
	char name[16], reason[96], buf[REC], got[16];
	int want_pdeath = i % 2 ? 0 : SIGKILL;
	pid_t me = getpid();
	uint64_t count = 0, checked = 0;
	char lck[96] = "";

	if (want_pdeath)
		prctl(PR_SET_PDEATHSIG, want_pdeath);
	if (getppid() != parent)
		_exit(0);
	snprintf(name, sizeof(name), "heir-%d", i);
	prctl(PR_SET_NAME, name);
	/* crt_pattern(s, i) is crt_pattern(s + k, i - k): the parent's
	 * pages 4-7 are pattern 2 + 4 * PG from their start. */
	crt_fill(mine, 4 * PG, 30 + i);
	crt_fill(ro, 2 * PG, 60 + i);
	if (mprotect(ro, 2 * PG, PROT_READ) || mprotect(fmap + PG, PG, PROT_READ | PROT_WRITE))
		_exit(2);
	crt_fill(fmap + PG, PG, 110 + i);
	if (i % 3) {
		struct sched_param sp = { 0 };

		if (sched_setscheduler(0, child_policy[i % 3], &sp) ||
		    setpriority(PRIO_PROCESS, 0, child_nice[i % 3]))
			_exit(2);
	}
	if (i == 1 && mlock(mine, 4 * PG))
		_exit(2);
	for (;;) {
		int pdeath = -1;
		long bad;
		uint64_t want = 0;

		if (getppid() != parent)
			_exit(0);
		/* VmLck is read from /proc/self/status: a file of the
		 * child's own while it is open, which makes it no heir. So
		 * only when the root asks (check_children), which waits for
		 * the answer: no dump finds the file open. */
		if (pread(rfd, &want, sizeof(want), REQ_AT(i)) == sizeof(want) && want > checked) {
			long kb = crt_vmlck_kb();

			if (kb != (i == 1 ? 16 : 0) && !lck[0])
				snprintf(lck, sizeof(lck), "VmLck %ld kB, want %d", kb, i == 1 ? 16 : 0);
			checked = want;
		}
		reason[0] = 0;
		prctl(PR_GET_NAME, got);
		prctl(PR_GET_PDEATHSIG, &pdeath);
		if (getpid() != me)
			snprintf(reason, sizeof(reason), "pid %d, was %d", (int)getpid(), (int)me);
		else if (strcmp(got, name))
			snprintf(reason, sizeof(reason), "name %s, want %s", got, name);
		else if (pdeath != want_pdeath)
			snprintf(reason, sizeof(reason), "parent-death signal %d, want %d", pdeath, want_pdeath);
		else if (prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) != 1)
			snprintf(reason, sizeof(reason), "THP disable %d, want 1", prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
		else if (crt_sched_differs(child_policy[i % 3], child_nice[i % 3], reason, sizeof(reason)))
			;
		else if (lck[0])
			snprintf(reason, sizeof(reason), "%s", lck);
		else if ((bad = crt_find_bad(common, 8 * PG, 1)) >= 0)
			snprintf(reason, sizeof(reason), "common: byte %ld", bad);
		else if ((bad = crt_find_bad(mine, 4 * PG, 30 + i)) >= 0)
			snprintf(reason, sizeof(reason), "own pages: byte %ld", bad);
		else if ((bad = crt_find_bad(mine + 4 * PG, 4 * PG, 2 + 4 * PG)) >= 0)
			snprintf(reason, sizeof(reason), "parent's pages kept: byte %ld", bad);
		else if ((bad = crt_find_bad(ro, 2 * PG, 60 + i)) >= 0)
			snprintf(reason, sizeof(reason), "read-only pages: byte %ld", bad);
		else if ((bad = crt_find_bad(gone, 4 * PG, 70)) >= 0)
			snprintf(reason, sizeof(reason), "mapping the parent unmapped: byte %ld", bad);
		else if ((bad = crt_find_bad(fmap, PG, 100)) >= 0)
			snprintf(reason, sizeof(reason), "file pages: byte %ld", bad);
		else if ((bad = crt_find_bad(fmap + PG, PG, 110 + i)) >= 0)
			snprintf(reason, sizeof(reason), "own page of a file mapping: byte %ld", bad);
		else if ((bad = crt_find_bad(fdirty, 2 * PG, 100)) >= 0)
			snprintf(reason, sizeof(reason), "file page the parent wrote: byte %ld", bad);
		else if (msync(ADDED, PG, MS_ASYNC) == 0 || errno != ENOMEM)
			snprintf(reason, sizeof(reason), "the parent's later mapping is mapped here");
		else {
			for (int k = 0; k < 4 * PG; k++)
				if (zeroed[k]) {
					snprintf(reason, sizeof(reason), "untouched pages: byte %d is %#x", k, zeroed[k]);
					break;
				}
		}
		count++;
		memset(buf, 0, sizeof(buf));
		if (reason[0])
			snprintf(buf, sizeof(buf), "FAIL %s\n", reason);
		else
			snprintf(buf, sizeof(buf), "OK %d %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", (int)me, count, checked,
				 count);
		if (pwrite(rfd, buf, REC, (off_t)i * REC) != REC)
			_exit(2);
		crt_sleep_ms(5);
	}
}

/* check_child waits (until deadline, CLOCK_MONOTONIC ns) for a report of
 * child i newer than the last one seen, made after its check request
 * number req, and checks it. */
static void check_child(int i, int64_t deadline, uint64_t req)
{
	char buf[REC + 1];

	for (;;) {
		int pid = 0;
		uint64_t count = 0, again = 1, checked = 0;
		ssize_t n = pread(rfd, buf, REC, (off_t)i * REC);

		buf[n > 0 ? n : 0] = 0;
		if (!strncmp(buf, "FAIL", 4)) {
			CRT_CHECK(0, "child %d: %s", i, buf);
			return;
		}
		/* The count twice: a record read while written (torn) does
		 * not count. */
		if (sscanf(buf, "OK %d %" SCNu64 " %" SCNu64 " %" SCNu64, &pid, &count, &checked, &again) == 4 &&
		    count == again && count > seen[i] && checked >= req) {
			CRT_CHECK(pid == forked[i], "child %d reports pid %d, fork gave %d", i, pid, (int)forked[i]);
			seen[i] = count;
			return;
		}
		if (crt_now() > deadline) {
			CRT_CHECK(0, "child %d: no new report (last %" PRIu64 "): %s", i, seen[i], buf);
			return;
		}
		crt_sleep_ms(2);
	}
}

/* check_children asks children 0..n-1 to check their VmLck (a new
 * request number in their slot) and checks their reports made since. */
static void check_children(int n, int64_t deadline)
{
	static uint64_t req;

	req++;
	for (int i = 0; i < n; i++)
		if (pwrite(rfd, &req, sizeof(req), REQ_AT(i)) != sizeof(req))
			crt_die("check request");
	for (int i = 0; i < n; i++)
		check_child(i, deadline, req);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 6;
	unsigned char *added, *heap[8];

	if (n < 1 || n > MAXCHILD)
		crt_die("child count %d", n);
	crt_init();
	rfd = open("heirs.report", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (rfd < 0 || ftruncate(rfd, REQ_AT(MAXCHILD)))
		crt_die("report file");
	if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0))
		crt_die("PR_SET_THP_DISABLE");
	{
		struct sched_param sp = { 0 };

		if (sched_setscheduler(0, SCHED_BATCH, &sp) || setpriority(PRIO_PROCESS, 0, 2))
			crt_die("set scheduling");
	}
	common = anon(8 * PG);
	mine = anon(8 * PG);
	zeroed = anon(4 * PG);
	ro = anon(2 * PG);
	gone = anon(4 * PG);
	crt_fill(common, 8 * PG, 1);
	crt_fill(mine, 8 * PG, 2);
	crt_fill(gone, 4 * PG, 70);
	{
		unsigned char page[2 * PG];
		int fd = open("heirs.map", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

		crt_fill(page, 2 * PG, 100);
		if (fd < 0 || write(fd, page, 2 * PG) != 2 * PG)
			crt_die("heirs.map");
		fmap = mmap(NULL, 2 * PG, PROT_READ, MAP_PRIVATE, fd, 0);
		fdirty = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
		if (fmap == MAP_FAILED || fdirty == MAP_FAILED)
			crt_die("mmap heirs.map");
		close(fd);
	}
	for (int i = 0; i < n; i++) {
		pid_t root = getpid();
		pid_t p = fork();

		if (p < 0)
			crt_die("fork");
		if (p == 0)
			child(i, root);
		forked[i] = p;
	}
	crt_fill(zeroed, 4 * PG, 40);
	crt_fill(ro, 2 * PG, 50);
	crt_fill(fdirty, PG, 120);
	if (mprotect(ro, 2 * PG, PROT_READ) || munmap(gone, 4 * PG))
		crt_die("mprotect/munmap");
	added = mmap(ADDED, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (added != ADDED)
		crt_die("mmap at %p", ADDED);
	crt_fill(added, 4 * PG, 80);
	/* Small blocks come from the heap: it grows (brk). */
	for (int k = 0; k < 8; k++) {
		if (!(heap[k] = malloc(16 * 1024)))
			crt_die("malloc");
		crt_fill(heap[k], 16 * 1024, 90 + k);
	}
	check_children(n, crt_now() + 5 * 1000000000LL);
	if (crt_failed)
		crt_die("children not sound: %s", crt_reason);
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			int64_t deadline = crt_now() + 3 * 1000000000LL;

			check_children(n, deadline);
			CRT_CHECK(prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1, "root: THP disable %d, want 1",
				  prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
			{
				char why[96];

				CRT_CHECK(!crt_sched_differs(SCHED_BATCH, 2, why, sizeof(why)), "root: %s", why);
			}
			CRT_CHECK_PATTERN(common, 8 * PG, 1, "root common");
			CRT_CHECK_PATTERN(mine, 8 * PG, 2, "root mine");
			CRT_CHECK_PATTERN(zeroed, 4 * PG, 40, "root zeroed");
			CRT_CHECK_PATTERN(ro, 2 * PG, 50, "root ro");
			CRT_CHECK_PATTERN(added, 4 * PG, 80, "root added");
			CRT_CHECK_PATTERN(fmap, 2 * PG, 100, "root file mapping");
			CRT_CHECK_PATTERN(fdirty, PG, 120, "root written file page");
			CRT_CHECK_PATTERN(fdirty + PG, PG, 100 + PG, "root file page");
			for (int k = 0; k < 8; k++)
				CRT_CHECK_PATTERN(heap[k], 16 * 1024, 90 + k, "root heap");
			if (crt_usr2) {
				for (int i = 0; i < n; i++)
					kill(forked[i], SIGKILL);
				for (int i = 0; i < n; i++)
					waitpid(forked[i], NULL, 0);
			}
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(2);
	}
}
