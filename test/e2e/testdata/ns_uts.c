/*
 * ns_uts: started by the test in new UTS and IPC namespaces. It sets the
 * hostname, the domainname and kernel.msgmax of its namespaces, then counts.
 * On SIGUSR1 it writes what it sees ("nodename domainname msgmax counter")
 * into the report file (argv[4]), atomically by rename, so a restored copy
 * reports from inside its restored namespaces. The first report, written
 * once the handlers are installed, says it is ready. SIGTERM ends it with 0.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t report, stop;

static void on_usr1(int sig) { (void)sig; report = 1; }
static void on_term(int sig) { (void)sig; stop = 1; }

static void write_report(const char *path, unsigned long counter)
{
	struct utsname u;
	char tmp[4096], msgmax[64] = "?", buf[1024];
	int fd, n;

	if (uname(&u) < 0)
		exit(2);
	fd = open("/proc/sys/kernel/msgmax", O_RDONLY);
	if (fd >= 0) {
		n = read(fd, msgmax, sizeof(msgmax) - 1);
		msgmax[n > 0 ? n : 0] = 0;
		msgmax[strcspn(msgmax, "\n")] = 0;
		close(fd);
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	n = snprintf(buf, sizeof(buf), "%s %s %s %lu\n", u.nodename, u.domainname, msgmax, counter);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, buf, n) != n || close(fd) < 0 || rename(tmp, path) < 0)
		exit(3);
}

int main(int argc, char **argv)
{
	struct timespec ts = {0, 5 * 1000 * 1000};
	unsigned long counter = 0;
	int fd;

	if (argc != 5)
		return 1;
	if (sethostname(argv[1], strlen(argv[1])) < 0 || setdomainname(argv[2], strlen(argv[2])) < 0)
		return 4;
	fd = open("/proc/sys/kernel/msgmax", O_WRONLY);
	if (fd < 0 || write(fd, argv[3], strlen(argv[3])) < 0 || close(fd) < 0)
		return 5;
	signal(SIGUSR1, on_usr1);
	signal(SIGTERM, on_term);
	write_report(argv[4], counter); /* ready: the handlers are in place */
	while (!stop) {
		counter++;
		if (report) {
			report = 0;
			write_report(argv[4], counter);
		}
		nanosleep(&ts, NULL);
	}
	return 0;
}
