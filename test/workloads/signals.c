/*
 * signals: handlers with flags and masks, a blocked mask, pending signals
 * with their siginfo (process-wide and thread-directed queues), an
 * alternate signal stack, ITIMER_REAL and ITIMER_VIRTUAL, a POSIX timer.
 *
 * Verify reads every setting back, takes the pending signals with
 * sigtimedwait and checks their siginfo (then queues them again, so the
 * next verify finds them too), runs a handler on the alternate stack, and
 * waits for each timer to fire again.
 */
#include "crt.h"

#include <sys/time.h>

#define SIG_PEND_RT (SIGRTMIN + 3)     /* queued twice with values, process-wide */
#define SIG_PEND_THREAD (SIGRTMIN + 4) /* queued to the thread */
#define SIG_TIMER (SIGRTMIN + 5)       /* POSIX timer */
#define ALTSTACK_LEN (64 * 1024)

#ifndef SA_RESTORER
#define SA_RESTORER 0x04000000 /* set by libc on every handler */
#endif

static volatile sig_atomic_t alrm_count, vtalrm_count, timer_count, onstack_ok, onstack_runs;
static volatile int timer_value;
static char *altstack;

static void h_info(int sig, siginfo_t *si, void *uc)
{
	(void)sig, (void)si, (void)uc;
}

static void h_plain(int sig)
{
	(void)sig;
}

static void h_onstack(int sig)
{
	char here;

	(void)sig;
	onstack_ok = &here >= altstack && &here < altstack + ALTSTACK_LEN;
	onstack_runs++;
}

static void h_alrm(int sig)
{
	(void)sig;
	alrm_count++;
}

static void h_vtalrm(int sig)
{
	(void)sig;
	vtalrm_count++;
}

static void h_timer(int sig, siginfo_t *si, void *uc)
{
	(void)sig, (void)uc;
	timer_value = si->si_value.sival_int;
	timer_count++;
}

struct want {
	int sig;
	void *handler;
	int flags;
	int masked[3];
};

static struct want wants[] = {
	{ SIGHUP, (void *)h_info, SA_SIGINFO | SA_RESTART, { SIGINT, SIGTERM, 0 } },
	{ SIGINT, (void *)h_plain, SA_NODEFER, { SIGHUP, 0, 0 } },
	{ SIGPIPE, (void *)h_onstack, SA_ONSTACK, { 0, 0, 0 } },
	{ SIGTERM, (void *)SIG_IGN, 0, { 0, 0, 0 } },
	{ SIGALRM, (void *)h_alrm, SA_RESTART, { 0, 0, 0 } },
	{ SIGVTALRM, (void *)h_vtalrm, SA_RESTART, { 0, 0, 0 } },
	{ SIGWINCH, (void *)h_plain, SA_RESETHAND, { SIGQUIT, 0, 0 } },
};
#define NWANTS (sizeof(wants) / sizeof(wants[0]))

static void install(void)
{
	for (size_t i = 0; i < NWANTS; i++) {
		struct sigaction sa;

		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = (void (*)(int))wants[i].handler;
		sa.sa_flags = wants[i].flags;
		sigemptyset(&sa.sa_mask);
		for (int j = 0; j < 3 && wants[i].masked[j]; j++)
			sigaddset(&sa.sa_mask, wants[i].masked[j]);
		if (sigaction(wants[i].sig, &sa, NULL))
			crt_die("sigaction %d", wants[i].sig);
	}
}

static void check_handlers(void)
{
	for (size_t i = 0; i < NWANTS; i++) {
		struct sigaction sa;
		int flags = wants[i].flags | SA_RESTORER;

		sigaction(wants[i].sig, NULL, &sa);
		CRT_CHECK((void *)sa.sa_handler == wants[i].handler, "signal %d: handler %p, want %p", wants[i].sig,
			  (void *)sa.sa_handler, wants[i].handler);
		if (wants[i].handler != (void *)SIG_IGN)
			CRT_CHECK(sa.sa_flags == flags, "signal %d: flags %#x, want %#x", wants[i].sig, sa.sa_flags,
				  flags);
		for (int s = 1; s < SIGRTMAX; s++) {
			int want = 0;

			for (int j = 0; j < 3; j++)
				want |= wants[i].masked[j] == s;
			if (wants[i].handler != (void *)SIG_IGN)
				CRT_CHECK(sigismember(&sa.sa_mask, s) == want, "signal %d: handler mask has %d = %d",
					  wants[i].sig, s, sigismember(&sa.sa_mask, s));
		}
	}
}

static sigset_t blocked;

static void queue_pending(void)
{
	union sigval v;

	v.sival_int = 1234;
	if (sigqueue(getpid(), SIG_PEND_RT, v))
		crt_die("sigqueue");
	v.sival_int = 5678;
	if (sigqueue(getpid(), SIG_PEND_RT, v))
		crt_die("sigqueue");
	if (kill(getpid(), SIGQUIT))
		crt_die("kill SIGQUIT");
	if (syscall(SYS_tgkill, getpid(), gettid(), SIG_PEND_THREAD))
		crt_die("tgkill");
}

static void check_pending(void)
{
	struct timespec zero = { 0, 0 };
	sigset_t set, pend;
	siginfo_t si;

	sigpending(&pend);
	CRT_CHECK(sigismember(&pend, SIG_PEND_RT) && sigismember(&pend, SIGQUIT) &&
			  sigismember(&pend, SIG_PEND_THREAD),
		  "pending set lacks a signal (rt %d, quit %d, thread %d)", sigismember(&pend, SIG_PEND_RT),
		  sigismember(&pend, SIGQUIT), sigismember(&pend, SIG_PEND_THREAD));

	sigemptyset(&set);
	sigaddset(&set, SIG_PEND_RT);
	for (int i = 0; i < 2; i++) {
		int want = i == 0 ? 1234 : 5678;
		int got = sigtimedwait(&set, &si, &zero);

		CRT_CHECK(got == SIG_PEND_RT, "queued signal %d: sigtimedwait gives %d", i, got);
		if (got != SIG_PEND_RT)
			break;
		CRT_CHECK(si.si_code == SI_QUEUE && si.si_pid == crt_pid && si.si_value.sival_int == want,
			  "queued signal %d: code %d pid %d value %d, want SI_QUEUE %d %d", i, si.si_code, si.si_pid,
			  si.si_value.sival_int, (int)crt_pid, want);
	}
	CRT_CHECK(sigtimedwait(&set, &si, &zero) < 0, "a third queued signal appeared");

	sigemptyset(&set);
	sigaddset(&set, SIGQUIT);
	CRT_CHECK(sigtimedwait(&set, &si, &zero) == SIGQUIT && si.si_code == SI_USER && si.si_pid == crt_pid,
		  "SIGQUIT siginfo: code %d pid %d", si.si_code, si.si_pid);

	sigemptyset(&set);
	sigaddset(&set, SIG_PEND_THREAD);
	memset(&si, 0xff, sizeof(si));
	CRT_CHECK(sigtimedwait(&set, &si, &zero) == SIG_PEND_THREAD &&
			  (si.si_code == SI_TKILL || si.si_code == SI_USER) && si.si_pid == crt_pid,
		  "thread signal siginfo: code %d pid %d", si.si_code, si.si_pid);
	queue_pending();
}

static void check_mask(void)
{
	sigset_t cur;

	pthread_sigmask(SIG_BLOCK, NULL, &cur);
	for (int s = 1; s < SIGRTMAX; s++)
		CRT_CHECK(sigismember(&cur, s) == sigismember(&blocked, s), "blocked mask: signal %d is %d", s,
			  sigismember(&cur, s));
}

static void check_altstack(void)
{
	stack_t ss;

	CRT_CHECK(sigaltstack(NULL, &ss) == 0, "sigaltstack");
	CRT_CHECK(ss.ss_sp == altstack && ss.ss_size == ALTSTACK_LEN && ss.ss_flags == 0,
		  "altstack %p+%zu flags %d, want %p+%d", ss.ss_sp, ss.ss_size, ss.ss_flags, (void *)altstack,
		  ALTSTACK_LEN);
	onstack_runs = 0;
	raise(SIGPIPE);
	CRT_CHECK(onstack_runs == 1 && onstack_ok, "SIGPIPE handler ran %d times, on the alternate stack: %d",
		  onstack_runs, onstack_ok);
}

static void burn(long usec)
{
	int64_t end = crt_now() + usec * 1000;
	volatile uint64_t x = 0;

	while (crt_now() < end)
		x++;
}

static timer_t timer;

static void check_timers(void)
{
	struct itimerval it;
	struct itimerspec ts;
	int a = alrm_count, v = vtalrm_count, p = timer_count;
	int64_t end = crt_now() + 3000000000LL;

	getitimer(ITIMER_REAL, &it);
	CRT_CHECK(it.it_interval.tv_sec == 0 && it.it_interval.tv_usec == 200000, "ITIMER_REAL interval %ld.%06ld",
		  (long)it.it_interval.tv_sec, (long)it.it_interval.tv_usec);
	CRT_CHECK(it.it_value.tv_sec || it.it_value.tv_usec, "ITIMER_REAL is disarmed");
	getitimer(ITIMER_VIRTUAL, &it);
	CRT_CHECK(it.it_interval.tv_sec == 0 && it.it_interval.tv_usec == 20000, "ITIMER_VIRTUAL interval %ld.%06ld",
		  (long)it.it_interval.tv_sec, (long)it.it_interval.tv_usec);
	CRT_CHECK(timer_gettime(timer, &ts) == 0, "timer_gettime");
	CRT_CHECK(ts.it_interval.tv_sec == 0 && ts.it_interval.tv_nsec == 100000000, "POSIX timer interval %ld.%09ld",
		  (long)ts.it_interval.tv_sec, ts.it_interval.tv_nsec);

	/* Each timer must fire again. ITIMER_VIRTUAL needs CPU time. */
	while ((alrm_count == a || vtalrm_count == v || timer_count == p) && crt_now() < end)
		burn(2000);
	CRT_CHECK(alrm_count > a, "ITIMER_REAL did not fire within 3 s");
	CRT_CHECK(vtalrm_count > v, "ITIMER_VIRTUAL did not fire within 3 s of CPU");
	CRT_CHECK(timer_count > p, "POSIX timer did not fire within 3 s");
	CRT_CHECK(timer_value == 42, "POSIX timer value %d, want 42", timer_value);
}

int main(void)
{
	struct sigaction sa;
	struct sigevent sev;
	struct itimerval it;
	struct itimerspec ts;
	stack_t ss;

	crt_init();
	install();

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = h_timer;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIG_TIMER, &sa, NULL))
		crt_die("sigaction timer");

	altstack = malloc(ALTSTACK_LEN);
	ss.ss_sp = altstack;
	ss.ss_size = ALTSTACK_LEN;
	ss.ss_flags = 0;
	if (!altstack || sigaltstack(&ss, NULL))
		crt_die("sigaltstack");

	sigemptyset(&blocked);
	sigaddset(&blocked, SIG_PEND_RT);
	sigaddset(&blocked, SIG_PEND_THREAD);
	sigaddset(&blocked, SIGQUIT);
	sigaddset(&blocked, SIGRTMIN + 8);
	if (sigprocmask(SIG_SETMASK, &blocked, NULL))
		crt_die("sigprocmask");
	queue_pending();

	it.it_interval.tv_sec = 0;
	it.it_interval.tv_usec = 200000;
	it.it_value = it.it_interval;
	if (setitimer(ITIMER_REAL, &it, NULL))
		crt_die("setitimer real");
	it.it_interval.tv_usec = 20000;
	it.it_value = it.it_interval;
	if (setitimer(ITIMER_VIRTUAL, &it, NULL))
		crt_die("setitimer virtual");

	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_SIGNAL;
	sev.sigev_signo = SIG_TIMER;
	sev.sigev_value.sival_int = 42;
	if (timer_create(CLOCK_MONOTONIC, &sev, &timer))
		crt_die("timer_create");
	ts.it_interval.tv_sec = 0;
	ts.it_interval.tv_nsec = 100000000;
	ts.it_value = ts.it_interval;
	if (timer_settime(timer, 0, &ts, NULL))
		crt_die("timer_settime");

	crt_ready();
	for (;;) {
		if (crt_pending()) {
			check_handlers();
			check_mask();
			check_pending();
			check_altstack();
			check_timers();
			crt_report();
		}
		crt_tick();
		burn(200);
		crt_sleep_ms(2);
	}
	return 0;
}
