/*
 * crt.h - the workload side of the crtools test protocol (see
 * test/harness/doc.go). Header only: every workload is one .c file.
 *
 *   crt_init()      at start: reads CRT_READY/CRT_RESULT/CRT_STARTS, draws a
 *                   random token, appends "pid token" to the start log,
 *                   installs the SIGUSR1 (verify) and SIGUSR2 (verify and
 *                   exit) handlers, without SA_RESTART so that blocking
 *                   calls return EINTR and the main loop notices.
 *   crt_ready()     once the state is set up: writes the pid to CRT_READY.
 *   crt_tick()      counts progress; call it as the work goes on.
 *   crt_pending()   non-zero when a verify was asked for.
 *   CRT_CHECK(cond, fmt, ...)  records the first failed check.
 *   crt_report()    writes "PASS token=T progress=N" or "FAIL reason" to
 *                   CRT_RESULT, and exits after SIGUSR2.
 *   crt_pass(), crt_fail(fmt, ...)  the same, for workloads that decide
 *                   themselves rather than through CRT_CHECK.
 *
 * crt_report itself checks that getpid() is what it was at start and that
 * progress went on since the previous report, so every workload proves
 * "same PID" and "carried on" without further code.
 */
#ifndef CRT_H
#define CRT_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t crt_usr1, crt_usr2;
static volatile uint64_t crt_progress;
static uint64_t crt_last_progress, crt_reports;
static uint64_t crt_token;
static pid_t crt_pid;
static const char *crt_ready_path, *crt_result_path, *crt_starts_path;
static char crt_reason[768];
static int crt_failed;

static void crt_sig(int sig)
{
	if (sig == SIGUSR1)
		crt_usr1 = 1;
	else
		crt_usr2 = 1;
}

/* crt_die reports a setup error and exits before the workload is ready. */
static void crt_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void crt_die(const char *fmt, ...)
{
	va_list ap;
	int e = errno;

	va_start(ap, fmt);
	fprintf(stderr, "workload setup failed: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, " (errno %d: %s)\n", e, strerror(e));
	va_end(ap);
	exit(2);
}

static const char *crt_env(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v)
		crt_die("environment variable %s is not set", name);
	return v;
}

/* crt_write_atomic writes s to path through path.tmp and a rename. */
static int crt_write_atomic(const char *path, const char *s)
{
	char tmp[4096];
	size_t len = strlen(s);
	int fd;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	if (write(fd, s, len) != (ssize_t)len) {
		close(fd);
		return -1;
	}
	if (close(fd) < 0)
		return -1;
	return rename(tmp, path);
}

static void crt_init(void)
{
	struct sigaction sa;
	char line[128];
	int fd;

	crt_ready_path = crt_env("CRT_READY");
	crt_result_path = crt_env("CRT_RESULT");
	crt_starts_path = crt_env("CRT_STARTS");
	crt_pid = getpid();
	if (getrandom(&crt_token, sizeof(crt_token), 0) != sizeof(crt_token))
		crt_die("getrandom");

	fd = open(crt_starts_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		crt_die("open start log %s", crt_starts_path);
	snprintf(line, sizeof(line), "%d %016" PRIx64 "\n", (int)crt_pid, crt_token);
	if (write(fd, line, strlen(line)) < 0)
		crt_die("write start log");
	close(fd);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = crt_sig;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0; /* no SA_RESTART: wake blocking calls */
	if (sigaction(SIGUSR1, &sa, NULL) || sigaction(SIGUSR2, &sa, NULL))
		crt_die("sigaction");
}

static void crt_ready(void)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	if (crt_write_atomic(crt_ready_path, buf))
		crt_die("write ready marker %s", crt_ready_path);
}

static inline void crt_tick(void)
{
	crt_progress++;
}

static inline int crt_pending(void)
{
	return crt_usr1 || crt_usr2;
}

static void crt_check_at(int ok, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void crt_check_at(int ok, int line, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (ok || crt_failed)
		return;
	crt_failed = 1;
	n = snprintf(crt_reason, sizeof(crt_reason), "line %d: ", line);
	va_start(ap, fmt);
	vsnprintf(crt_reason + n, sizeof(crt_reason) - n, fmt, ap);
	va_end(ap);
	/* One line in the result file. */
	for (char *p = crt_reason; *p; p++)
		if (*p == '\n')
			*p = ' ';
}

#define CRT_CHECK(cond, ...) crt_check_at(!!(cond), __LINE__, __VA_ARGS__)

/* crt_report writes the verdict; after SIGUSR2 it exits (0 PASS, 1 FAIL). */
static void crt_report(void)
{
	char buf[1024];
	int exit_after = crt_usr2;

	CRT_CHECK(getpid() == crt_pid, "pid is %d, was %d at start", (int)getpid(), (int)crt_pid);
	/* The first verify may come before any work was done. */
	CRT_CHECK(!crt_reports || crt_progress > crt_last_progress,
		  "no progress since the previous verify (counter %" PRIu64 ")", (uint64_t)crt_progress);
	crt_reports++;
	if (crt_failed)
		snprintf(buf, sizeof(buf), "FAIL %s\n", crt_reason);
	else
		snprintf(buf, sizeof(buf), "PASS token=%016" PRIx64 " progress=%" PRIu64 "\n", crt_token,
			 (uint64_t)crt_progress);
	crt_last_progress = crt_progress;
	crt_usr1 = 0;
	crt_usr2 = 0;
	if (crt_write_atomic(crt_result_path, buf))
		fprintf(stderr, "write result %s: %s\n", crt_result_path, strerror(errno));
	if (exit_after)
		exit(crt_failed ? 1 : 0);
	crt_failed = 0;
	crt_reason[0] = 0;
}

/* crt_pass reports the verdict of the checks made so far: PASS unless a
 * CRT_CHECK failed (or the pid changed, or nothing progressed). */
__attribute__((unused)) static void crt_pass(void)
{
	crt_report();
}

/* crt_fail reports FAIL with the reason (or an earlier failed check's). */
__attribute__((unused, format(printf, 1, 2))) static void crt_fail(const char *fmt, ...)
{
	char why[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	CRT_CHECK(0, "%s", why);
	crt_report();
}

/* crt_now returns CLOCK_MONOTONIC in nanoseconds. */
static inline int64_t crt_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* crt_sleep_ms sleeps, returning early (EINTR) when a signal arrives. */
static inline void crt_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* CRT_WAITFOR waits up to 3 s for cond to hold, and is its last value. */
#define CRT_WAITFOR(cond)                                                                            \
	({                                                                                           \
		int64_t crt_end_ = crt_now() + 3000000000LL;                                         \
		while (!(cond) && crt_now() < crt_end_)                                              \
			crt_sleep_ms(1);                                                             \
		(cond);                                                                              \
	})

/*
 * Workers: an array ws of n structs, each with a counter .count its
 * thread increments, its .tid, and .bad/.why where it reports a problem.
 * CRT_WORKERS_SNAPSHOT checks that none reported one and notes each
 * counter in before[]; CRT_CHECK_WORKERS_MOVED then waits up to 3 s for
 * every counter to pass its note, and checks that each did (a worker
 * stuck since the restore).
 */
#define CRT_WORKERS_SNAPSHOT(ws, n, before)                                                          \
	do {                                                                                         \
		for (int crt_i_ = 0; crt_i_ < (n); crt_i_++) {                                       \
			(before)[crt_i_] = (ws)[crt_i_].count;                                       \
			CRT_CHECK(!(ws)[crt_i_].bad, "worker %d (TID %d): %s", crt_i_,               \
				  (int)(ws)[crt_i_].tid, (ws)[crt_i_].why);                          \
		}                                                                                    \
	} while (0)
#define CRT_CHECK_WORKERS_MOVED(ws, n, before)                                                       \
	do {                                                                                         \
		int64_t crt_end_ = crt_now() + 3000000000LL;                                         \
		int crt_moved_;                                                                      \
		do {                                                                                 \
			crt_moved_ = 1;                                                              \
			for (int crt_i_ = 0; crt_i_ < (n); crt_i_++)                                 \
				crt_moved_ &= (ws)[crt_i_].count > (before)[crt_i_];                 \
			if (!crt_moved_)                                                             \
				crt_sleep_ms(5);                                                     \
		} while (!crt_moved_ && crt_now() < crt_end_);                                       \
		for (int crt_i_ = 0; crt_i_ < (n); crt_i_++)                                         \
			CRT_CHECK((ws)[crt_i_].count > (before)[crt_i_], "worker %d (TID %d) stuck at %" PRIu64, \
				  crt_i_, (int)(ws)[crt_i_].tid, (before)[crt_i_]);                   \
	} while (0)

/* crt_pattern is the byte expected at offset i of a region seeded seed. */
static inline unsigned char crt_pattern(uint64_t seed, uint64_t i)
{
	uint64_t x = (seed + i) * 0x9E3779B97F4A7C15ull;

	return (unsigned char)(x >> 56);
}

__attribute__((unused)) static void crt_fill(void *p, size_t len, uint64_t seed)
{
	unsigned char *b = p;

	for (size_t i = 0; i < len; i++)
		b[i] = crt_pattern(seed, i);
}

/* crt_find_bad returns the first offset that breaks the pattern, or -1. */
__attribute__((unused)) static long crt_find_bad(const void *p, size_t len, uint64_t seed)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < len; i++)
		if (b[i] != crt_pattern(seed, i))
			return (long)i;
	return -1;
}

/* crt_sched_differs returns non-zero, describing it in why, when the
 * calling thread's policy or nice value is not the wanted one (nice is per
 * thread: getpriority of 0 is the calling thread's). */
__attribute__((unused)) static int crt_sched_differs(int policy, int nice, char *why, size_t len)
{
	int p = sched_getscheduler(0), n;

	errno = 0;
	n = getpriority(PRIO_PROCESS, 0);
	if (p == policy && n == nice && !errno)
		return 0;
	snprintf(why, len, "policy %d nice %d, want policy %d nice %d", p, n, policy, nice);
	return 1;
}

/* crt_vmlck_kb is the process's locked memory (VmLck) in kB, -1 if unknown. */
__attribute__((unused)) static long crt_vmlck_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/status", "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmLck: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

#define CRT_CHECK_PATTERN(p, len, seed, what)                                                            \
	do {                                                                                             \
		long bad_ = crt_find_bad((p), (len), (seed));                                            \
		CRT_CHECK(bad_ < 0, "%s: byte %ld is %#x, want %#x", (what), bad_,                       \
			  bad_ < 0 ? 0 : ((const unsigned char *)(p))[bad_], crt_pattern((seed), bad_)); \
	} while (0)

#endif /* CRT_H */
