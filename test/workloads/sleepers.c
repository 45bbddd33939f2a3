/*
 * sleepers MODE: a task that spends its time blocked in one call, so that
 * a dump catches it inside that call.
 *
 *   nanosleep   relative 300 ms sleeps; an interrupted sleep goes on with
 *               the remaining time, as careful programs do
 *   select      select() with a 300 ms timeout and no fds, same rule
 *   pause       pause(); only SIGUSR1/SIGUSR2 wake it
 *   sigsuspend  SIGUSR1/SIGUSR2 blocked, sigsuspend() with them unblocked
 *
 * For the timed modes every completed sleep must have lasted at least its
 * 300 ms (CLOCK_MONOTONIC), never less; a verify is answered when the
 * current sleep completes, so a sleep that never ends shows as no answer.
 * For pause and sigsuspend every return must come with SIGUSR1/SIGUSR2 (no
 * spurious wake-up), and sigsuspend must put the blocked mask back.
 */
#include "crt.h"

#include <sys/select.h>

#define SLEEP_NS 300000000LL

static int64_t shortest = -1, longest;

static void timed(int use_select)
{
	for (;;) {
		int64_t t0 = crt_now(), el;

		if (use_select) {
			struct timeval tv = { 0, SLEEP_NS / 1000 };

			/* Linux select() updates tv with the time left. */
			while (select(0, NULL, NULL, NULL, &tv) < 0 && errno == EINTR)
				;
		} else {
			struct timespec req = { 0, SLEEP_NS }, rem;

			while (nanosleep(&req, &rem) < 0 && errno == EINTR)
				req = rem;
		}
		el = crt_now() - t0;
		if (shortest < 0 || el < shortest)
			shortest = el;
		if (el > longest)
			longest = el;
		/* Not early. (The upper bound is the verify timeout: a dump and
		 * restore in the middle of a sleep legitimately stretch it.) */
		CRT_CHECK(el >= SLEEP_NS, "a %lld ns sleep ended after %lld ns", SLEEP_NS, (long long)el);
		crt_tick();
		if (crt_pending())
			crt_report();
	}
}

static void paused(void)
{
	for (;;) {
		/* pause() cannot close the window between this check and the
		 * call (sigsuspend can); keep it a few instructions wide. */
		if (!crt_pending()) {
			pause();
			CRT_CHECK(crt_pending(), "pause() returned without SIGUSR1/SIGUSR2");
		}
		crt_tick();
		if (crt_pending())
			crt_report();
	}
}

static void suspended(void)
{
	sigset_t block, wait_mask, cur;

	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigaddset(&block, SIGUSR2);
	sigaddset(&block, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &block, NULL))
		crt_die("sigprocmask");
	sigprocmask(SIG_BLOCK, NULL, &wait_mask);
	sigdelset(&wait_mask, SIGUSR1);
	sigdelset(&wait_mask, SIGUSR2);
	for (;;) {
		sigsuspend(&wait_mask);
		CRT_CHECK(crt_pending(), "sigsuspend() returned without SIGUSR1/SIGUSR2");
		sigprocmask(SIG_BLOCK, NULL, &cur);
		CRT_CHECK(sigismember(&cur, SIGUSR1) && sigismember(&cur, SIGUSR2) && sigismember(&cur, SIGHUP),
			  "blocked mask not put back after sigsuspend (usr1 %d usr2 %d hup %d)", sigismember(&cur, SIGUSR1),
			  sigismember(&cur, SIGUSR2), sigismember(&cur, SIGHUP));
		crt_tick();
		if (crt_pending())
			crt_report();
	}
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";

	crt_init();
	if (strcmp(mode, "nanosleep") && strcmp(mode, "select") && strcmp(mode, "pause") && strcmp(mode, "sigsuspend")) {
		fprintf(stderr, "usage: sleepers nanosleep|select|pause|sigsuspend\n");
		return 2;
	}
	crt_ready();
	if (!strcmp(mode, "nanosleep"))
		timed(0);
	else if (!strcmp(mode, "select"))
		timed(1);
	else if (!strcmp(mode, "pause"))
		paused();
	else
		suspended();
	return 0;
}
