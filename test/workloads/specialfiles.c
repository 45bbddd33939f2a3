/*
 * specialfiles: descriptors of issue 5's kinds with data in flight, at
 * fixed numbers: a pipe (256 KiB, 100000 unread bytes, nonblocking read
 * end) at 20/21, an eventfd (count 5, nonblocking) at 22, a datagram
 * socket pair with three queued datagrams (one empty) at 23/24, a stream
 * socket pair with unread bytes both ways at 25/26, and an epoll at 27
 * watching the eventfd (edge-triggered, data 0x1122334455667788) and the
 * pipe's read end.
 *
 * Verify consumes and checks every byte, counter and datagram boundary,
 * the flags and the epoll readiness, then puts the same state back so the
 * next verify (after a restore) sees it again.
 */
#include "crt.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

enum { FD_PR = 20, FD_PW = 21, FD_EFD = 22, FD_DG0 = 23, FD_DG1 = 24, FD_ST0 = 25, FD_ST1 = 26, FD_EP = 27 };

#define PIPE_BYTES 100000
#define EP_DATA 0x1122334455667788ULL

static unsigned char pipe_data[PIPE_BYTES];
static const char *dgrams[] = {"first datagram", "", "third, a little longer"};

static void place(int fd, int want)
{
	if (fd < 0)
		crt_die("create fd %d", want);
	if (fd != want) {
		if (dup3(fd, want, 0) != want)
			crt_die("dup3 to %d", want);
		close(fd);
	}
}

static void fill_state(void)
{
	uint64_t five = 5;

	if (write(FD_PW, pipe_data, PIPE_BYTES) != PIPE_BYTES)
		crt_die("fill pipe");
	if (write(FD_EFD, &five, 8) != 8)
		crt_die("fill eventfd");
	for (int i = 0; i < 3; i++)
		if (send(FD_DG0, dgrams[i], strlen(dgrams[i]), 0) != (ssize_t)strlen(dgrams[i]))
			crt_die("send datagram");
	if (write(FD_ST0, "to st1", 6) != 6 || write(FD_ST1, "to st0!", 7) != 7)
		crt_die("fill stream pair");
}

static void check_stream(int fd, const char *want, const char *what)
{
	char buf[64];
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

	CRT_CHECK(n == (ssize_t)strlen(want) && !memcmp(buf, want, n), "%s: read %zd bytes", what, n);
}

static void check_state(void)
{
	static unsigned char buf[PIPE_BYTES + 1];
	struct epoll_event evs[4];
	uint64_t v = 0;
	ssize_t n, got = 0;
	int nev;

	/* epoll first: the eventfd is readable and reported once, with its data. */
	nev = epoll_wait(FD_EP, evs, 4, 0);
	CRT_CHECK(nev == 2, "epoll_wait: %d events, want 2 (eventfd and pipe)", nev);
	for (int i = 0; i < nev && i < 4; i++)
		CRT_CHECK(evs[i].data.u64 == EP_DATA || evs[i].data.u64 == FD_PR, "epoll event data %" PRIx64,
			  (uint64_t)evs[i].data.u64);
	CRT_CHECK(fcntl(FD_PR, F_GETFL) & O_NONBLOCK, "pipe read end lost O_NONBLOCK");
	CRT_CHECK((fcntl(FD_PW, F_GETFL) & O_ACCMODE) == O_WRONLY, "pipe write end is not write-only");

	while ((n = read(FD_PR, buf + got, sizeof(buf) - got)) > 0)
		got += n;
	CRT_CHECK(got == PIPE_BYTES, "pipe held %zd bytes, want %d", got, PIPE_BYTES);
	CRT_CHECK(!memcmp(buf, pipe_data, PIPE_BYTES), "pipe data differs");

	n = read(FD_EFD, &v, 8);
	CRT_CHECK(n == 8 && v == 5, "eventfd read %zd, count %" PRIu64 ", want 5", n, v);
	CRT_CHECK(read(FD_EFD, &v, 8) < 0 && errno == EAGAIN, "eventfd not empty after read (or blocking)");

	for (int i = 0; i < 3; i++) {
		n = recv(FD_DG1, buf, sizeof(buf), MSG_DONTWAIT);
		CRT_CHECK(n == (ssize_t)strlen(dgrams[i]) && !memcmp(buf, dgrams[i], n),
			  "datagram %d: %zd bytes, want \"%s\"", i, n, dgrams[i]);
	}
	CRT_CHECK(recv(FD_DG1, buf, sizeof(buf), MSG_DONTWAIT) < 0, "extra datagram queued");
	check_stream(FD_ST1, "to st1", "stream st1");
	check_stream(FD_ST0, "to st0!", "stream st0");
}

int main(void)
{
	struct epoll_event ev;
	int p[2], s[2];

	crt_init();
	crt_fill(pipe_data, PIPE_BYTES, 9);
	if (pipe(p))
		crt_die("pipe");
	place(p[0], FD_PR);
	place(p[1], FD_PW);
	if (fcntl(FD_PW, F_SETPIPE_SZ, 256 * 1024) < 0)
		crt_die("F_SETPIPE_SZ");
	fcntl(FD_PR, F_SETFL, O_NONBLOCK);
	place(eventfd(0, EFD_NONBLOCK), FD_EFD);
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, s))
		crt_die("socketpair dgram");
	place(s[0], FD_DG0);
	place(s[1], FD_DG1);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, s))
		crt_die("socketpair stream");
	place(s[0], FD_ST0);
	place(s[1], FD_ST1);
	place(epoll_create1(0), FD_EP);
	ev.events = EPOLLIN | EPOLLET;
	ev.data.u64 = EP_DATA;
	if (epoll_ctl(FD_EP, EPOLL_CTL_ADD, FD_EFD, &ev))
		crt_die("epoll_ctl eventfd");
	ev.events = EPOLLIN;
	ev.data.u64 = FD_PR;
	if (epoll_ctl(FD_EP, EPOLL_CTL_ADD, FD_PR, &ev))
		crt_die("epoll_ctl pipe");
	fill_state();
	crt_ready();

	for (;;) {
		if (crt_pending()) {
			check_state();
			fill_state();
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(1);
	}
}
