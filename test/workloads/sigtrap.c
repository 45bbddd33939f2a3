/*
 * sigtrap: SIGTRAP's action and the threads' blocked masks, which restore's
 * own traps (int3, single-step: forced SIGTRAPs) could change, survive a
 * restore.
 *
 * Modes (argv[1]):
 *   ignore   SIGTRAP is SIG_IGN;
 *   handler  SIGTRAP has a handler with flags (SA_SIGINFO, SA_RESTART,
 *            SA_NODEFER) and a mask.
 * In both, the main thread blocks SIGTRAP and SIG_MAIN and waits in pause()
 * between verifies (the test dumps it there, inside a restartable syscall);
 * worker 1 blocks SIGTRAP and SIG_W1 and counts the progress; worker 2
 * blocks only SIG_W2, so SIGTRAP reaches it. Both workers block SIGUSR1 and
 * SIGUSR2: the verify signals go to the main thread.
 *
 * Verify: sigaction(SIGTRAP) reads back as installed; every thread checks
 * its own mask with pthread_sigmask; pause() returned EINTR (a restart of
 * the dumped pause() gone wrong returns something else); worker 2 sends
 * itself a SIGTRAP, which must be ignored (ignore: the process lives on) or
 * run the handler once, with the handler's mask applied and SIGTRAP itself
 * not blocked (SA_NODEFER).
 */
#include "crt.h"

#include <pthread.h>

#define SIG_MAIN (SIGRTMIN + 2)
#define SIG_W1 (SIGRTMIN + 6)
#define SIG_W2 (SIGRTMIN + 7)
#define SIG_HMASK (SIGRTMIN + 1) /* in the handler's mask, with SIGHUP */

#ifndef SA_RESTORER
#define SA_RESTORER 0x04000000 /* set by libc on every handler */
#endif

static int handler_mode;
static volatile sig_atomic_t trap_runs, trap_mask_ok;

static void h_trap(int sig, siginfo_t *si, void *uc)
{
	sigset_t cur;

	(void)si, (void)uc;
	pthread_sigmask(SIG_BLOCK, NULL, &cur);
	/* sa_mask applies; SA_NODEFER keeps SIGTRAP itself unblocked. */
	trap_mask_ok = sig == SIGTRAP && sigismember(&cur, SIGHUP) && sigismember(&cur, SIG_HMASK) &&
		       !sigismember(&cur, SIGTRAP);
	trap_runs++;
}

static int want_flags(void)
{
	return handler_mode ? SA_SIGINFO | SA_RESTART | SA_NODEFER | SA_RESTORER : 0;
}

static void *want_handler(void)
{
	return handler_mode ? (void *)h_trap : (void *)SIG_IGN;
}

/* action_bad describes how SIGTRAP's action differs from the installed one
 * into why (empty: as installed). */
static void action_bad(char *why, size_t len)
{
	struct sigaction sa;

	why[0] = 0;
	if (sigaction(SIGTRAP, NULL, &sa)) {
		snprintf(why, len, "sigaction(SIGTRAP) query failed: errno %d", errno);
		return;
	}
	if ((void *)sa.sa_handler != want_handler()) {
		snprintf(why, len, "SIGTRAP handler %p, want %p", (void *)sa.sa_handler, want_handler());
		return;
	}
	if (!handler_mode)
		return;
	if (sa.sa_flags != want_flags()) {
		snprintf(why, len, "SIGTRAP flags %#x, want %#x", sa.sa_flags, want_flags());
		return;
	}
	for (int s = 1; s < SIGRTMAX; s++) {
		int want = s == SIGHUP || s == SIG_HMASK;

		if (sigismember(&sa.sa_mask, s) != want) {
			snprintf(why, len, "SIGTRAP handler mask has signal %d = %d", s, sigismember(&sa.sa_mask, s));
			return;
		}
	}
}

/* mask_bad describes how the calling thread's mask differs from want. */
static void mask_bad(const sigset_t *want, char *why, size_t len)
{
	sigset_t cur;

	why[0] = 0;
	pthread_sigmask(SIG_BLOCK, NULL, &cur);
	for (int s = 1; s < SIGRTMAX; s++) {
		if (sigismember(&cur, s) != sigismember(want, s)) {
			snprintf(why, len, "blocked mask: signal %d is %d, want %d", s, sigismember(&cur, s),
				 sigismember(want, s));
			return;
		}
	}
}

struct worker {
	int id;
	sigset_t mask;
	volatile int done_gen;
	char bad[256];
};

static struct worker workers[2];
static volatile int verify_gen;

static void worker_check(struct worker *w)
{
	char why[200];

	w->bad[0] = 0;
	mask_bad(&w->mask, why, sizeof(why));
	if (why[0]) {
		snprintf(w->bad, sizeof(w->bad), "worker %d: %s", w->id, why);
		return;
	}
	if (w->id != 2)
		return;
	/* SIGTRAP reaches this thread: send it one, once its action is
	 * known to be right (SIG_DFL would kill the process). */
	action_bad(why, sizeof(why));
	if (why[0]) {
		snprintf(w->bad, sizeof(w->bad), "worker 2: %s", why);
		return;
	}
	int runs = trap_runs;

	trap_mask_ok = 0;
	pthread_kill(pthread_self(), SIGTRAP);
	if (handler_mode && (trap_runs != runs + 1 || !trap_mask_ok))
		snprintf(w->bad, sizeof(w->bad), "SIGTRAP handler ran %d times (want 1), its mask right: %d",
			 trap_runs - runs, trap_mask_ok);
	if (!handler_mode && trap_runs != runs)
		snprintf(w->bad, sizeof(w->bad), "ignored SIGTRAP ran a handler");
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	int seen = 0;

	pthread_sigmask(SIG_SETMASK, &w->mask, NULL);
	for (;;) {
		int gen = __atomic_load_n(&verify_gen, __ATOMIC_ACQUIRE);

		if (gen != seen) {
			worker_check(w);
			seen = gen;
			__atomic_store_n(&w->done_gen, gen, __ATOMIC_RELEASE);
		}
		if (w->id == 1)
			crt_tick();
		crt_sleep_ms(1);
	}
	return NULL;
}

static sigset_t main_mask;

static void verify(void)
{
	char why[256];
	int gen = __atomic_add_fetch(&verify_gen, 1, __ATOMIC_ACQ_REL);
	int64_t end = crt_now() + 5000000000LL;

	action_bad(why, sizeof(why));
	CRT_CHECK(!why[0], "main: %s", why);
	mask_bad(&main_mask, why, sizeof(why));
	CRT_CHECK(!why[0], "main: %s", why);
	for (int i = 0; i < 2; i++) {
		while (__atomic_load_n(&workers[i].done_gen, __ATOMIC_ACQUIRE) != gen && crt_now() < end)
			crt_sleep_ms(1);
		CRT_CHECK(workers[i].done_gen == gen, "worker %d did not answer within 5 s", workers[i].id);
		CRT_CHECK(!workers[i].bad[0], "%s", workers[i].bad);
	}
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	pthread_t th;

	if (argc < 2 || (strcmp(argv[1], "ignore") && strcmp(argv[1], "handler")))
		crt_die("usage: sigtrap ignore|handler");
	handler_mode = !strcmp(argv[1], "handler");
	crt_init();

	memset(&sa, 0, sizeof(sa));
	if (handler_mode) {
		sa.sa_sigaction = h_trap;
		sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_NODEFER;
		sigemptyset(&sa.sa_mask);
		sigaddset(&sa.sa_mask, SIGHUP);
		sigaddset(&sa.sa_mask, SIG_HMASK);
	} else {
		sa.sa_handler = SIG_IGN;
		sigemptyset(&sa.sa_mask);
	}
	if (sigaction(SIGTRAP, &sa, NULL))
		crt_die("sigaction SIGTRAP");

	/*
	 * The verify signals are for the main thread only. A new thread
	 * starts with its creator's mask: block them before creating the
	 * workers, or a worker not yet scheduled (a loaded host) has them
	 * unblocked until its own pthread_sigmask, and a verify sent in that
	 * window may be taken by it: its handler sets the flag, but the main
	 * thread sleeps on in pause() and never reports.
	 */
	sigset_t verify_sigs;

	sigemptyset(&verify_sigs);
	sigaddset(&verify_sigs, SIGUSR1);
	sigaddset(&verify_sigs, SIGUSR2);
	if (pthread_sigmask(SIG_BLOCK, &verify_sigs, NULL))
		crt_die("block the verify signals");
	for (int i = 0; i < 2; i++) {
		workers[i].id = i + 1;
		sigemptyset(&workers[i].mask);
		sigaddset(&workers[i].mask, SIGUSR1);
		sigaddset(&workers[i].mask, SIGUSR2);
		sigaddset(&workers[i].mask, i == 0 ? SIG_W1 : SIG_W2);
		if (i == 0)
			sigaddset(&workers[i].mask, SIGTRAP);
		if (pthread_create(&th, NULL, worker_main, &workers[i]))
			crt_die("pthread_create");
	}
	sigemptyset(&main_mask);
	sigaddset(&main_mask, SIGTRAP);
	sigaddset(&main_mask, SIG_MAIN);
	if (pthread_sigmask(SIG_SETMASK, &main_mask, NULL))
		crt_die("sigprocmask");

	crt_ready();
	for (;;) {
		int r;

		if (crt_pending()) {
			verify();
			crt_report();
		}
		errno = 0;
		r = pause();
		CRT_CHECK(r == -1 && errno == EINTR, "pause returned %d, errno %d, want EINTR", r, errno);
	}
	return 0;
}
