/*
 * shelljob_ptydata: two pseudo-terminal pairs held in the tree, with bytes
 * queued at both ends when dumped. Pair A is raw: 1000 bytes wait at the
 * slave (written to the master) and 777 at the master (written to the
 * slave). Pair B is canonical without echo: "line one\npartial" waits at
 * the slave, "out\r\n" (the slave's "out\n" through ONLCR) at the master.
 * The first verify reads every queue (non-blocking) and checks it byte for
 * byte; later verifies check they stay empty. Fds: A master 40, slave 41;
 * B master 42, slave 43.
 */
#define _GNU_SOURCE
#include "../../workloads/crt.h"

#include <sys/ioctl.h>
#include <termios.h>

static void pair(int mfd, int sfd)
{
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) || unlockpt(m))
		crt_die("posix_openpt");
	int s = open(ptsname(m), O_RDWR | O_NOCTTY);
	if (s < 0 || dup3(m, mfd, 0) != mfd || dup3(s, sfd, 0) != sfd)
		crt_die("open the slave");
	close(m);
	close(s);
	fcntl(mfd, F_SETFL, O_RDWR | O_NONBLOCK);
	fcntl(sfd, F_SETFL, O_RDWR | O_NONBLOCK);
}

static void put(int fd, const unsigned char *b, size_t n)
{
	if (write(fd, b, n) != (ssize_t)n)
		crt_die("write %zu bytes to fd %d", n, fd);
}

/* drain reads what fd has within 200 ms of quiet. */
static size_t drain(int fd, unsigned char *b, size_t cap)
{
	size_t n = 0;
	int64_t last = crt_now();
	while (crt_now() - last < 200 * 1000000LL && n < cap) {
		ssize_t r = read(fd, b + n, cap - n);
		if (r > 0) {
			n += r;
			last = crt_now();
		} else {
			crt_sleep_ms(1);
		}
	}
	return n;
}

static void waitq(int fd, int want)
{
	int n = 0;
	for (int i = 0; i < 2000 && n < want; i++) {
		ioctl(fd, FIONREAD, &n);
		crt_sleep_ms(1);
	}
}

int main(void)
{
	unsigned char a_in[1000], a_out[777], buf[4096];
	struct termios t;
	int checked = 0;

	crt_init();
	for (size_t i = 0; i < sizeof a_in; i++)
		a_in[i] = crt_pattern(1, i);
	for (size_t i = 0; i < sizeof a_out; i++)
		a_out[i] = crt_pattern(2, i);
	pair(40, 41);
	tcgetattr(41, &t);
	cfmakeraw(&t);
	tcsetattr(41, TCSANOW, &t);
	pair(42, 43);
	tcgetattr(43, &t);
	t.c_lflag &= ~(ECHO | ECHOE | ECHOK | ECHONL | ECHOCTL | ECHOKE);
	tcsetattr(43, TCSANOW, &t);

	put(40, a_in, sizeof a_in);
	put(41, a_out, sizeof a_out);
	put(42, (const unsigned char *)"line one\npartial", 16);
	put(43, (const unsigned char *)"out\n", 4);
	waitq(41, sizeof a_in);
	waitq(40, sizeof a_out);
	waitq(42, 5);
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			size_t n;
			if (!checked) {
				n = drain(41, buf, sizeof buf);
				CRT_CHECK(n == sizeof a_in && !memcmp(buf, a_in, n), "pair A slave queue: %zu bytes, want the 1000 written", n);
				n = drain(40, buf, sizeof buf);
				CRT_CHECK(n == sizeof a_out && !memcmp(buf, a_out, n), "pair A master queue: %zu bytes, want the 777 written", n);
				n = drain(43, buf, sizeof buf);
				buf[n] = 0;
				CRT_CHECK(n == 16 && !memcmp(buf, "line one\npartial", 16), "pair B slave queue: %zu bytes \"%s\"", n, (char *)buf);
				n = drain(42, buf, sizeof buf);
				buf[n] = 0;
				CRT_CHECK(n == 5 && !memcmp(buf, "out\r\n", 5), "pair B master queue: %zu bytes \"%s\"", n, (char *)buf);
				checked = 1;
			} else {
				for (int fd = 40; fd <= 43; fd++) {
					n = drain(fd, buf, sizeof buf);
					CRT_CHECK(n == 0, "fd %d: %zu bytes appeared after the queues were read", fd, n);
				}
			}
			/* The pairs still work: a byte through pair A both ways. */
			put(40, (const unsigned char *)"x", 1);
			n = drain(41, buf, sizeof buf);
			CRT_CHECK(n == 1 && buf[0] == 'x', "pair A master->slave after restore: %zu bytes", n);
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(1);
	}
}
