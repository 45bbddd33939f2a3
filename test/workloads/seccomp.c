/*
 * seccomp: a tree of processes under seccomp filters and strict mode.
 *
 *   P (the root, 2 threads: main and worker W)
 *       sets no_new_privs and installs, from main, with TSYNC (both
 *       threads then share one chain):
 *         F1: getppid fails with EPERM;
 *         F2 (SECCOMP_FILTER_FLAG_LOG): getpgrp fails with EACCES.
 *   C3  forked before any filter: its main thread asks its second
 *       thread S, in strict mode (read, write, exit and sigreturn only),
 *       over a pipe to add one to a number and answer over another.
 *   C1  forked with F1, F2; adds F3 (uname fails with EXDEV), then clones
 *       a worker W1 that adds F4 (prctl fails with EDOM) for itself. A
 *       restore sets W1's no_new_privs with prctl after its filters: it
 *       works only if the restore suspends them for its own calls.
 *   C2  forked with F1, F2, nothing of its own; forks
 *   C2a which adds F5 (uname fails with ENOLINK): single-threaded like
 *       its parent, a restore makes it an heir (forked from C2 late),
 *       which must not keep filters of C2 it did not have.
 *
 * Every thread counts and checks, from inside, that its filtered calls
 * fail with their errno and that the others work (shared memory holds the
 * counts and findings of all of them). Verify (in P's main thread) checks
 * the findings, that every thread moved on, and every thread's
 * /proc/PID/task/TID/status: "Seccomp:", "Seccomp_filters:" and
 * "NoNewPrivs:" as set up; the verify before exit, that one more filter
 * installed with TSYNC in P works (P's threads share one chain). The tids are in the file "tids", one
 * "name pid tid" line a thread.
 */
#include "crt.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/utsname.h>

enum { W_P, W_C1, W_C1W, W_C2, W_C2A, W_C3, W_C3S, NW };

struct worker {
	volatile uint64_t count;
	volatile pid_t pid, tid;
	volatile int bad;
	char why[128];
	/* What its status must say. */
	int mode, filters, nnp;
};

static struct worker *ws; /* NW of them, shared by the whole tree */
static pid_t root;
static volatile int filtered; /* P's filters are installed */

static void bad(struct worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad(struct worker *w, const char *fmt, ...)
{
	va_list ap;

	if (w->bad)
		return;
	va_start(ap, fmt);
	vsnprintf(w->why, sizeof(w->why), fmt, ap);
	va_end(ap);
	w->bad = 1;
}

/* deny installs a filter that makes syscall nr fail with err. */
static void deny(int nr, int err, unsigned int flags)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | err),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };

	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog))
		crt_die("seccomp filter for syscall %d", nr);
}

/* allow_tsync installs a filter that allows everything, with TSYNC: 0,
 * or the tid of a thread that does not share the caller's chain. */
static long allow_tsync(void)
{
	struct sock_filter f[] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW) };
	struct sock_fprog prog = { .len = 1, .filter = f };

	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
}

/* expect checks that the syscall's result r (errno e) is a success
 * (want 0) or a failure with errno want. */
static void expect(struct worker *w, const char *name, long r, int e, int want)
{
	if (want == 0 && r < 0)
		bad(w, "%s failed with errno %d, want success", name, e);
	if (want != 0 && (r != -1 || e != want))
		bad(w, "%s returned %ld errno %d, want errno %d", name, r, e, want);
}

/* check makes the calls the filters are about: each fails with the
 * errno given (0: succeeds). getpgrp only when logged is set: F2 has
 * SECCOMP_FILTER_FLAG_LOG, and the kernel logs each EACCES it returns. */
static void check(struct worker *w, int ppid, int pgrp, int uts, int pctl, int logged)
{
	struct utsname u;
	long r;

	errno = 0;
	r = syscall(SYS_getppid);
	expect(w, "getppid", r, errno, ppid);
	if (logged) {
		errno = 0;
		r = syscall(SYS_getpgrp);
		expect(w, "getpgrp", r, errno, pgrp);
	}
	errno = 0;
	r = syscall(SYS_uname, &u);
	expect(w, "uname", r, errno, uts);
	errno = 0;
	r = syscall(SYS_prctl, PR_GET_DUMPABLE, 0, 0, 0, 0);
	expect(w, "prctl", r, errno, pctl);
}

/* tick counts, and every 64 rounds checks (getpgrp every 1024). */
static void tick(struct worker *w, int ppid, int pgrp, int uts, int pctl)
{
	if (w->count % 64 == 0)
		check(w, ppid, pgrp, uts, pctl, w->count % 1024 == 0);
	w->count++;
}

static void start(struct worker *w, int mode, int filters, int nnp)
{
	w->pid = getpid();
	w->tid = gettid();
	w->mode = mode;
	w->filters = filters;
	w->nnp = nnp;
}

static void orphan_guard(void)
{
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) || kill(root, 0))
		_exit(3);
}

static void *p_worker(void *arg)
{
	(void)arg;
	start(&ws[W_P], 2, 2, 1);
	for (;;) {
		/* Installed by main with TSYNC after this thread began. */
		if (filtered)
			tick(&ws[W_P], EPERM, EACCES, 0, 0);
		crt_sleep_ms(1);
	}
	return NULL;
}

static void *c1_worker(void *arg)
{
	(void)arg;
	deny(SYS_prctl, EDOM, 0);
	start(&ws[W_C1W], 2, 4, 1);
	for (;;) {
		tick(&ws[W_C1W], EPERM, EACCES, EXDEV, EDOM);
		crt_sleep_ms(1);
	}
	return NULL;
}

static int req[2], resp[2];

/* strict_server is C3's thread S: strict mode from its second call on. */
static void *strict_server(void *arg)
{
	sigset_t all;
	uint64_t x;

	(void)arg;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	start(&ws[W_C3S], 1, 0, 0);
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)) {
		bad(&ws[W_C3S], "PR_SET_SECCOMP strict: errno %d", errno);
		for (;;)
			pause();
	}
	for (;;) {
		/* Nothing but read and write from here on. */
		if (syscall(SYS_read, req[0], &x, sizeof(x)) != sizeof(x))
			continue;
		x++;
		ws[W_C3S].count++;
		syscall(SYS_write, resp[1], &x, sizeof(x));
	}
	return NULL;
}

static void run_c3(void)
{
	pthread_t th;
	uint64_t x = 1, y;

	orphan_guard();
	if (pipe(req) || pipe(resp))
		crt_die("pipe");
	start(&ws[W_C3], 0, 0, 0);
	if (pthread_create(&th, NULL, strict_server, NULL))
		crt_die("pthread_create strict");
	for (;; x += 3) {
		if (write(req[1], &x, sizeof(x)) != sizeof(x) || read(resp[0], &y, sizeof(y)) != sizeof(y))
			bad(&ws[W_C3], "pipe to the strict thread: errno %d", errno);
		else if (y != x + 1)
			bad(&ws[W_C3], "strict thread answered %" PRIu64 " to %" PRIu64, y, x);
		tick(&ws[W_C3], 0, 0, 0, 0);
		crt_sleep_ms(1);
	}
}

static void run_c1(void)
{
	pthread_t th;

	orphan_guard();
	deny(SYS_uname, EXDEV, 0);
	start(&ws[W_C1], 2, 3, 1);
	if (pthread_create(&th, NULL, c1_worker, NULL))
		crt_die("pthread_create c1");
	for (;;) {
		tick(&ws[W_C1], EPERM, EACCES, EXDEV, 0);
		crt_sleep_ms(1);
	}
}

static pid_t child(void (*run)(void));

static void run_c2a(void)
{
	orphan_guard();
	deny(SYS_uname, ENOLINK, 0);
	start(&ws[W_C2A], 2, 3, 1);
	for (;;) {
		tick(&ws[W_C2A], EPERM, EACCES, ENOLINK, 0);
		crt_sleep_ms(1);
	}
}

static void run_c2(void)
{
	orphan_guard();
	child(run_c2a);
	start(&ws[W_C2], 2, 2, 1);
	for (;;) {
		tick(&ws[W_C2], EPERM, EACCES, 0, 0);
		crt_sleep_ms(1);
	}
}

static pid_t child(void (*run)(void))
{
	pid_t pid = fork();

	if (pid < 0)
		crt_die("fork");
	if (pid == 0) {
		run();
		_exit(0);
	}
	return pid;
}

/* status_of reads "Seccomp:", "Seccomp_filters:" and "NoNewPrivs:" of a
 * thread; 0 if the file could be read. */
static int status_of(pid_t pid, pid_t tid, int *mode, int *filters, int *nnp)
{
	char path[64], line[256];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/status", (int)pid, (int)tid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	*mode = *filters = *nnp = -1;
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "Seccomp: %d", mode);
		sscanf(line, "Seccomp_filters: %d", filters);
		sscanf(line, "NoNewPrivs: %d", nnp);
	}
	fclose(f);
	return 0;
}

int main(void)
{
	static const char *names[NW] = { "P", "C1", "C1W", "C2", "C2a", "C3", "C3S" };
	pthread_t th;
	char buf[1024];
	size_t n = 0;

	crt_init();
	root = getpid();
	ws = mmap(NULL, sizeof(*ws) * NW, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (ws == MAP_FAILED)
		crt_die("mmap");
	child(run_c3);
	if (pthread_create(&th, NULL, p_worker, NULL))
		crt_die("pthread_create");
	while (!ws[W_P].tid)
		crt_sleep_ms(1);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		crt_die("no_new_privs");
	deny(SYS_getppid, EPERM, SECCOMP_FILTER_FLAG_TSYNC);
	deny(SYS_getpgrp, EACCES, SECCOMP_FILTER_FLAG_TSYNC | SECCOMP_FILTER_FLAG_LOG);
	filtered = 1;
	child(run_c1);
	child(run_c2);
	for (int i = 0; i < NW; i++)
		while (!ws[i].tid || ws[i].count < 2) {
			if (ws[i].bad)
				crt_die("%s: %s", names[i], ws[i].why);
			crt_sleep_ms(1);
		}
	for (int i = 0; i < NW; i++)
		n += snprintf(buf + n, sizeof(buf) - n, "%s %d %d\n", names[i], (int)ws[i].pid, (int)ws[i].tid);
	n += snprintf(buf + n, sizeof(buf) - n, "Pmain %d %d\n", (int)root, (int)root);
	if (crt_write_atomic("tids", buf))
		crt_die("write tids");
	crt_ready();
	for (int round = 0;; round++) {
		if (crt_pending()) {
			uint64_t before[NW];
			struct worker me = { 0 };
			int mode, filters, nnp;

			CRT_WORKERS_SNAPSHOT(ws, NW, before);
			check(&me, EPERM, EACCES, 0, 0, 1);
			CRT_CHECK(!me.bad, "main thread: %s", me.why);
			CRT_CHECK(status_of(root, root, &mode, &filters, &nnp) == 0 && mode == 2 && filters == 2 &&
					  nnp == 1,
				  "main thread: Seccomp %d, Seccomp_filters %d, NoNewPrivs %d; want 2, 2, 1", mode,
				  filters, nnp);
			for (int i = 0; i < NW; i++) {
				struct worker *w = &ws[i];

				CRT_CHECK(status_of(w->pid, w->tid, &mode, &filters, &nnp) == 0, "%s: no status",
					  names[i]);
				CRT_CHECK(mode == w->mode && filters == w->filters && nnp == w->nnp,
					  "%s (pid %d tid %d): Seccomp %d, Seccomp_filters %d, NoNewPrivs %d; want %d, %d, %d",
					  names[i], (int)w->pid, (int)w->tid, mode, filters, nnp, w->mode, w->filters,
					  w->nnp);
			}
			CRT_CHECK_WORKERS_MOVED(ws, NW, before);
			if (crt_usr2) {
				/* Last: one more filter with TSYNC works only
				 * while both threads have one chain. */
				long r = allow_tsync();

				CRT_CHECK(r == 0, "a filter with TSYNC: %ld (errno %d)", r, errno);
			}
			crt_report();
		}
		if (round % 64 == 0) {
			struct worker me = { 0 };

			check(&me, EPERM, EACCES, 0, 0, 0);
			CRT_CHECK(!me.bad, "main thread: %s", me.why);
		}
		crt_tick();
		crt_sleep_ms(1);
	}
	return 0;
}
