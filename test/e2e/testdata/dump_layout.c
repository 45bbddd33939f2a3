/*
 * dump_layout: sets up one of each kind of state the dump must record and
 * writes where it put things to the file "layout" in its working directory
 * ("key value" lines), so that a test can check the images against it.
 * Then it loops like every workload (crt.h protocol).
 */
#include "crt.h"

#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>

#define NPAGES 16

static void on_usr2_handler(int sig) { (void)sig; }

int main(void)
{
	FILE *lay;
	unsigned char *anon, *ro, *none, *cow, *shfile, *shanon;
	int fd, dfd, afd, mfd;
	char path[256];
	struct sigaction sa;
	sigset_t set;
	stack_t ss;
	struct itimerval itv;
	timer_t tid;
	struct sigevent sev;
	struct itimerspec its;
	struct rlimit rl;

	crt_init();
	umask(027);

	/* Private anonymous memory with a pattern: pages 0..NPAGES-1, page 3 never touched. */
	anon = mmap(NULL, NPAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (int p = 0; p < NPAGES; p++)
		if (p != 3)
			crt_fill(anon + p * 4096, 4096, 100 + p);
	/* Read-only anonymous with contents. */
	ro = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	crt_fill(ro, 4096, 7);
	mprotect(ro, 4096, PROT_READ);
	/* PROT_NONE with contents: only /proc/PID/mem can read it. */
	none = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	crt_fill(none, 2 * 4096, 8);
	mprotect(none, 2 * 4096, PROT_NONE);

	/* A file: private mapping with one COW page, shared mapping. */
	snprintf(path, sizeof(path), "data file with spaces");
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	for (int i = 0; i < 4; i++) {
		unsigned char b[4096];
		crt_fill(b, sizeof(b), 200 + i);
		if (write(fd, b, sizeof(b)) != sizeof(b))
			crt_die("write");
	}
	cow = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	(void)*(volatile unsigned char *)(cow + 0); /* page 0 read: stays the file's */
	crt_fill(cow + 4096, 4096, 300); /* page 1 written: COW */
	shfile = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 4096);
	shfile[0] = shfile[0];
	/* Shared anonymous memory. */
	shanon = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	crt_fill(shanon + 2 * 4096, 4096, 400); /* only page 2 */

	/* Files: the data file at offset 5000 (fd above), O_APPEND + cloexec log, dir, /dev/null. */
	lseek(fd, 5000, SEEK_SET);
	afd = open("append.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (write(afd, "abc", 3) != 3)
		crt_die("write");
	dfd = open(".", O_RDONLY | O_DIRECTORY);
	mfd = open("/dev/null", O_RDONLY);

	/* Signals: a handler with SA_RESTART|SA_ONSTACK, an ignored signal, a blocked pending one. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr2_handler;
	sa.sa_flags = SA_RESTART | SA_ONSTACK;
	sigaddset(&sa.sa_mask, SIGINT);
	sigaction(SIGWINCH, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGRTMIN + 2);
	sigprocmask(SIG_BLOCK, &set, NULL);
	{
		union sigval v = {.sival_int = 4242};
		sigqueue(getpid(), SIGRTMIN + 2, v);
	}
	ss.ss_sp = malloc(65536);
	ss.ss_size = 65536;
	ss.ss_flags = 0;
	sigaltstack(&ss, NULL);

	/* Timers: ITIMER_REAL far away; a POSIX timer armed for an hour. */
	memset(&itv, 0, sizeof(itv));
	itv.it_value.tv_sec = 3000;
	itv.it_interval.tv_sec = 5;
	setitimer(ITIMER_REAL, &itv, NULL);
	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_SIGNAL;
	sev.sigev_signo = SIGRTMIN + 3;
	sev.sigev_value.sival_ptr = (void *)0x1234;
	timer_create(CLOCK_MONOTONIC, &sev, &tid);
	memset(&its, 0, sizeof(its));
	its.it_value.tv_sec = 3600;
	its.it_interval.tv_sec = 60;
	timer_settime(tid, 0, &its, NULL);

	/* Process: rlimit, pdeath signal, comm. */
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = 777;
	setrlimit(RLIMIT_NOFILE, &rl);
	prctl(PR_SET_PDEATHSIG, SIGHUP);
	prctl(PR_SET_NAME, "lay out(x)");

	lay = fopen("layout", "w");
	fprintf(lay, "anon %lu\nro %lu\nnone %lu\ncow %lu\nshfile %lu\nshanon %lu\n",
		(unsigned long)anon, (unsigned long)ro, (unsigned long)none, (unsigned long)cow,
		(unsigned long)shfile, (unsigned long)shanon);
	fprintf(lay, "fd %d\nafd %d\ndfd %d\nmfd %d\nsigrt %d\naltstack %lu\n", fd, afd, dfd, mfd,
		SIGRTMIN + 2, (unsigned long)ss.ss_sp);
	fclose(lay);
	crt_ready();

	for (;;) {
		if (crt_pending()) {
			CRT_CHECK_PATTERN(anon, 4096, 100, "anon page 0");
			CRT_CHECK(lseek(fd, 0, SEEK_CUR) == 5000, "file offset");
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(1);
	}
}
