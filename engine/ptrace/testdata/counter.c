/* A live workload for injection tests: counts, and every few milliseconds
 * checks that its own file descriptors still work (a pipe round trip and a
 * pwrite/pread of a file), printing one status line per check on stdout.
 * Prints "ready PID ADDR" first, ADDR being a buffer holding "crtools-data".
 * SIGUSR1 makes it print "sig" (to check that signals still arrive). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

static char data[64] = "crtools-data";
static volatile sig_atomic_t got_sig;

static void on_usr1(int s) { (void)s; got_sig = 1; }

int main(int argc, char **argv) {
	int p[2];
	unsigned long counter = 0, checks = 0;
	char path[] = "/tmp/crtools-counter-XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0 || pipe(p) < 0) { perror("setup"); return 1; }
	unlink(path);
	signal(SIGUSR1, on_usr1);
	printf("ready %d %p pipe %d %d file %d\n", getpid(), (void *)data, p[0], p[1], fd);
	fflush(stdout);
	for (;;) {
		struct timespec ts = {0, 2 * 1000 * 1000};
		char c = (char)checks, r = 0;
		unsigned long back = 0;
		for (int i = 0; i < 100000; i++) counter++;
		if (write(p[1], &c, 1) != 1 || read(p[0], &r, 1) != 1 || r != c) {
			printf("FAIL pipe %lu\n", checks); fflush(stdout); return 2;
		}
		if (pwrite(fd, &counter, sizeof counter, 0) != sizeof counter ||
		    pread(fd, &back, sizeof back, 0) != sizeof back || back != counter) {
			printf("FAIL file %lu\n", checks); fflush(stdout); return 3;
		}
		checks++;
		printf("tick %lu %lu %s\n", checks, counter, data);
		if (got_sig) { got_sig = 0; printf("sig\n"); }
		fflush(stdout);
		nanosleep(&ts, NULL);
	}
}
