/*
 * sched: threads with scheduling of their own and a locked memory region.
 *
 *   main thread  nice 3, answers verify requests;
 *   worker 0     nice 5;          worker 1  nice 10;
 *   worker 2     SCHED_BATCH, nice 7;
 *   worker 3     SCHED_IDLE, nice 4 (sched_setattr keeps an idle thread's
 *                nice only through setpriority).
 *
 * Every worker counts and checks its own policy and nice value from
 * inside on every round (a thread's view of itself). A 16-page patterned
 * region is locked with mlock; its address is written to the file
 * "locked" for the test, which checks smaps' "lo" on it. A 64-page region
 * locked on fault (mlock2 MLOCK_ONFAULT: the images cannot say so) with
 * 2 pages written must come back without the other 62 faulted in; its
 * address is in the file "onfault".
 *
 * Verify checks each worker's own findings, that each one moved on, the
 * main thread's scheduling, the locked region's pattern and that the
 * process has locked memory (VmLck in /proc/self/status).
 */
#include "crt.h"

#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>

#define NW 4
#define LOCK_LEN (16 * 4096)
#define ONFAULT_LEN (64 * 4096)

struct worker {
	pthread_t th;
	int idx;
	int policy, nice;
	volatile pid_t tid;
	volatile uint64_t count;
	volatile int bad;
	char why[128];
};

static struct worker workers[NW] = {
	{ .idx = 0, .policy = SCHED_OTHER, .nice = 5 },
	{ .idx = 1, .policy = SCHED_OTHER, .nice = 10 },
	{ .idx = 2, .policy = SCHED_BATCH, .nice = 7 },
	{ .idx = 3, .policy = SCHED_IDLE, .nice = 4 },
};
static volatile int started;

static void *work(void *arg)
{
	struct worker *w = arg;
	struct sched_param sp = { 0 };
	sigset_t set;

	w->tid = gettid();
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (setpriority(PRIO_PROCESS, (id_t)w->tid, w->nice) || sched_setscheduler(0, w->policy, &sp))
		crt_die("worker %d: set scheduling", w->idx);
	__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
	for (;;) {
		if (!w->bad && crt_sched_differs(w->policy, w->nice, w->why, sizeof(w->why)))
			w->bad = 1;
		w->count++;
		crt_sleep_ms(1);
	}
	return NULL;
}

int main(void)
{
	unsigned char *locked, *onfault;
	char buf[64], why[128];

	crt_init();
	if (setpriority(PRIO_PROCESS, (id_t)gettid(), 3))
		crt_die("setpriority main");
	locked = mmap(NULL, LOCK_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (locked == MAP_FAILED)
		crt_die("mmap");
	crt_fill(locked, LOCK_LEN, 5);
	if (mlock(locked, LOCK_LEN))
		crt_die("mlock");
	snprintf(buf, sizeof(buf), "%p\n", (void *)locked);
	if (crt_write_atomic("locked", buf))
		crt_die("write locked");
	onfault = mmap(NULL, ONFAULT_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (onfault == MAP_FAILED || mlock2(onfault, ONFAULT_LEN, MLOCK_ONFAULT))
		crt_die("mlock2 on fault");
	crt_fill(onfault, 2 * 4096, 6);
	snprintf(buf, sizeof(buf), "%p\n", (void *)onfault);
	if (crt_write_atomic("onfault", buf))
		crt_die("write onfault");
	for (int i = 0; i < NW; i++)
		if (pthread_create(&workers[i].th, NULL, work, &workers[i]))
			crt_die("pthread_create");
	while (__atomic_load_n(&started, __ATOMIC_SEQ_CST) < NW)
		crt_sleep_ms(1);
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			uint64_t before[NW];

			CRT_WORKERS_SNAPSHOT(workers, NW, before);
			CRT_CHECK(crt_sched_differs(SCHED_OTHER, 3, why, sizeof(why)) == 0, "main thread: %s", why);
			CRT_CHECK_PATTERN(locked, LOCK_LEN, 5, "locked region");
			CRT_CHECK_PATTERN(onfault, 2 * 4096, 6, "region locked on fault");
			CRT_CHECK(crt_vmlck_kb() >= LOCK_LEN / 1024, "VmLck %ld kB, want >= %d", crt_vmlck_kb(),
				  LOCK_LEN / 1024);
			CRT_CHECK_WORKERS_MOVED(workers, NW, before);
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(1);
	}
	return 0;
}
