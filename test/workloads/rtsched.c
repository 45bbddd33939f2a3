/*
 * rtsched: real-time and other scheduling policies, each with its
 * priority, nice value and reset-on-fork flag, on the main thread and on
 * threads:
 *
 *   main thread  nice 6, then SCHED_FIFO priority 10 | SCHED_RESET_ON_FORK
 *                (a real-time thread keeps its nice value for later);
 *   worker 0     nice -3, then SCHED_RR priority 20;
 *   worker 1     SCHED_IDLE, nice 9;
 *   worker 2     SCHED_BATCH | SCHED_RESET_ON_FORK, nice 2.
 *
 * Every thread sleeps 1 ms between rounds: a real-time thread here never
 * spins. Every worker checks its own scheduling on every round
 * (sched_getscheduler, which has the reset-on-fork flag, sched_getparam
 * and getpriority of itself); verify checks their findings, that each
 * moved on, and the main thread's own scheduling.
 */
#include "crt.h"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>

#define NW 3

struct sched {
	int policy; /* with SCHED_RESET_ON_FORK when set */
	int prio, nice;
};

struct worker {
	pthread_t th;
	int idx;
	struct sched want;
	volatile pid_t tid;
	volatile uint64_t count;
	volatile int bad;
	char why[160];
};

static struct worker workers[NW] = {
	{ .idx = 0, .want = { SCHED_RR, 20, -3 } },
	{ .idx = 1, .want = { SCHED_IDLE, 0, 9 } },
	{ .idx = 2, .want = { SCHED_BATCH | SCHED_RESET_ON_FORK, 0, 2 } },
};
static const struct sched main_want = { SCHED_FIFO | SCHED_RESET_ON_FORK, 10, 6 };
static volatile int started;

/* set gives the calling thread s: the nice value first (sched_setscheduler
 * sets no nice value, and a real-time thread keeps the one it had). */
static int set(const struct sched *s)
{
	struct sched_param sp = { .sched_priority = s->prio };

	if (setpriority(PRIO_PROCESS, (id_t)gettid(), s->nice))
		return -1;
	return sched_setscheduler(0, s->policy, &sp);
}

/* differs returns non-zero, describing it in why, when the calling
 * thread's scheduling is not s. */
static int differs(const struct sched *s, char *why, size_t len)
{
	struct sched_param sp = { 0 };
	int p = sched_getscheduler(0), n, r = sched_getparam(0, &sp);

	errno = 0;
	n = getpriority(PRIO_PROCESS, 0);
	if (p == s->policy && r == 0 && sp.sched_priority == s->prio && n == s->nice && !errno)
		return 0;
	snprintf(why, len, "policy %#x priority %d nice %d, want policy %#x priority %d nice %d", p,
		 sp.sched_priority, n, s->policy, s->prio, s->nice);
	return 1;
}

static void *work(void *arg)
{
	struct worker *w = arg;
	sigset_t set_;

	w->tid = gettid();
	sigemptyset(&set_);
	sigaddset(&set_, SIGUSR1);
	sigaddset(&set_, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set_, NULL);
	if (set(&w->want))
		crt_die("worker %d: set scheduling policy %#x priority %d nice %d", w->idx, w->want.policy,
			w->want.prio, w->want.nice);
	__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
	for (;;) {
		if (!w->bad && differs(&w->want, w->why, sizeof(w->why)))
			w->bad = 1;
		w->count++;
		crt_sleep_ms(1);
	}
	return NULL;
}

int main(void)
{
	char why[160];

	crt_init();
	for (int i = 0; i < NW; i++)
		if (pthread_create(&workers[i].th, NULL, work, &workers[i]))
			crt_die("pthread_create");
	while (__atomic_load_n(&started, __ATOMIC_SEQ_CST) < NW)
		crt_sleep_ms(1);
	/* Last: the threads above are created by a SCHED_OTHER thread. */
	if (set(&main_want))
		crt_die("main thread: set SCHED_FIFO priority %d nice %d", main_want.prio, main_want.nice);
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			uint64_t before[NW];

			CRT_WORKERS_SNAPSHOT(workers, NW, before);
			CRT_CHECK(!differs(&main_want, why, sizeof(why)), "main thread: %s", why);
			CRT_CHECK_WORKERS_MOVED(workers, NW, before);
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(1);
	}
	return 0;
}
