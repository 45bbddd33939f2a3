/*
 * ns_own: started by the test as PID 1 of a new pid namespace. Its child C
 * (PID 2 inside) owns files by pid, seen from inside the namespace:
 *   - fd 41, the read end of a pipe, has C as its F_SETOWN owner (set by
 *     the init, naming C's inner pid);
 *   - fd 42, the read end of another pipe, made by C, which leads a process
 *     group of its own and makes the group the owner (F_SETOWN -pgid);
 *   - fd 43, argv[2]/posix.dat, is opened by C, which holds a POSIX write
 *     lock on its bytes 0..9;
 *   - fd 44, argv[2]/flock.dat, is opened by C, which holds an exclusive
 *     flock on it;
 *   - fd 45, the read end of a third pipe, made by C, whose owner is a
 *     second thread T of C (F_SETOWN_EX, F_OWNER_TID).
 * (The owner of a regular file is not dumped: see the test.)
 *
 * On SIGUSR1 the init writes "PASS counter token" or "FAIL reason" to
 * argv[1] (atomically by rename), checking from inside the namespace that
 * F_GETOWN of fd 41 (init) names C and that of fd 42 (C, asked through
 * shared memory) names C's group, that of fd 45 (F_GETOWN_EX) thread T, that another open of flock.dat cannot take an flock, and that
 * F_GETLK on posix.dat names C as the holder. token is drawn at start and
 * kept in memory only. The first report says the tree is ready.
 * SIGTERM to the init kills C, reaps it and exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "report.h"

/* C answers the init's requests (req) with its own pid, F_GETOWN of its
 * fd 42 (minus its group) and F_GETOWN_EX of its fd 45; t_tid is T's tid,
 * as T read it at start. */
struct shared {
	volatile int ready, req, ans, c_pid, c_own, t_tid, t_type, t_own;
};

static struct shared *sh;

static void *thread_t(void *arg)
{
	(void)arg;
	sh->t_tid = gettid();
	for (;;)
		pause();
	return NULL;
}

int main(int argc, char **argv)
{
	struct timespec ts = {0, 2 * 1000 * 1000};
	unsigned long token, counter = 0;
	char flockp[4096], posixp[4096];
	int p[2];
	pid_t c;

	if (argc != 3)
		return 1;
	snprintf(flockp, sizeof flockp, "%s/flock.dat", argv[2]);
	snprintf(posixp, sizeof posixp, "%s/posix.dat", argv[2]);
	token = report_start();
	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED || pipe(p) || dup2(p[0], 41) != 41)
		return 2;
	close(p[0]);

	c = fork();
	if (c < 0)
		return 2;
	if (c == 0) {
		struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
		struct f_owner_ex ox;
		int f, q, cp[2], tp[2];
		pthread_t th;

		signal(SIGUSR1, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		if (setpgid(0, 0) || pipe(cp) || dup2(cp[0], 42) != 42)
			exit(2);
		close(cp[0]);
		f = open(flockp, O_RDWR | O_CREAT, 0600);
		q = open(posixp, O_RDWR | O_CREAT, 0600);
		if (f < 0 || q < 0 || dup2(q, 43) != 43 || dup2(f, 44) != 44)
			exit(2);
		close(f);
		close(q);
		if (fcntl(42, F_SETOWN, -getpgrp()) || flock(44, LOCK_EX | LOCK_NB) || fcntl(43, F_SETLK, &fl))
			exit(2);
		if (pipe(tp) || dup2(tp[0], 45) != 45 || pthread_create(&th, NULL, thread_t, NULL))
			exit(2);
		close(tp[0]);
		while (!sh->t_tid)
			nanosleep(&ts, NULL);
		ox.type = F_OWNER_TID;
		ox.pid = sh->t_tid;
		if (fcntl(45, F_SETOWN_EX, &ox))
			exit(2);
		sh->ready = 1;
		for (;;) {
			int req = __atomic_load_n(&sh->req, __ATOMIC_ACQUIRE);

			if (req != sh->ans) {
				sh->c_pid = getpid();
				sh->c_own = fcntl(42, F_GETOWN);
				ox.type = ox.pid = -1;
				fcntl(45, F_GETOWN_EX, &ox);
				sh->t_type = ox.type;
				sh->t_own = ox.pid;
				__atomic_store_n(&sh->ans, req, __ATOMIC_RELEASE);
			}
			nanosleep(&ts, NULL);
		}
	}
	if (fcntl(41, F_SETOWN, c))
		return 2;
	while (!sh->ready)
		nanosleep(&ts, NULL);

	report = 1;
	while (!stop) {
		counter++;
		if (report) {
			struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
			int req = sh->req + 1, own, f, q, fr = 0;
			char buf[512];

			report = 0;
			__atomic_store_n(&sh->req, req, __ATOMIC_RELEASE);
			for (int i = 0; i < 5000 && __atomic_load_n(&sh->ans, __ATOMIC_ACQUIRE) != req; i++)
				nanosleep(&ts, NULL);
			own = fcntl(41, F_GETOWN);
			f = open(flockp, O_RDWR);
			q = open(posixp, O_RDWR);
			if (f >= 0 && flock(f, LOCK_EX | LOCK_NB) == 0)
				fr = 1;
			if (sh->ans != req)
				snprintf(buf, sizeof buf, "FAIL the child did not answer\n");
			else if (sh->c_pid != c)
				snprintf(buf, sizeof buf, "FAIL the child's pid is %d, want %d\n", sh->c_pid, c);
			else if (own != c)
				snprintf(buf, sizeof buf, "FAIL F_GETOWN of the pipe is %d, want the child %d\n", own, c);
			else if (sh->c_own != -c)
				snprintf(buf, sizeof buf, "FAIL F_GETOWN of the child's pipe is %d, want the child's group %d\n", sh->c_own, -c);
			else if (sh->t_type != F_OWNER_TID || sh->t_own != sh->t_tid)
				snprintf(buf, sizeof buf, "FAIL F_GETOWN_EX of the child's third pipe is type %d pid %d, want the thread (type %d) %d\n",
					 sh->t_type, sh->t_own, F_OWNER_TID, sh->t_tid);
			else if (f < 0 || q < 0)
				snprintf(buf, sizeof buf, "FAIL open the lock files: errno %d\n", errno);
			else if (fr)
				snprintf(buf, sizeof buf, "FAIL the child's flock on flock.dat is not held: another open took it\n");
			else if (fcntl(q, F_GETLK, &fl))
				snprintf(buf, sizeof buf, "FAIL F_GETLK on posix.dat: errno %d\n", errno);
			else if (fl.l_type != F_WRLCK || fl.l_pid != c || fl.l_start != 0 || fl.l_len != 10)
				snprintf(buf, sizeof buf, "FAIL F_GETLK on posix.dat: type %d pid %d start %ld len %ld, want a write lock of the child %d on 0..9\n",
					 fl.l_type, fl.l_pid, (long)fl.l_start, (long)fl.l_len, c);
			else
				snprintf(buf, sizeof buf, "PASS %lu %lu\n", counter, token);
			if (f >= 0)
				close(f);
			if (q >= 0)
				close(q); /* the init holds no POSIX lock on it: nothing dropped */
			write_file(argv[1], buf);
		}
		nanosleep(&ts, NULL);
	}
	kill(c, SIGKILL);
	while (wait(NULL) > 0)
		;
	exit(0);
}
