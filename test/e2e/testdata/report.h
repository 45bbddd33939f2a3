/*
 * report.h: the scaffolding the report trees (ns_pid.c, ns_ctty.c,
 * ns_own.c) share. SIGUSR1 asks for a report, SIGTERM ends the tree;
 * reports are written atomically by rename; a token drawn at start and
 * kept in memory only tells a restored copy (same token) from a re-run.
 * Include it after the file's own _GNU_SOURCE.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t report, stop;

static void on_usr1(int sig) { (void)sig; report = 1; }
static void on_term(int sig) { (void)sig; stop = 1; }

/* report_start draws the token and installs the handlers. */
static inline unsigned long report_start(void)
{
	struct timespec now;
	unsigned long token;

	clock_gettime(CLOCK_REALTIME, &now);
	token = (unsigned long)now.tv_nsec * 2654435761UL + (unsigned long)now.tv_sec;
	signal(SIGUSR1, on_usr1);
	signal(SIGTERM, on_term);
	return token;
}

/* write_file replaces path with s atomically (rename); exit 3 on failure. */
static inline void write_file(const char *path, const char *s)
{
	char tmp[4096];
	int fd, n = strlen(s);

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, s, n) != n || close(fd) < 0 || rename(tmp, path) < 0)
		exit(3);
}
