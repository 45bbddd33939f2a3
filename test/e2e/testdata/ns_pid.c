/*
 * ns_pid: started by the test as PID 1 of a new pid namespace. It forks one
 * child, and both count in a loop. On SIGUSR1 each writes what it sees,
 * "pid ppid counter token", into its report file (argv[1] for the init,
 * argv[1].child for the child), atomically by rename. token is a number
 * drawn at start and kept in memory only: a restored copy reports the same
 * one. The init's first report, written once the child is ready too, says
 * the tree is ready. SIGTERM to the init ends the child, reaps it and exits
 * 0 if the child exited 0.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "report.h"

static void write_report(const char *path, unsigned long counter, unsigned long token)
{
	char buf[256];

	/* Raw syscalls: what the kernel says now, no cached value. */
	snprintf(buf, sizeof(buf), "%ld %ld %lu %lu\n", syscall(SYS_getpid), syscall(SYS_getppid), counter, token);
	write_file(path, buf);
}

static void loop(const char *path, unsigned long token, pid_t child)
{
	struct timespec ts = {0, 5 * 1000 * 1000};
	unsigned long counter = 0;

	while (!stop) {
		counter++;
		if (report) {
			report = 0;
			write_report(path, counter, token);
		}
		nanosleep(&ts, NULL);
	}
	if (child > 0) {
		int st;
		kill(child, SIGTERM);
		if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			exit(6);
	}
	exit(0);
}

int main(int argc, char **argv)
{
	char cpath[4096], ctmp[4096];
	unsigned long token;
	pid_t child;

	if (argc != 2)
		return 1;
	token = report_start();
	snprintf(cpath, sizeof(cpath), "%s.child", argv[1]);
	child = fork();
	if (child < 0)
		return 2;
	if (child == 0)
		loop(cpath, token + 1, 0);
	/* Ready when the child has its handlers: its first report. */
	snprintf(ctmp, sizeof(ctmp), "%s", cpath);
	for (;;) {
		kill(child, SIGUSR1);
		usleep(2000);
		if (access(ctmp, F_OK) == 0)
			break;
	}
	write_report(argv[1], 0, token);
	loop(argv[1], token, child);
	return 0;
}
