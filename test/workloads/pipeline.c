/*
 * pipeline: a shell-style pipeline "producer | filter | consumer" of three
 * child processes joined by two pipes, kept full (the consumer is slow) so
 * that data is in flight in both pipes at any moment.
 *
 * The producer writes 1, 2, 3, ... as 8-byte numbers; the filter turns x
 * into 3x+1; the consumer checks that every number is exactly the next one
 * expected (no loss, no duplicate, no reordering) and publishes its count
 * and the first error in a shared anonymous page. The root's verify checks
 * that page: no error, and the stream advanced since the previous verify.
 */
#include "crt.h"

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

struct shared {
	volatile uint64_t count;
	volatile uint64_t bad_got, bad_want;
	volatile int error;
};

static struct shared *sh;

static void child_setup(void)
{
	signal(SIGUSR1, SIG_IGN);
	signal(SIGUSR2, SIG_IGN);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL))
		crt_die("PR_SET_PDEATHSIG");
}

static int read_full(int fd, uint64_t *v)
{
	size_t got = 0;

	while (got < sizeof(*v)) {
		ssize_t n = read(fd, (char *)v + got, sizeof(*v) - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		got += n;
	}
	return 0;
}

static int write_full(int fd, uint64_t v)
{
	size_t done = 0;

	while (done < sizeof(v)) {
		ssize_t n = write(fd, (char *)&v + done, sizeof(v) - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		done += n;
	}
	return 0;
}

int main(void)
{
	int p1[2], p2[2];
	uint64_t last = 0;

	crt_init();
	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		crt_die("mmap shared");
	if (pipe(p1) || pipe(p2))
		crt_die("pipe");

	if (fork() == 0) { /* producer */
		child_setup();
		close(p1[0]);
		close(p2[0]);
		close(p2[1]);
		for (uint64_t i = 1;; i++)
			if (write_full(p1[1], i))
				_exit(1);
	}
	if (fork() == 0) { /* filter */
		uint64_t x;

		child_setup();
		close(p1[1]);
		close(p2[0]);
		while (!read_full(p1[0], &x))
			if (write_full(p2[1], 3 * x + 1))
				_exit(1);
		_exit(1);
	}
	if (fork() == 0) { /* consumer: slow, so both pipes stay full */
		uint64_t x, want = 1;

		child_setup();
		close(p1[0]);
		close(p1[1]);
		close(p2[1]);
		while (!read_full(p2[0], &x)) {
			if (x != 3 * want + 1 && !sh->error) {
				sh->bad_got = x;
				sh->bad_want = 3 * want + 1;
				sh->error = 1;
			}
			want++;
			sh->count++;
			if (sh->count % 64 == 0) {
				struct timespec ts = {0, 1000000};
				nanosleep(&ts, NULL);
			}
		}
		sh->error = 2;
		_exit(1);
	}
	close(p1[0]);
	close(p1[1]);
	close(p2[0]);
	close(p2[1]);
	crt_ready();

	for (;;) {
		if (crt_pending()) {
			CRT_CHECK(sh->error == 0, "consumer error %d: got %" PRIu64 ", want %" PRIu64, sh->error,
				  (uint64_t)sh->bad_got, (uint64_t)sh->bad_want);
			/* The first verify may come right after ready: give the
			 * stream up to 3 s to move. */
			for (int64_t end = crt_now() + 3000000000LL; sh->count <= last && crt_now() < end;)
				crt_sleep_ms(5);
			CRT_CHECK(sh->count > last, "stream stalled at %" PRIu64 " numbers", (uint64_t)sh->count);
			last = sh->count;
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(5);
	}
}
