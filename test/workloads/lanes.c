/*
 * lanes: a root with N children (argv[1], default 12) that share nothing
 * but what they inherited from the root (its stdio), so that restore may
 * restore them on two tracers at once (engine/restore/lanes.go).
 *
 * Each child has state of its own: a name (PR_SET_NAME), a umask, a
 * parent-death signal (SIGKILL for even children, none for odd ones), a
 * blocked signal, a handler with flags, a file it opened itself (a
 * regular file, read-write, at an offset of its own), a patterned heap
 * block and a patterned private mapping, and a counter. Every 5 ms it
 * checks all of it, its pid and its parent (it exits if the parent is not
 * the root any more), and writes "OK pid count" or "FAIL reason" to its
 * report file, lane-I.report in the working directory.
 *
 * Verify checks that every child reports OK with the pid fork returned
 * and that its counter moves on (it waits for a new report), and the
 * root's own state (its heap pattern). Verify-and-exit kills and reaps
 * the children before the root exits.
 */
#include "crt.h"

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define MAXCHILD 64
#define HEAP_LEN (48 * 1024)
#define MAP_LEN (16 * 4096)
#define FILE_LEN 8192

static pid_t forked[MAXCHILD];
static uint64_t seen[MAXCHILD];

static void handler(int sig)
{
	(void)sig;
}

static void child(int i, pid_t parent)
{
	char name[16], path[64], report[64], reason[256], buf[320];
	unsigned char *heap, *map;
	mode_t mask = (mode_t)(i % 8) << 3 | 02;
	int sig = SIGRTMIN + 1 + (i % 8);
	struct sigaction sa, cur;
	sigset_t set, now;
	struct stat st;
	off_t off = 100 + 17 * i;
	uint64_t count = 0;
	ino_t ino;
	pid_t me = getpid();
	/* Half of them without one: restore must not leave its own. */
	int want_pdeath = i % 2 ? 0 : SIGKILL;
	int fd;

	signal(SIGUSR1, SIG_IGN);
	signal(SIGUSR2, SIG_IGN);
	if (want_pdeath)
		prctl(PR_SET_PDEATHSIG, want_pdeath);
	if (getppid() != parent)
		_exit(0);
	snprintf(name, sizeof(name), "lane-%d", i);
	prctl(PR_SET_NAME, name);
	umask(mask);
	sigemptyset(&set);
	sigaddset(&set, sig);
	sigprocmask(SIG_BLOCK, &set, NULL);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handler;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);

	snprintf(path, sizeof(path), "lane-%d.dat", i);
	snprintf(report, sizeof(report), "lane-%d.report", i);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	heap = malloc(HEAP_LEN);
	map = mmap(NULL, MAP_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (fd < 0 || !heap || map == MAP_FAILED) {
		crt_write_atomic(report, "FAIL setup\n");
		_exit(2);
	}
	crt_fill(heap, HEAP_LEN, 100 + i);
	crt_fill(map, MAP_LEN, 200 + i);
	memset(buf, 'a' + i % 26, 256);
	for (int k = 0; k < FILE_LEN; k += 256)
		if (write(fd, buf, 256) != 256)
			_exit(2);
	lseek(fd, off, SEEK_SET);
	fstat(fd, &st);
	ino = st.st_ino;

	for (;;) {
		char got[16] = "";
		int pdeath = 0;
		mode_t m;

		if (getppid() != parent)
			_exit(0);
		reason[0] = 0;
		m = umask(0);
		umask(m);
		prctl(PR_GET_NAME, got);
		sigprocmask(SIG_BLOCK, NULL, &now);
		sigaction(SIGALRM, NULL, &cur);
		prctl(PR_GET_PDEATHSIG, &pdeath);
		if (getpid() != me)
			snprintf(reason, sizeof(reason), "pid %d, was %d", (int)getpid(), (int)me);
		else if (strcmp(got, name))
			snprintf(reason, sizeof(reason), "name %s, want %s", got, name);
		else if (pdeath != want_pdeath)
			snprintf(reason, sizeof(reason), "parent-death signal %d, want %d", pdeath, want_pdeath);
		else if (m != mask)
			snprintf(reason, sizeof(reason), "umask %o, want %o", m, mask);
		else if (!sigismember(&now, sig))
			snprintf(reason, sizeof(reason), "signal %d not blocked", sig);
		else if (cur.sa_handler != handler || !(cur.sa_flags & SA_RESTART))
			snprintf(reason, sizeof(reason), "SIGALRM action lost");
		else if (lseek(fd, 0, SEEK_CUR) != off)
			snprintf(reason, sizeof(reason), "file offset %ld, want %ld", (long)lseek(fd, 0, SEEK_CUR),
				 (long)off);
		else if (fstat(fd, &st) || st.st_ino != ino || st.st_size != FILE_LEN ||
			 (fcntl(fd, F_GETFL) & O_ACCMODE) != O_RDWR || !(fcntl(fd, F_GETFD) & FD_CLOEXEC))
			snprintf(reason, sizeof(reason), "own file changed");
		else if (crt_find_bad(heap, HEAP_LEN, 100 + i) >= 0)
			snprintf(reason, sizeof(reason), "heap pattern broken at %ld", crt_find_bad(heap, HEAP_LEN, 100 + i));
		else if (crt_find_bad(map, MAP_LEN, 200 + i) >= 0)
			snprintf(reason, sizeof(reason), "mapping pattern broken at %ld", crt_find_bad(map, MAP_LEN, 200 + i));
		count++;
		if (reason[0])
			snprintf(buf, sizeof(buf), "FAIL %s\n", reason);
		else
			snprintf(buf, sizeof(buf), "OK %d %" PRIu64 "\n", (int)me, count);
		crt_write_atomic(report, buf);
		crt_sleep_ms(5);
	}
}

/* check_child waits (until deadline, CLOCK_MONOTONIC ns) for a report of
 * child i newer than the last one seen, and checks it. */
static void check_child(int i, int64_t deadline)
{
	char report[64], buf[320];

	snprintf(report, sizeof(report), "lane-%d.report", i);
	for (;;) {
		int pid = 0;
		uint64_t count = 0;
		ssize_t n = -1;
		int fd = open(report, O_RDONLY | O_CLOEXEC);

		if (fd >= 0) {
			n = read(fd, buf, sizeof(buf) - 1);
			close(fd);
		}
		buf[n > 0 ? n : 0] = 0;
		if (!strncmp(buf, "FAIL", 4)) {
			CRT_CHECK(0, "child %d: %s", i, buf);
			return;
		}
		if (sscanf(buf, "OK %d %" SCNu64, &pid, &count) == 2 && count > seen[i]) {
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

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 12;
	unsigned char *heap;

	if (n < 1 || n > MAXCHILD)
		crt_die("child count %d", n);
	crt_init();
	heap = malloc(HEAP_LEN);
	if (!heap)
		crt_die("malloc");
	crt_fill(heap, HEAP_LEN, 7);
	for (int i = 0; i < n; i++) {
		pid_t root = getpid();
		pid_t p = fork();

		if (p < 0)
			crt_die("fork");
		if (p == 0)
			child(i, root);
		forked[i] = p;
	}
	for (int i = 0; i < n; i++)
		check_child(i, crt_now() + 5 * 1000000000LL);
	if (crt_failed)
		crt_die("children not sound: %s", crt_reason);
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			/* One bound for all, well within the harness's wait. */
			int64_t deadline = crt_now() + 3 * 1000000000LL;

			for (int i = 0; i < n; i++)
				check_child(i, deadline);
			CRT_CHECK_PATTERN(heap, HEAP_LEN, 7, "root heap");
			if (crt_usr2) {
				/* Nothing writes into the working directory once
				 * the root is gone: the test removes it. */
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
