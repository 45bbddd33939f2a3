/*
 * ns_ctty: started by the test as PID 1 of a new pid namespace (and a
 * session of its own). A pseudo-terminal pair of the tree is the
 * controlling terminal of a session of the tree, with a foreground job, as
 * in shelljob_ctty.c: the init holds the master (fd 40); its child S
 * (PID 2) starts a session and opens the slave without O_NOCTTY; S's child
 * G (PID 3) leads its own process group, which S makes the terminal's
 * foreground (tcsetpgrp).
 *
 * On SIGUSR1 the init writes "PASS counter token" or "FAIL reason" to
 * argv[1] (atomically by rename): it checks from inside the namespace that
 * the master reports S's session and G's group (TIOCGSID, TIOCGPGRP) and
 * that S sees G's group as the foreground of its terminal (tcgetpgrp),
 * with the pids the tree had at start. token is drawn at start and kept in memory only, so a restored
 * tree reports the same one. The first report says the tree is ready.
 * SIGTERM to the init kills S and G, reaps them and exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "report.h"

/* S answers the init's requests (req) here with its terminal's
 * foreground group (tcgetpgrp). /proc is no help: the tree sees the outer
 * namespace's, where its pids are others. */
struct shared {
	volatile int g_pid, ready, req, ans, s_tcpgrp;
};

int main(int argc, char **argv)
{
	struct timespec ts = {0, 2 * 1000 * 1000};
	unsigned long token, counter = 0;
	struct shared *sh;
	char name[64];
	pid_t s_pid;
	int m;

	if (argc != 2)
		return 1;
	token = report_start();
	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return 2;
	m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) || unlockpt(m) || dup3(m, 40, 0) != 40)
		return 2;
	close(m);
	snprintf(name, sizeof name, "%s", ptsname(40));

	s_pid = fork();
	if (s_pid < 0)
		return 2;
	if (s_pid == 0) { /* S: session leader with the slave as its terminal */
		int s;
		pid_t g;

		close(40);
		signal(SIGUSR1, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		if (setsid() < 0)
			exit(2);
		s = open(name, O_RDWR); /* no O_NOCTTY: becomes the controlling terminal */
		if (s < 0)
			exit(2);
		g = fork();
		if (g == 0) { /* G: the foreground job */
			setpgid(0, 0);
			for (;;)
				pause();
		}
		setpgid(g, g);
		signal(SIGTTOU, SIG_IGN);
		if (tcsetpgrp(s, g))
			exit(2);
		sh->g_pid = g;
		sh->ready = 1;
		for (;;) {
			int req = __atomic_load_n(&sh->req, __ATOMIC_ACQUIRE);

			if (req != sh->ans) {
				sh->s_tcpgrp = tcgetpgrp(s);
				__atomic_store_n(&sh->ans, req, __ATOMIC_RELEASE);
			}
			nanosleep(&ts, NULL);
		}
	}
	while (!sh->ready)
		nanosleep(&ts, NULL);

	report = 1;
	while (!stop) {
		counter++;
		if (report) {
			int sid = -1, pgrp = -1, req = sh->req + 1;
			char buf[512];

			report = 0;
			__atomic_store_n(&sh->req, req, __ATOMIC_RELEASE);
			for (int i = 0; i < 5000 && __atomic_load_n(&sh->ans, __ATOMIC_ACQUIRE) != req; i++)
				nanosleep(&ts, NULL);
			if (ioctl(40, TIOCGSID, &sid) || sid != s_pid)
				snprintf(buf, sizeof buf, "FAIL TIOCGSID on the master: %d (errno %d), want session %d\n", sid, errno, s_pid);
			else if (ioctl(40, TIOCGPGRP, &pgrp) || pgrp != sh->g_pid)
				snprintf(buf, sizeof buf, "FAIL TIOCGPGRP on the master: %d, want the job %d (the session leader is %d)\n", pgrp, sh->g_pid, s_pid);
			else if (sh->ans != req)
				snprintf(buf, sizeof buf, "FAIL the session leader did not answer\n");
			else if (sh->s_tcpgrp != sh->g_pid)
				snprintf(buf, sizeof buf, "FAIL the session leader sees tcgetpgrp %d, want %d\n", sh->s_tcpgrp, sh->g_pid);
			else
				snprintf(buf, sizeof buf, "PASS %lu %lu\n", counter, token);
			write_file(argv[1], buf);
		}
		nanosleep(&ts, NULL);
	}
	kill(s_pid, SIGKILL);
	kill(sh->g_pid, SIGKILL);
	while (wait(NULL) > 0)
		;
	exit(0);
}
