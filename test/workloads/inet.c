/*
 * inet: inet sockets at fixed numbers:
 *   50 TCP listener on 127.0.0.1 (SO_REUSEADDR, SO_RCVBUF 65536, backlog 5)
 *   51 UDP socket bound to 127.0.0.1
 *   52 IPv6 TCP listener on ::1 (IPV6_V6ONLY)
 * and, with argv[1] (the port of a peer outside the tree, on 127.0.0.1):
 *   53 TCP connection to that peer
 *   54, 55 a TCP connection of the tree to its own listener 50 (client 54,
 *          accepted 55)
 *
 * The peer answers every line "seq K" with "ack K". Verify K reads the
 * ack of verify K-1 (so an unread ack sits in the receive queue at every
 * dump) and sends "seq K"; the peer checks that the numbers follow each
 * other (no loss, no repeat). On the inner connection verify K reads
 * "inner K-1" (left unread by the previous verify) on 55 and writes
 * "inner K" on 54. The listeners accept a new connection, the UDP socket
 * reads the two datagrams "udp K" and "udp K tail" it sent itself before
 * (so two wait in its queue at every dump) and sends the next two, and
 * the options are checked.
 */
#include "crt.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

enum { FD_LISTEN = 50, FD_UDP = 51, FD_LISTEN6 = 52, FD_PEER = 53, FD_INNER_C = 54, FD_INNER_S = 55 };

static int verifies, have_peer, rcvbuf;

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

static int port_of(int fd)
{
	struct sockaddr_in6 a;
	socklen_t l = sizeof(a);

	if (getsockname(fd, (struct sockaddr *)&a, &l))
		return -1;
	return ntohs(a.sin6_port); /* sin_port and sin6_port share the offset */
}

static struct sockaddr_in lo4(int port)
{
	struct sockaddr_in a;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons(port);
	return a;
}

/*
 * read_line reads one "\n"-terminated line into buf, waiting up to 8 s: a
 * segment the peer sent while the connection was locked comes again only
 * with the retransmission backoff.
 */
static int read_line(int fd, char *buf, size_t size)
{
	size_t n = 0;

	while (n + 1 < size) {
		struct pollfd p = {fd, POLLIN, 0};
		int r = poll(&p, 1, 8000);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		r = read(fd, buf + n, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		if (buf[n] == '\n') {
			buf[n] = 0;
			return 0;
		}
		n++;
	}
	return -1;
}

static void write_str(int fd, const char *s)
{
	CRT_CHECK(write(fd, s, strlen(s)) == (ssize_t)strlen(s), "write %s: %s", s, strerror(errno));
}

static void check_listener(int fd, int family)
{
	int c = socket(family, SOCK_STREAM, 0), s;
	struct sockaddr_in6 a6;
	struct sockaddr_in a4 = lo4(port_of(fd));
	char b[4];

	if (family == AF_INET6) {
		memset(&a6, 0, sizeof(a6));
		a6.sin6_family = AF_INET6;
		a6.sin6_addr = in6addr_loopback;
		a6.sin6_port = htons(port_of(fd));
	}
	CRT_CHECK(c >= 0, "socket");
	CRT_CHECK(!connect(c, family == AF_INET6 ? (struct sockaddr *)&a6 : (struct sockaddr *)&a4,
			   family == AF_INET6 ? sizeof(a6) : sizeof(a4)),
		  "connect to listener %d: %s", fd, strerror(errno));
	s = accept(fd, NULL, NULL);
	CRT_CHECK(s >= 0, "accept on %d: %s", fd, strerror(errno));
	write_str(c, "abc");
	CRT_CHECK(s >= 0 && read(s, b, 3) == 3 && !memcmp(b, "abc", 3), "data over accepted connection of %d", fd);
	close(c);
	if (s >= 0)
		close(s);
}

/* queue_udp leaves "udp K" and "udp K tail" queued on the UDP socket
 * (sent to itself), for the next verify. */
static void queue_udp(int k)
{
	struct sockaddr_in self = lo4(port_of(FD_UDP));
	char m[32];

	for (int i = 0; i < 2; i++) {
		snprintf(m, sizeof(m), i ? "udp %d tail" : "udp %d", k);
		if (sendto(FD_UDP, m, strlen(m), 0, (struct sockaddr *)&self, sizeof(self)) != (ssize_t)strlen(m))
			crt_die("udp send");
	}
}

static void check_state(void)
{
	char line[64], want[64], b[64];
	int v = 0;
	socklen_t l = sizeof(v);

	CRT_CHECK(!getsockopt(FD_LISTEN, SOL_SOCKET, SO_RCVBUF, &v, &l) && v == rcvbuf, "SO_RCVBUF %d, want %d", v, rcvbuf);
	l = sizeof(v);
	CRT_CHECK(!getsockopt(FD_LISTEN, SOL_SOCKET, SO_REUSEADDR, &v, &l) && v == 1, "SO_REUSEADDR %d", v);
	l = sizeof(v);
	CRT_CHECK(!getsockopt(FD_LISTEN6, IPPROTO_IPV6, IPV6_V6ONLY, &v, &l) && v == 1, "IPV6_V6ONLY %d", v);
	check_listener(FD_LISTEN, AF_INET);
	check_listener(FD_LISTEN6, AF_INET6);

	/* The two datagrams the previous verify (or the start) queued. */
	for (int i = 0; i < 2; i++) {
		ssize_t n = recv(FD_UDP, b, sizeof(b), MSG_DONTWAIT);
		snprintf(want, sizeof(want), i ? "udp %d tail" : "udp %d", verifies);
		CRT_CHECK(n == (ssize_t)strlen(want) && !memcmp(b, want, n), "udp datagram %d: %zd bytes, want \"%s\"", i, n, want);
	}
	CRT_CHECK(recv(FD_UDP, b, sizeof(b), MSG_DONTWAIT) < 0 && errno == EAGAIN, "extra udp datagram");
	queue_udp(verifies + 1);

	if (have_peer) {
		if (verifies > 0) {
			snprintf(want, sizeof(want), "ack %d", verifies - 1);
			CRT_CHECK(!read_line(FD_PEER, line, sizeof(line)) && !strcmp(line, want), "peer sent \"%s\", want \"%s\"",
				  line, want);
			snprintf(want, sizeof(want), "inner %d", verifies - 1);
			CRT_CHECK(!read_line(FD_INNER_S, line, sizeof(line)) && !strcmp(line, want),
				  "inner connection carried \"%s\", want \"%s\"", line, want);
		}
		snprintf(line, sizeof(line), "seq %d\n", verifies);
		write_str(FD_PEER, line);
		snprintf(line, sizeof(line), "inner %d\n", verifies);
		write_str(FD_INNER_C, line);
	}
	verifies++;
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = lo4(0);
	struct sockaddr_in6 a6;
	int one = 1, fd;
	socklen_t l = sizeof(rcvbuf);

	crt_init();
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &(int){65536}, sizeof(int)) || bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    listen(fd, 5))
		crt_die("listen on 127.0.0.1");
	place(fd, FD_LISTEN);
	if (getsockopt(FD_LISTEN, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &l))
		crt_die("SO_RCVBUF");

	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)))
		crt_die("bind udp");
	place(fd, FD_UDP);
	queue_udp(0);

	memset(&a6, 0, sizeof(a6));
	a6.sin6_family = AF_INET6;
	a6.sin6_addr = in6addr_loopback;
	fd = socket(AF_INET6, SOCK_STREAM, 0);
	if (fd < 0 || setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) ||
	    bind(fd, (struct sockaddr *)&a6, sizeof(a6)) || listen(fd, 3))
		crt_die("listen on ::1");
	place(fd, FD_LISTEN6);

	if (argc > 1) {
		a = lo4(atoi(argv[1]));
		fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)))
			crt_die("connect to the peer at port %s", argv[1]);
		place(fd, FD_PEER);
		a = lo4(port_of(FD_LISTEN));
		fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)))
			crt_die("connect to own listener");
		place(fd, FD_INNER_C);
		place(accept(FD_LISTEN, NULL, NULL), FD_INNER_S);
		have_peer = 1;
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
