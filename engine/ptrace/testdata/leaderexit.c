/* leaderexit: a second thread waits in pause(); the main thread prints
 * "ready MAIN OTHER" and, on a line on stdin, calls pthread_exit, leaving
 * a zombie leader and a live thread. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile pid_t other;

static void *idle(void *a)
{
	(void)a;
	other = (pid_t)syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

int main(void)
{
	pthread_t t;
	char line[16];

	if (pthread_create(&t, NULL, idle, NULL))
		return 2;
	while (!other)
		usleep(100);
	printf("ready %d %d\n", (int)getpid(), (int)other);
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 2;
	pthread_exit(NULL);
}
