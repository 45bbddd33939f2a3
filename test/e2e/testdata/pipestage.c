/*
 * pipestage: one stage of the shell pipeline of TestShellPipelineMidStream,
 *   sh -c 'pipestage producer | pipestage filter | pipestage consumer STATUS'
 *
 * producer writes 1, 2, 3, ... as 8-byte numbers to stdout.
 * filter turns x into 3x+1 and passes each value through a seqpacket
 *   socket pair of its own, keeping 16 of them queued there, before
 *   writing it to stdout (so a unix socket has messages in flight too).
 * consumer waits with epoll on stdin and on a 20 ms periodic timerfd; it
 *   checks that every number is exactly the next one (no loss, duplicate
 *   or reordering) and, at each timer tick, writes its count, the first
 *   error and the tick count into STATUS (a file it keeps open). It reads
 *   slowly, so both pipes stay full.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static int full(int fd, void *b, size_t n, int wr)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = wr ? write(fd, (char *)b + done, n - done) : read(fd, (char *)b + done, n - done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		done += r;
	}
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t x;

	if (argc > 1 && !strcmp(argv[1], "producer")) {
		for (x = 1;; x++)
			if (full(1, &x, 8, 1))
				return 1;
	}
	if (argc > 1 && !strcmp(argv[1], "filter")) {
		int sp[2], queued = 0;

		if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp))
			return 1;
		while (!full(0, &x, 8, 0)) {
			x = 3 * x + 1;
			if (send(sp[0], &x, 8, 0) != 8)
				return 1;
			if (++queued > 16) {
				if (recv(sp[1], &x, 8, 0) != 8 || full(1, &x, 8, 1))
					return 1;
				queued--;
			}
		}
		return 1;
	}
	if (argc > 2 && !strcmp(argv[1], "consumer")) {
		struct itimerspec its = {{0, 20000000}, {0, 20000000}};
		struct epoll_event ev, evs[2];
		uint64_t want = 1, count = 0, bad_got = 0, bad_want = 0, ticks = 0, t;
		int ep = epoll_create1(0), tfd = timerfd_create(CLOCK_MONOTONIC, 0);
		int st = open(argv[2], O_RDWR | O_CREAT | O_TRUNC, 0644);
		char line[160];

		if (ep < 0 || tfd < 0 || st < 0 || timerfd_settime(tfd, 0, &its, NULL))
			return 1;
		ev.events = EPOLLIN;
		ev.data.u64 = 1;
		epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
		ev.data.u64 = 2;
		epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
		for (;;) {
			int n = epoll_wait(ep, evs, 2, -1);
			for (int i = 0; i < n; i++) {
				if (evs[i].data.u64 == 2) {
					if (read(tfd, &t, 8) == 8)
						ticks += t;
					snprintf(line, sizeof line, "count %" PRIu64 " bad %" PRIu64 " %" PRIu64 " ticks %" PRIu64 "\n", count,
						 bad_got, bad_want, ticks);
					memset(line + strlen(line), ' ', sizeof line - strlen(line) - 1);
					line[sizeof line - 1] = '\n';
					pwrite(st, line, sizeof line, 0);
					continue;
				}
				/* A few numbers per wake-up, then a pause: slow. */
				for (int k = 0; k < 32; k++) {
					if (full(0, &x, 8, 0))
						return 2;
					if (x != 3 * want + 1 && !bad_want) {
						bad_got = x;
						bad_want = 3 * want + 1;
					}
					want++;
					count++;
				}
				struct timespec ts = {0, 1000000};
				nanosleep(&ts, NULL);
			}
		}
	}
	fprintf(stderr, "usage: pipestage producer|filter|consumer STATUS\n");
	return 2;
}
