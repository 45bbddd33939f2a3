/*
 * ns_net: started by the test in a network namespace of its own, which the
 * test fills (lo, a veth end with an address, a route). It counts in a
 * loop. On SIGUSR1 it writes into the report file (argv[1]) what it sees:
 * "counter N", one "addr IFNAME ADDRESS" line per IPv4 address, and
 * "udp REPLY" (or "udp fail ERR"): the answer to a datagram "ping N" it
 * sends, from a new socket, to argv[2]:argv[3] (the test's echo server
 * outside). It holds no socket between reports. SIGTERM ends it with 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t report, stop;

static void on_usr1(int sig) { (void)sig; report = 1; }
static void on_term(int sig) { (void)sig; stop = 1; }

static void write_report(const char *path, const char *ip, int port, unsigned long counter)
{
	char tmp[4096], msg[64], reply[128];
	struct ifaddrs *ifa, *p;
	struct sockaddr_in to = {0};
	struct timeval tv = {2, 0};
	FILE *f;
	int s, n;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f)
		exit(3);
	fprintf(f, "counter %lu\n", counter);
	if (getifaddrs(&ifa) == 0) {
		for (p = ifa; p; p = p->ifa_next) {
			char a[64];
			if (!p->ifa_addr || p->ifa_addr->sa_family != AF_INET)
				continue;
			inet_ntop(AF_INET, &((struct sockaddr_in *)p->ifa_addr)->sin_addr, a, sizeof(a));
			fprintf(f, "addr %s %s\n", p->ifa_name, a);
		}
		freeifaddrs(ifa);
	}
	s = socket(AF_INET, SOCK_DGRAM, 0);
	to.sin_family = AF_INET;
	to.sin_port = htons(port);
	inet_pton(AF_INET, ip, &to.sin_addr);
	n = snprintf(msg, sizeof(msg), "ping %lu", counter);
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (s < 0 || sendto(s, msg, n, 0, (struct sockaddr *)&to, sizeof(to)) != n) {
		fprintf(f, "udp fail send:%d\n", errno);
	} else {
		n = recv(s, reply, sizeof(reply) - 1, 0);
		if (n < 0)
			fprintf(f, "udp fail recv:%d\n", errno);
		else {
			reply[n] = 0;
			fprintf(f, "udp %s\n", reply);
		}
	}
	if (s >= 0)
		close(s);
	if (fclose(f) != 0 || rename(tmp, path) < 0)
		exit(4);
}

int main(int argc, char **argv)
{
	struct timespec ts = {0, 5 * 1000 * 1000};
	unsigned long counter = 0;

	if (argc != 4)
		return 1;
	signal(SIGUSR1, on_usr1);
	signal(SIGTERM, on_term);
	/* Ready: a first report (its UDP line fails until the test set up
	 * the network; only the file counts). */
	report = 1;
	while (!stop) {
		counter++;
		if (report) {
			report = 0;
			write_report(argv[1], argv[2], atoi(argv[3]), counter);
		}
		nanosleep(&ts, NULL);
	}
	return 0;
}
