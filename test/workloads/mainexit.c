/*
 * mainexit [exit|park] [group|thread] [kid]: a process whose main thread leaves
 * while three threads count on:
 *
 *   waiter   blocked in pthread_cond_wait, counts its wake-ups;
 *   sleeper  sleeps 2 ms at a time, counts, wakes the waiter, and answers
 *            the verify signals (the only thread they reach);
 *   spinner  counts in a busy loop (yielding now and then).
 *
 *   exit  (default) main calls pthread_exit once the threads run: the
 *         leader is a zombie ('Z'), the process runs on.
 *   park  main blocks every signal and sleeps for ever in pause(): a
 *         process whose leader crtools can still dump, for a test that
 *         edits the images into those of an exited leader.
 *
 * With "kid", main first forks a child that sleeps until its parent is
 * gone (its pid in the file "kid"): the child of a process whose main
 * thread, its parent thread, exited. Verify checks that it is still there,
 * the process's child; the end kills it.
 *
 * The threads are named after their part (the process keeps main's name).
 * The threads' tids go to the file "tids" (waiter, sleeper, spinner).
 * Verify checks that each thread still has its tid (gettid), that every
 * counter moved, and with the second argument what the end is like:
 *
 *   group  (default) after SIGUSR2 the waiter and the spinner return, and
 *          the sleeper ends the process with exit_group(3) (PASS) or 1;
 *   thread after SIGUSR2 every thread ends with SYS_exit (the sleeper
 *          last, with 5): the process's status is then the last
 *          thread's code, 5 (Linux 6.18), not its leader's 0.
 */
#include "crt.h"

#include <pthread.h>
#include <sched.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static uint64_t gen;		/* under mu */
static volatile uint64_t waits, sleeps, spins;
static volatile int stop, bad;
static volatile pid_t tids[3];

static void block_verify_signals(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static void check_tid(int i)
{
	if ((pid_t)syscall(SYS_gettid) != tids[i])
		bad = 1 + i;
}

static void *waiter(void *arg)
{
	uint64_t seen = 0;

	(void)arg;
	block_verify_signals();
	tids[0] = (pid_t)syscall(SYS_gettid);
	pthread_setname_np(pthread_self(), "waiter");
	pthread_mutex_lock(&mu);
	while (!stop) {
		while (gen == seen && !stop)
			pthread_cond_wait(&cv, &mu);
		seen = gen;
		waits++;
		check_tid(0);
	}
	pthread_mutex_unlock(&mu);
	return NULL;
}

static void *spinner(void *arg)
{
	(void)arg;
	block_verify_signals();
	tids[2] = (pid_t)syscall(SYS_gettid);
	pthread_setname_np(pthread_self(), "spinner");
	while (!stop) {
		spins++;
		if ((spins & 0xfffff) == 0) {
			check_tid(2);
			sched_yield();
		}
	}
	return NULL;
}

static void wake_waiter(void)
{
	pthread_mutex_lock(&mu);
	gen++;
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&mu);
}

/* moved waits up to 3 s for every counter to pass its value in last[],
 * waking the waiter meanwhile, and stores the new values. */
static int moved(uint64_t last[3])
{
	int64_t end = crt_now() + 3000000000LL;
	int ok;

	for (;;) {
		ok = waits > last[0] && sleeps > last[1] && spins > last[2];
		if (ok || crt_now() > end)
			break;
		sleeps++;
		wake_waiter();
		crt_sleep_ms(1);
	}
	CRT_CHECK(waits > last[0], "waiter stopped at %" PRIu64, (uint64_t)waits);
	CRT_CHECK(spins > last[2], "spinner stopped at %" PRIu64, (uint64_t)spins);
	last[0] = waits, last[1] = sleeps, last[2] = spins;
	return ok;
}

static const char *end_mode = "group";
static pid_t kid;
static pthread_t waiter_th, spinner_th;

static void *sleeper(void *arg)
{
	uint64_t last[3] = {0, 0, 0};
	char buf[64];

	(void)arg;
	tids[1] = (pid_t)syscall(SYS_gettid);
	pthread_setname_np(pthread_self(), "sleeper");
	while (!tids[0] || !tids[2] || !waits || !spins) {
		wake_waiter();
		crt_sleep_ms(1);
	}
	snprintf(buf, sizeof(buf), "%d %d %d\n", (int)tids[0], (int)tids[1], (int)tids[2]);
	if (crt_write_atomic("tids", buf))
		crt_die("write tids");
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			int exit_after = crt_usr2;

			moved(last);
			check_tid(1);
			if (kid) {
				char path[64], st[512], *p;
				int fd, n = 0, ppid = 0;

				snprintf(path, sizeof(path), "/proc/%d/stat", (int)kid);
				fd = open(path, O_RDONLY | O_CLOEXEC);
				if (fd >= 0) {
					n = read(fd, st, sizeof(st) - 1);
					close(fd);
				}
				st[n > 0 ? n : 0] = 0;
				p = strrchr(st, ')');
				if (p)
					sscanf(p + 1, " %*c %d", &ppid);
				CRT_CHECK(ppid == getpid(), "child %d has parent %d, want %d", (int)kid, ppid, (int)getpid());
			}
			CRT_CHECK(!bad, "thread %d has another tid than at its start", bad - 1);
			crt_usr2 = 0; /* the end is ours (end_mode) */
			if (exit_after) {
				int failed = crt_failed;

				crt_report();
				if (kid)
					kill(kid, SIGKILL);
				stop = 1;
				wake_waiter();
				pthread_join(waiter_th, NULL);
				pthread_join(spinner_th, NULL);
				if (strcmp(end_mode, "thread") == 0)
					syscall(SYS_exit, 5);
				_exit(failed ? 1 : 3);
			}
			crt_report();
		}
		crt_tick();
		sleeps++;
		wake_waiter();
		crt_sleep_ms(2);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "exit";
	pthread_t th;
	sigset_t all;

	if (argc > 2)
		end_mode = argv[2];
	if (strcmp(mode, "exit") && strcmp(mode, "park"))
		crt_die("unknown mode %s", mode);
	if (strcmp(end_mode, "group") && strcmp(end_mode, "thread"))
		crt_die("unknown end %s", end_mode);
	crt_init();
	if (argc > 3 && strcmp(argv[3], "kid") == 0) {
		pid_t parent = getpid();
		char buf[32];

		kid = fork();
		if (kid < 0)
			crt_die("fork");
		if (kid == 0) {
			while (getppid() == parent)
				crt_sleep_ms(5);
			_exit(0);
		}
		snprintf(buf, sizeof(buf), "%d\n", (int)kid);
		if (crt_write_atomic("kid", buf))
			crt_die("write kid");
	}
	block_verify_signals();
	if (pthread_create(&waiter_th, NULL, waiter, NULL) || pthread_create(&spinner_th, NULL, spinner, NULL))
		crt_die("pthread_create");
	sigemptyset(&all);
	pthread_sigmask(SIG_SETMASK, &all, NULL); /* the sleeper inherits this */
	if (pthread_create(&th, NULL, sleeper, NULL))
		crt_die("pthread_create");
	if (strcmp(mode, "exit") == 0)
		pthread_exit(NULL);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, NULL);
	for (;;)
		pause();
}
