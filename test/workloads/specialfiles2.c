/*
 * specialfiles2: more of issue 5's kinds, at fixed numbers:
 *   40 timerfd, CLOCK_MONOTONIC, every 10 ms
 *   41 signalfd for SIGWINCH and SIGURG (both blocked)
 *   42 inotify watching "watched/" for IN_CREATE (wd 1)
 *   43 FIFO "fifo" open O_RDWR with 9 bytes in flight
 *   44 deleted file "ghost.dat" (13 bytes) at offset 2
 *   45 unix stream socket listening on "srv.sock" with one connection not
 *      accepted yet, whose client is 46
 *   47 unix datagram socket bound to "dg.sock" with two datagrams queued
 *      from an unbound sender
 *   48 (only with argv[1]) unix datagram socket connected to the socket
 *      bound at argv[1], outside the dumped tree (like /dev/log)
 *
 * Verify exercises each one (the timer fires with its interval, a raised
 * SIGWINCH is read from the signalfd, a new file in watched/ is reported,
 * FIFO and socket data come back byte for byte with datagram boundaries,
 * the deleted file keeps its contents and offset, the pending connection
 * can be accepted and carries data, the external socket sends) and puts
 * the state back for the next verify.
 */
#include "crt.h"

#include <poll.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>

enum { FD_TFD = 40, FD_SFD = 41, FD_INO = 42, FD_FIFO = 43, FD_GHOST = 44, FD_LISTEN = 45, FD_CLIENT = 46,
       FD_DG = 47, FD_EXT = 48 };

static const char *dgrams[] = {"datagram one", "datagram two, longer"};
static int verifies, have_ext;

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

static struct sockaddr_un addr_of(const char *path)
{
	struct sockaddr_un a;

	memset(&a, 0, sizeof(a));
	a.sun_family = AF_UNIX;
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	return a;
}

static void new_pending_client(void)
{
	struct sockaddr_un a = addr_of("srv.sock");
	int c = socket(AF_UNIX, SOCK_STREAM, 0);

	if (connect(c, (struct sockaddr *)&a, sizeof(a)))
		crt_die("connect to srv.sock");
	place(c, FD_CLIENT);
}

static void queue_dgrams(void)
{
	struct sockaddr_un a = addr_of("dg.sock");
	int s = socket(AF_UNIX, SOCK_DGRAM, 0);

	for (int i = 0; i < 2; i++)
		if (sendto(s, dgrams[i], strlen(dgrams[i]), 0, (struct sockaddr *)&a, sizeof(a)) < 0)
			crt_die("sendto dg.sock");
	close(s);
}

static void check_state(void)
{
	struct itimerspec its = {{0, 0}, {0, 0}};
	struct signalfd_siginfo si;
	struct pollfd pfd;
	char buf[4096], name[64];
	uint64_t ticks = 0;
	ssize_t n;
	int a;

	/* timerfd: still armed with its interval, and firing. */
	CRT_CHECK(timerfd_gettime(FD_TFD, &its) == 0 && its.it_interval.tv_sec == 0 &&
			  its.it_interval.tv_nsec == 10000000,
		  "timer interval %ld.%09ld", (long)its.it_interval.tv_sec, its.it_interval.tv_nsec);
	n = read(FD_TFD, &ticks, 8);
	CRT_CHECK(n == 8 && ticks >= 1, "timerfd read %zd ticks %" PRIu64, n, ticks);

	/* signalfd: a blocked SIGWINCH is read from it. */
	raise(SIGWINCH);
	n = read(FD_SFD, &si, sizeof(si));
	CRT_CHECK(n == sizeof(si) && si.ssi_signo == SIGWINCH, "signalfd read %zd signo %u", n, si.ssi_signo);

	/* inotify: a new file in watched/ is reported with wd 1. */
	snprintf(name, sizeof(name), "f%d", verifies);
	snprintf(buf, sizeof(buf), "watched/%s", name);
	close(open(buf, O_CREAT | O_WRONLY, 0644));
	pfd.fd = FD_INO;
	pfd.events = POLLIN;
	CRT_CHECK(poll(&pfd, 1, 2000) == 1, "no inotify event");
	n = read(FD_INO, buf, sizeof(buf));
	{
		struct inotify_event *ev = (struct inotify_event *)buf;
		CRT_CHECK(n >= (ssize_t)sizeof(*ev) && ev->wd == 1 && (ev->mask & IN_CREATE) && !strcmp(ev->name, name),
			  "inotify event: n %zd wd %d mask %x name %s", n, n > 0 ? ev->wd : -1, n > 0 ? ev->mask : 0,
			  n > (ssize_t)sizeof(*ev) ? ev->name : "");
	}

	/* FIFO: the bytes in flight. */
	n = read(FD_FIFO, buf, sizeof(buf));
	CRT_CHECK(n == 9 && !memcmp(buf, "fifo data", 9), "fifo read %zd", n);
	if (write(FD_FIFO, "fifo data", 9) != 9)
		crt_die("refill fifo");

	/* Deleted file: contents, offset, no name. */
	{
		struct stat st;
		CRT_CHECK(fstat(FD_GHOST, &st) == 0 && st.st_nlink == 0 && st.st_size == 13, "ghost: nlink %lu size %lld",
			  (unsigned long)st.st_nlink, (long long)st.st_size);
		CRT_CHECK(lseek(FD_GHOST, 0, SEEK_CUR) == 2, "ghost offset %lld", (long long)lseek(FD_GHOST, 0, SEEK_CUR));
		n = pread(FD_GHOST, buf, sizeof(buf), 0);
		CRT_CHECK(n == 13 && !memcmp(buf, "ghost payload", 13), "ghost read %zd", n);
	}

	/* The pending connection: accept it, it carries data. */
	a = accept4(FD_LISTEN, NULL, NULL, SOCK_NONBLOCK);
	CRT_CHECK(a >= 0, "no pending connection to accept (errno %d)", errno);
	if (a >= 0) {
		if (write(FD_CLIENT, "ping", 4) != 4)
			crt_die("write ping");
		n = read(a, buf, sizeof(buf));
		CRT_CHECK(n == 4 && !memcmp(buf, "ping", 4), "accepted connection read %zd", n);
		close(a);
	}
	new_pending_client();

	/* Datagrams with their boundaries. */
	for (int i = 0; i < 2; i++) {
		n = recv(FD_DG, buf, sizeof(buf), MSG_DONTWAIT);
		CRT_CHECK(n == (ssize_t)strlen(dgrams[i]) && !memcmp(buf, dgrams[i], n), "datagram %d: %zd bytes", i, n);
	}
	queue_dgrams();

	if (have_ext) {
		snprintf(buf, sizeof(buf), "hello %d", verifies);
		CRT_CHECK(send(FD_EXT, buf, strlen(buf), 0) == (ssize_t)strlen(buf), "send to external socket: errno %d",
			  errno);
	}
	verifies++;
}

int main(int argc, char **argv)
{
	struct itimerspec its = {{0, 10000000}, {0, 10000000}};
	struct sockaddr_un a;
	sigset_t set;
	int fd;

	crt_init();
	place(timerfd_create(CLOCK_MONOTONIC, 0), FD_TFD);
	if (timerfd_settime(FD_TFD, 0, &its, NULL))
		crt_die("timerfd_settime");

	sigemptyset(&set);
	sigaddset(&set, SIGWINCH);
	sigaddset(&set, SIGURG);
	if (sigprocmask(SIG_BLOCK, &set, NULL))
		crt_die("sigprocmask");
	place(signalfd(-1, &set, 0), FD_SFD);

	if (mkdir("watched", 0755))
		crt_die("mkdir watched");
	place(inotify_init1(IN_NONBLOCK), FD_INO);
	if (inotify_add_watch(FD_INO, "watched", IN_CREATE) != 1)
		crt_die("inotify_add_watch");

	if (mkfifo("fifo", 0600))
		crt_die("mkfifo");
	place(open("fifo", O_RDWR), FD_FIFO);
	if (write(FD_FIFO, "fifo data", 9) != 9)
		crt_die("write fifo");

	fd = open("ghost.dat", O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, "ghost payload", 13) != 13 || lseek(fd, 2, SEEK_SET) != 2 || unlink("ghost.dat"))
		crt_die("ghost file");
	place(fd, FD_GHOST);

	a = addr_of("srv.sock");
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 4))
		crt_die("listen on srv.sock");
	place(fd, FD_LISTEN);
	new_pending_client();

	a = addr_of("dg.sock");
	fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)))
		crt_die("bind dg.sock");
	place(fd, FD_DG);
	queue_dgrams();

	if (argc > 1) {
		a = addr_of(argv[1]);
		fd = socket(AF_UNIX, SOCK_DGRAM, 0);
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)))
			crt_die("connect to %s", argv[1]);
		place(fd, FD_EXT);
		have_ext = 1;
	}
	crt_ready();

	for (;;) {
		if (crt_pending()) {
			check_state();
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(1);
	}
}
