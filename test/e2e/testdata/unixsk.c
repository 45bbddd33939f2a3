/*
 * unixsk: unix sockets the other e2e tests do not cover, at fixed numbers:
 *   60/61 seqpacket pair, three messages (one empty) queued 60 -> 61
 *   62    stream socket listening on an abstract name, one connection not
 *         accepted yet, whose client is 63
 *   64    datagram socket bound to an abstract name, two datagrams queued
 *   65/66 stream pair with options: SO_PASSCRED on 65, SO_SNDBUF and
 *         SO_RCVBUF changed on 66, 5000 bytes queued 66 -> 65
 * With argv[1] "pending-data", fd 67 is a second client of 62 that wrote
 * into its connection before it was accepted (a dump must refuse it).
 *
 * Verify checks boundaries, names (getsockname gives the abstract name
 * back), the pending connection (accepted, carries data), the options'
 * values as first read, SO_PASSCRED at work (a message on 65 comes with
 * the sender's credentials), then puts the state back.
 */
#define _GNU_SOURCE
#include "../../workloads/crt.h"

#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static const char *msgs[] = {"seq one", "", "seq three, longer"};
static const char *dgrams[] = {"abstract datagram 1", "abstract datagram two"};
static char lname[64], dname[64];
static int sndbuf, rcvbuf;
static unsigned char stream[5000];

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

static socklen_t abstract(struct sockaddr_un *a, const char *name)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	memcpy(a->sun_path + 1, name, strlen(name));
	return offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name);
}

static void connect_client(int want)
{
	struct sockaddr_un a;
	socklen_t l = abstract(&a, lname);
	int c = socket(AF_UNIX, SOCK_STREAM, 0);

	if (connect(c, (struct sockaddr *)&a, l))
		crt_die("connect to @%s", lname);
	place(c, want);
}

static void fill(void)
{
	struct sockaddr_un a;
	socklen_t l = abstract(&a, dname);
	int s = socket(AF_UNIX, SOCK_DGRAM, 0);

	for (int i = 0; i < 3; i++)
		if (send(60, msgs[i], strlen(msgs[i]), 0) != (ssize_t)strlen(msgs[i]))
			crt_die("send seqpacket");
	for (int i = 0; i < 2; i++)
		if (sendto(s, dgrams[i], strlen(dgrams[i]), 0, (struct sockaddr *)&a, l) < 0)
			crt_die("sendto @%s", dname);
	close(s);
	if (write(66, stream, sizeof stream) != sizeof stream)
		crt_die("write stream");
}

static void check_name(int fd, const char *name)
{
	struct sockaddr_un a, want;
	socklen_t l = sizeof(a), wl = abstract(&want, name);

	CRT_CHECK(getsockname(fd, (struct sockaddr *)&a, &l) == 0 && l == wl && !memcmp(&a, &want, wl),
		  "fd %d: name is not @%s (len %u)", fd, name, l);
}

static void check(void)
{
	static char buf[8192];
	char cbuf[CMSG_SPACE(sizeof(struct ucred))];
	struct iovec iov = {buf, sizeof buf};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
	struct cmsghdr *cm;
	ssize_t n;
	int v, a;
	socklen_t sl = sizeof(v);

	for (int i = 0; i < 3; i++) {
		n = recv(61, buf, sizeof buf, MSG_DONTWAIT);
		CRT_CHECK(n == (ssize_t)strlen(msgs[i]) && !memcmp(buf, msgs[i], n), "seqpacket message %d: %zd bytes", i, n);
	}
	CRT_CHECK(recv(61, buf, sizeof buf, MSG_DONTWAIT) < 0 && errno == EAGAIN, "extra seqpacket message");
	sl = sizeof(v);
	CRT_CHECK(getsockopt(61, SOL_SOCKET, SO_TYPE, &v, &sl) == 0 && v == SOCK_SEQPACKET, "fd 61 type %d", v);

	check_name(62, lname);
	check_name(64, dname);
	a = accept4(62, NULL, NULL, SOCK_NONBLOCK);
	CRT_CHECK(a >= 0, "no pending connection on @%s (errno %d)", lname, errno);
	if (a >= 0) {
		if (write(63, "ping", 4) != 4)
			crt_die("write ping");
		n = read(a, buf, sizeof buf);
		CRT_CHECK(n == 4 && !memcmp(buf, "ping", 4), "accepted connection read %zd", n);
		close(a);
	}
	connect_client(63);

	for (int i = 0; i < 2; i++) {
		n = recv(64, buf, sizeof buf, MSG_DONTWAIT);
		CRT_CHECK(n == (ssize_t)strlen(dgrams[i]) && !memcmp(buf, dgrams[i], n), "abstract datagram %d: %zd bytes", i, n);
	}

	sl = sizeof(v);
	CRT_CHECK(getsockopt(65, SOL_SOCKET, SO_PASSCRED, &v, &sl) == 0 && v == 1, "SO_PASSCRED %d", v);
	sl = sizeof(v);
	CRT_CHECK(getsockopt(66, SOL_SOCKET, SO_SNDBUF, &v, &sl) == 0 && v == sndbuf, "SO_SNDBUF %d, want %d", v, sndbuf);
	sl = sizeof(v);
	CRT_CHECK(getsockopt(66, SOL_SOCKET, SO_RCVBUF, &v, &sl) == 0 && v == rcvbuf, "SO_RCVBUF %d, want %d", v, rcvbuf);
	/* The 5000 queued bytes, then a message with credentials. */
	if (write(66, "cred", 4) != 4)
		crt_die("write cred");
	iov.iov_len = sizeof stream; /* the bytes queued before, alone */
	n = recvmsg(65, &mh, MSG_DONTWAIT);
	iov.iov_len = sizeof buf;
	CRT_CHECK(n == (ssize_t)sizeof stream && !memcmp(buf, stream, n), "stream: %zd bytes, want the 5000 queued", n);
	mh.msg_controllen = sizeof cbuf;
	n = recvmsg(65, &mh, MSG_DONTWAIT);
	cm = CMSG_FIRSTHDR(&mh);
	CRT_CHECK(n == 4 && cm && cm->cmsg_type == SCM_CREDENTIALS && ((struct ucred *)CMSG_DATA(cm))->pid == getpid(),
		  "SO_PASSCRED: read %zd, credentials %s", n, cm ? "present" : "missing");
	fill();
}

int main(int argc, char **argv)
{
	struct sockaddr_un a;
	socklen_t l, sl = sizeof(int);
	int s[2], fd, v;

	crt_init();
	crt_fill(stream, sizeof stream, 3);
	snprintf(lname, sizeof lname, "crtools-e2e-unixsk-%d-listen", getpid());
	snprintf(dname, sizeof dname, "crtools-e2e-unixsk-%d-dgram", getpid());
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, s))
		crt_die("socketpair seqpacket");
	place(s[0], 60);
	place(s[1], 61);

	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	l = abstract(&a, lname);
	if (bind(fd, (struct sockaddr *)&a, l) || listen(fd, 8))
		crt_die("listen on @%s", lname);
	place(fd, 62);
	connect_client(63);

	fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	l = abstract(&a, dname);
	if (bind(fd, (struct sockaddr *)&a, l))
		crt_die("bind @%s", dname);
	place(fd, 64);

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, s))
		crt_die("socketpair stream");
	place(s[0], 65);
	place(s[1], 66);
	v = 1;
	setsockopt(65, SOL_SOCKET, SO_PASSCRED, &v, sizeof v);
	v = 150000;
	setsockopt(66, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
	v = 70000;
	setsockopt(66, SOL_SOCKET, SO_RCVBUF, &v, sizeof v);
	getsockopt(66, SOL_SOCKET, SO_SNDBUF, &sndbuf, &sl);
	sl = sizeof(int);
	getsockopt(66, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &sl);

	if (argc > 1 && !strcmp(argv[1], "pending-data")) {
		connect_client(67);
		if (write(67, "early", 5) != 5)
			crt_die("write early");
	}
	fill();
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			check();
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(1);
	}
}
