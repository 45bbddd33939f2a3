/* A multi-threaded workload for TestCuredBatchTracerDeath: a thread keeps
 * known values in xmm8/xmm9 and checks them in a loop, two threads sleep
 * 3 ms at a time (relative nanosleep: restarted with
 * -ERESTART_RESTARTBLOCK) with SIGUSR2 blocked and check their mask, the
 * main thread pauses (-ERESTARTNOHAND). Prints "ready PID", then
 * "tick FP SLEEPS" every 10 ms from one more thread, and "FAIL ..." if a
 * value, the mask or a restart is wrong. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long fp, sleeps, bad;
static const unsigned char pat[16] __attribute__((aligned(16))) = "crtools-xmm-pat";

static void *fpthread(void *a) {
	(void)a;
	__asm__ volatile(
		"movdqa (%0), %%xmm8\n"
		"movdqa (%0), %%xmm9\n"
		"1: movdqa %%xmm8, %%xmm10\n"
		"pcmpeqb (%0), %%xmm10\n"
		"pmovmskb %%xmm10, %%eax\n"
		"cmp $0xffff, %%eax\n"
		"jne 2f\n"
		"movdqa %%xmm9, %%xmm10\n"
		"pcmpeqb (%0), %%xmm10\n"
		"pmovmskb %%xmm10, %%eax\n"
		"cmp $0xffff, %%eax\n"
		"jne 2f\n"
		"lock incq (%1)\n"
		"jmp 1b\n"
		"2: movq $1, (%2)\n"
		"jmp 1b\n"
		:: "r"(pat), "r"(&fp), "r"(&bad) : "rax", "memory", "xmm8", "xmm9", "xmm10");
	return 0;
}

static void *sleeper(void *a) {
	(void)a;
	for (;;) {
		struct timespec ts = {0, 3000000};
		sigset_t s;
		if (nanosleep(&ts, 0) != 0) bad = 2;
		if (pthread_sigmask(SIG_BLOCK, 0, &s) != 0 || sigismember(&s, SIGUSR2) != 1 || sigismember(&s, SIGINT)) bad = 3;
		__sync_fetch_and_add(&sleeps, 1);
	}
	return 0;
}

static void *ticker(void *a) {
	(void)a;
	for (;;) {
		struct timespec ts = {0, 10000000};
		while (nanosleep(&ts, &ts) != 0) {}
		if (bad) printf("FAIL %lu (1: xmm, 2: nanosleep EINTR, 3: mask, 4: pause returned)\n", bad);
		else printf("tick %lu %lu\n", fp, sleeps);
		fflush(stdout);
	}
	return 0;
}

int main(void) {
	sigset_t s;
	pthread_t t;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &s, 0);
	pthread_create(&t, 0, fpthread, 0);
	pthread_create(&t, 0, sleeper, 0);
	pthread_create(&t, 0, sleeper, 0);
	pthread_create(&t, 0, ticker, 0);
	printf("ready %d\n", getpid());
	fflush(stdout);
	for (;;) {
		pause();
		bad = 4;
	}
}
