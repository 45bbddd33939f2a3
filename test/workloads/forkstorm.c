/*
 * forkstorm [N]: a tree that never holds still, for freezing while tasks
 * fork and exit. The root (a child subreaper, so orphans come back to it)
 * keeps N children (default 8) alive; each child forks a short-lived
 * grandchild now and then and exits 0 after a few milliseconds; the root
 * reaps everything and starts new children.
 *
 * Verify checks that forks and reaps kept happening, that every reaped
 * task exited 0 (a task that vanished or died of a signal is a failure),
 * and that the root never had more than N children plus their orphans.
 */
#include "crt.h"

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

struct shared {
	volatile uint64_t grandchildren;
};

static struct shared *sh;
static uint64_t forks, reaped, bad;
static char first_bad[128];

static void child(unsigned seed)
{
	int64_t end = crt_now() + (1 + seed % 20) * 1000000LL;

	signal(SIGUSR1, SIG_IGN);
	signal(SIGUSR2, SIG_IGN);
	while (crt_now() < end) {
		if (seed % 3 == 0) {
			pid_t g = fork();

			if (g == 0) {
				__atomic_add_fetch(&sh->grandchildren, 1, __ATOMIC_SEQ_CST);
				crt_sleep_ms(1 + seed % 3);
				_exit(0);
			}
			seed /= 3;
		}
		crt_sleep_ms(1);
	}
	_exit(0);
}

static void reap(void)
{
	int status;
	pid_t p;

	while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
		reaped++;
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			if (!bad++)
				snprintf(first_bad, sizeof(first_bad), "pid %d ended with status %#x", (int)p, status);
		}
	}
}

static int width = 8, live;
static unsigned seed = 12345;

/* step reaps what ended and forks new children up to the width. */
static void step(void)
{
	uint64_t before = reaped;

	reap();
	live -= (int)(reaped - before);
	if (live < 0)
		live = 0; /* orphaned grandchildren are reaped here too */
	while (live < width) {
		pid_t p;

		seed = seed * 1103515245 + 12345;
		p = fork();
		if (p < 0)
			break;
		if (p == 0)
			child(seed >> 8);
		forks++;
		live++;
	}
}

int main(int argc, char **argv)
{
	uint64_t last_forks = 0, last_reaped = 0;

	crt_init();
	width = argc > 1 ? atoi(argv[1]) : 8;
	if (width < 1 || width > 256) {
		fprintf(stderr, "usage: forkstorm [N], 1 <= N <= 256\n");
		return 2;
	}
	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		crt_die("mmap");
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
		crt_die("PR_SET_CHILD_SUBREAPER");
	step();
	crt_ready();
	for (;;) {
		step();
		if (crt_pending()) {
			int64_t end = crt_now() + 3000000000LL;

			/* Give the storm up to 3 s to show it still rages. */
			while ((forks <= last_forks || reaped <= last_reaped) && crt_now() < end) {
				crt_sleep_ms(1);
				step();
			}
			CRT_CHECK(!bad, "%" PRIu64 " tasks ended badly, first: %s", bad, first_bad);
			CRT_CHECK(forks > last_forks && reaped > last_reaped,
				  "storm stalled: %" PRIu64 " forks, %" PRIu64 " reaped (were %" PRIu64 ", %" PRIu64 ")",
				  forks, reaped, last_forks, last_reaped);
			last_forks = forks;
			last_reaped = reaped;
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(1);
	}
	return 0;
}
