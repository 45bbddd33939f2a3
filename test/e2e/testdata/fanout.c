/*
 * fanout N procs|threads: a process with N-1 children (each pausing) or
 * N-1 threads (each pausing), for the tree and thread restore benchmarks.
 * Writes its pid to CRT_READY once all exist.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *idle(void *arg) { (void)arg; for (;;) pause(); return NULL; }

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 50;
	int threads = argc > 2 && !strcmp(argv[2], "threads");
	char buf[32], tmp[4096];

	for (int i = 1; i < n; i++) {
		if (threads) {
			pthread_t t;
			if (pthread_create(&t, NULL, idle, NULL))
				return 2;
		} else if (fork() == 0) {
			for (;;)
				pause();
		}
	}
	if (getenv("CRT_READY")) {
		snprintf(tmp, sizeof(tmp), "%s.tmp", getenv("CRT_READY"));
		FILE *f = fopen(tmp, "w");
		snprintf(buf, sizeof(buf), "%d", getpid());
		fputs(buf, f);
		fclose(f);
		rename(tmp, getenv("CRT_READY"));
	}
	for (;;)
		pause();
}
