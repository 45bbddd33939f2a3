/*
 * rseqfan [N]: a root that forks N children (default 4) which change
 * nothing of what fork gave them but a few stack and TLS pages, so that
 * restore creates them as heirs (engine/restore/inherit.go), each with
 * the rseq area at the root's address. Every task checks that the
 * kernel still keeps its rseq area (glibc's, __rseq_offset from the
 * thread pointer): it writes -2 into cpu_id, sleeps (a context switch),
 * and the kernel must have written the CPU back. A task without its
 * registration keeps the -2.
 *
 * The children share the root's files (a pipe made before the forks, so
 * their fd tables stay the root's) and answer on it: on verify the root
 * sends each child SIGUSR1 and reads one line per child, "OK pid" or
 * "FAIL pid reason". On SIGUSR2 the root kills the children and exits.
 */
#include "crt.h"

#include <poll.h>
#include <sys/rseq.h>
#include <sys/wait.h>

static int rseq_ok(char *why, size_t len)
{
	volatile struct rseq *rs;

	if (__rseq_size == 0) {
		snprintf(why, len, "glibc registered no rseq area");
		return 0;
	}
	rs = (volatile struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
	rs->cpu_id = (uint32_t)-2;
	crt_sleep_ms(2);
	if ((int32_t)rs->cpu_id < 0) {
		snprintf(why, len, "rseq cpu_id %d after a sleep: the area is not registered", (int32_t)rs->cpu_id);
		return 0;
	}
	return 1;
}

static void child(int wfd)
{
	char line[160], why[128];

	for (;;) {
		if (crt_usr1) {
			crt_usr1 = 0;
			if (rseq_ok(why, sizeof(why)))
				snprintf(line, sizeof(line), "OK %d\n", (int)getpid());
			else
				snprintf(line, sizeof(line), "FAIL %d %s\n", (int)getpid(), why);
			if (write(wfd, line, strlen(line)) < 0)
				_exit(3);
		}
		if (getppid() == 1)
			_exit(0); /* the root is gone */
		crt_sleep_ms(5);
	}
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 4;
	pid_t kids[64];
	int p[2];
	char why[128];

	crt_init();
	if (n < 1 || n > 64)
		crt_die("N must be 1..64");
	if (pipe(p))
		crt_die("pipe");
	for (int i = 0; i < n; i++) {
		kids[i] = fork();
		if (kids[i] < 0)
			crt_die("fork");
		if (kids[i] == 0)
			child(p[1]);
	}
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			char buf[4096];
			size_t got = 0;
			int lines = 0;
			int64_t deadline = crt_now() + 5000000000LL;

			CRT_CHECK(rseq_ok(why, sizeof(why)), "root: %s", why);
			for (int i = 0; i < n; i++)
				kill(kids[i], SIGUSR1);
			while (lines < n && crt_now() < deadline && got < sizeof(buf) - 1) {
				struct pollfd pf = { .fd = p[0], .events = POLLIN };
				ssize_t r;

				if (poll(&pf, 1, 100) <= 0)
					continue;
				r = read(p[0], buf + got, sizeof(buf) - 1 - got);
				if (r <= 0)
					break;
				for (ssize_t k = 0; k < r; k++)
					lines += buf[got + k] == '\n';
				got += r;
			}
			buf[got] = 0;
			CRT_CHECK(lines == n, "%d of %d children answered: %s", lines, n, buf);
			CRT_CHECK(!strstr(buf, "FAIL"), "a child failed: %s", buf);
			if (crt_usr2) {
				for (int i = 0; i < n; i++) {
					kill(kids[i], SIGKILL);
					waitpid(kids[i], NULL, 0);
				}
			}
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(1);
	}
}
