/* Blocks in one syscall and reports how it ended, for checking that an
 * injection into a task blocked in a syscall lets that syscall carry on.
 *   blocker nanosleep MS   sleeps MS ms, prints "slept ELAPSED_MS rc=RC"
 *   blocker read           reads stdin, prints "read N: DATA"
 *   blocker pause          pause()s until SIGUSR1, prints "paused rc=RC errno=E"
 *   blocker masked         blocks SIGUSR1 and SIGUSR2, installs two seccomp
 *                          filters (1 and 2 instructions, both allow all),
 *                          then sleeps forever
 *   blocker threads N      starts N more threads, each with its own mask
 *                          (SIGUSR2 blocked in the odd ones), that all
 *                          sleep forever; prints "ready PID TID..."
 * Prints "ready PID" before blocking. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

static void install_allow(int n) {
	struct sock_filter insns[2] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = (unsigned short)n, .filter = insns + (2 - n) };
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) { perror("seccomp"); exit(1); }
}

static void on_usr1(int s) { (void)s; }

static pid_t tids[64];

static void *sleeper(void *arg) {
	long i = (long)arg;
	if (i % 2) {
		sigset_t m;
		sigemptyset(&m);
		sigaddset(&m, SIGUSR2);
		pthread_sigmask(SIG_BLOCK, &m, NULL);
	}
	__atomic_store_n(&tids[i], (pid_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
	for (;;) pause();
	return NULL;
}

static void start_threads(int n) {
	for (long i = 0; i < n; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, sleeper, (void *)i)) { perror("pthread_create"); exit(1); }
	}
	printf("ready %d", getpid());
	for (int i = 0; i < n; i++) {
		while (!__atomic_load_n(&tids[i], __ATOMIC_ACQUIRE)) usleep(1000);
		printf(" %d", tids[i]);
	}
	printf("\n");
	fflush(stdout);
	for (;;) pause();
}

static long now_ms(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int main(int argc, char **argv) {
	if (argc < 2) return 1;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1; /* no SA_RESTART */
	sigaction(SIGUSR1, &sa, NULL);
	if (!strcmp(argv[1], "masked")) {
		sigset_t m;
		sigemptyset(&m);
		sigaddset(&m, SIGUSR1);
		sigaddset(&m, SIGUSR2);
		sigprocmask(SIG_BLOCK, &m, NULL);
		prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
		install_allow(1);
		install_allow(2);
	}
	if (!strcmp(argv[1], "threads")) {
		int n = atoi(argv[2]);
		start_threads(n < 64 ? n : 64);
	}
	printf("ready %d\n", getpid());
	fflush(stdout);
	if (!strcmp(argv[1], "nanosleep")) {
		long ms = atol(argv[2]);
		struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
		long t0 = now_ms();
		int rc = nanosleep(&ts, NULL);
		printf("slept %ld rc=%d\n", now_ms() - t0, rc);
	} else if (!strcmp(argv[1], "read")) {
		char buf[64];
		ssize_t n = read(0, buf, sizeof buf - 1);
		buf[n > 0 ? n : 0] = 0;
		printf("read %zd: %s\n", n, buf);
	} else if (!strcmp(argv[1], "masked")) {
		for (;;) pause();
	} else if (!strcmp(argv[1], "pause")) {
		int rc = pause();
		printf("paused rc=%d errno=%d\n", rc, errno);
	}
	fflush(stdout);
	return 0;
}
