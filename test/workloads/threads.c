/*
 * threads [N]: N worker threads (default 8, at least 3) and the main
 * thread, which answers verify requests (workers block SIGUSR1/SIGUSR2).
 *
 *   every worker  counts in its own slot, keeps an id in a TLS variable,
 *                 blocks its own real-time signal and runs on its own
 *                 alternate signal stack, and checks all three on every
 *                 round (a thread cannot be checked from outside), and
 *                 sleeps with a value of its own in xmm7, checked after;
 *   workers 0, 1  play mutex/condvar ping-pong;
 *   the last one  sleeps for an hour in one nanosleep (it must neither
 *                 return early nor lose its place).
 *
 * Verify checks that every worker still has the TID it started with, that
 * the process has exactly N+1 threads, that each busy worker and the
 * ping-pong moved on, that the sleeper still sleeps, and that no worker
 * saw its TLS, mask or altstack change.
 */
#include "crt.h"

#include <dirent.h>
#include <pthread.h>

#define ALT_LEN (16 * 1024)
#define MAXT 512

struct worker {
	pthread_t th;
	int idx;
	volatile pid_t tid;
	volatile uint64_t count;
	volatile int bad; /* first problem the thread saw itself */
	char why[160];
	char *alt;
	char pad[64];
};

static struct worker workers[MAXT];
static int nthreads;
static __thread uint64_t tls_id;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int turn;
static volatile uint64_t pingpongs;
static volatile int started;
static volatile int sleeper_woke;

static int own_signal(int idx)
{
	return SIGRTMIN + 10 + idx % 16;
}

static void thread_bad(struct worker *w, const char *why)
{
	if (!w->bad) {
		snprintf(w->why, sizeof(w->why), "%s", why);
		w->bad = 1;
	}
}

static void self_check(struct worker *w)
{
	sigset_t cur;
	stack_t ss;

	if (tls_id != (uint64_t)w->idx * 1000 + 7)
		thread_bad(w, "TLS variable changed");
	if (gettid() != w->tid)
		thread_bad(w, "gettid() changed");
	pthread_sigmask(SIG_BLOCK, NULL, &cur);
	if (!sigismember(&cur, own_signal(w->idx)) || !sigismember(&cur, SIGUSR1) ||
	    sigismember(&cur, own_signal(w->idx + 1)))
		thread_bad(w, "blocked mask changed");
	if (sigaltstack(NULL, &ss) || ss.ss_sp != w->alt || ss.ss_size != ALT_LEN)
		thread_bad(w, "alternate stack changed");
}

/* Sleeps about ms with a raw nanosleep while a value of the worker's own
 * sits in xmm7, and checks it after: a worker is mostly frozen in here,
 * so its FPU/SSE registers must be restored with it (glibc's sleep would
 * be free to use xmm7 itself). */
static void fpu_sleep_ms(struct worker *w, int ms)
{
	struct timespec ts = { 0, ms * 1000000L };
	uint64_t want = 0x5eed000000000000ULL | (uint64_t)w->idx, got;

	__asm__ volatile("movq %[in], %%xmm7\n\t"
			 "mov $35, %%eax\n\t" /* SYS_nanosleep */
			 "mov %[ts], %%rdi\n\t"
			 "xor %%esi, %%esi\n\t"
			 "syscall\n\t"
			 "movq %%xmm7, %[out]\n\t"
			 : [out] "=r"(got)
			 : [in] "r"(want), [ts] "r"(&ts)
			 : "rax", "rdi", "rsi", "rcx", "r11", "xmm7", "memory");
	if (got != want)
		thread_bad(w, "FPU register xmm7 changed");
}

static void *work(void *arg)
{
	struct worker *w = arg;
	sigset_t set;
	stack_t ss;

	w->tid = gettid();
	tls_id = (uint64_t)w->idx * 1000 + 7;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, own_signal(w->idx));
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	w->alt = malloc(ALT_LEN);
	ss.ss_sp = w->alt;
	ss.ss_size = ALT_LEN;
	ss.ss_flags = 0;
	if (!w->alt || sigaltstack(&ss, NULL))
		thread_bad(w, "sigaltstack failed");
	__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);

	if (w->idx == nthreads - 1) {
		struct timespec hour = { 3600, 0 };
		int64_t t0 = crt_now();

		self_check(w);
		/* One long sleep; workers block every signal we send, so
		 * nothing should wake it before the hour is over. */
		while (nanosleep(&hour, &hour) < 0 && errno == EINTR)
			;
		if (crt_now() - t0 < 3600LL * 1000000000)
			thread_bad(w, "hour-long sleep ended early");
		sleeper_woke = 1;
		for (;;)
			pause();
	}
	for (;;) {
		self_check(w);
		if (w->idx < 2) {
			pthread_mutex_lock(&mu);
			while (turn != w->idx)
				pthread_cond_wait(&cv, &mu);
			turn = !turn;
			pingpongs++;
			pthread_cond_broadcast(&cv);
			pthread_mutex_unlock(&mu);
		}
		w->count++;
		fpu_sleep_ms(w, 1);
	}
	return NULL;
}

static int count_tasks(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static void verify(void)
{
	uint64_t before[MAXT], pp = pingpongs;
	int64_t end = crt_now() + 3000000000LL;
	char path[64];
	int moved;

	for (int i = 0; i < nthreads; i++)
		before[i] = workers[i].count;
	CRT_CHECK(count_tasks() == nthreads + 1, "%d threads, want %d", count_tasks(), nthreads + 1);
	for (int i = 0; i < nthreads; i++) {
		snprintf(path, sizeof(path), "/proc/self/task/%d", (int)workers[i].tid);
		CRT_CHECK(access(path, F_OK) == 0, "worker %d: TID %d is gone", i, (int)workers[i].tid);
		CRT_CHECK(!workers[i].bad, "worker %d (TID %d): %s", i, (int)workers[i].tid, workers[i].why);
	}
	CRT_CHECK(!sleeper_woke, "the sleeping worker woke up");
	do {
		moved = pingpongs > pp;
		for (int i = 0; i < nthreads - 1; i++)
			moved &= workers[i].count > before[i];
		if (!moved)
			crt_sleep_ms(5);
	} while (!moved && crt_now() < end);
	CRT_CHECK(pingpongs > pp, "mutex/condvar ping-pong stuck at %" PRIu64, pp);
	for (int i = 0; i < nthreads - 1; i++)
		CRT_CHECK(workers[i].count > before[i], "worker %d (TID %d) stuck at %" PRIu64, i,
			  (int)workers[i].tid, before[i]);
	CRT_CHECK(tls_id == 999999, "main thread TLS %" PRIu64, tls_id);
}

int main(int argc, char **argv)
{
	crt_init();
	nthreads = argc > 1 ? atoi(argv[1]) : 8;
	if (nthreads < 3 || nthreads > MAXT) {
		fprintf(stderr, "usage: threads [N], 3 <= N <= %d\n", MAXT);
		return 2;
	}
	tls_id = 999999;
	for (int i = 0; i < nthreads; i++) {
		workers[i].idx = i;
		if (pthread_create(&workers[i].th, NULL, work, &workers[i]))
			crt_die("pthread_create %d", i);
	}
	while (started < nthreads)
		crt_sleep_ms(1);
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			verify();
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(2);
	}
	return 0;
}
