package bench

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// hostSrc measures the kernel costs that bound a dump or restore on the
// machine at hand, each the median of several rounds, and prints them as
// "NAME VALUE" lines (microseconds): a first touch of an anonymous page,
// MADV_POPULATE_WRITE per page, a system call, a ptrace stop and continue
// of a task, a context switch (half a pipe round trip between two
// processes), all on one CPU, the fork of a small process and a thread clone.
// On the 2-core PVM guests crtools is measured on (2026-11-27) these were
// 13-15, 0.8-1.5, ~1, 14-17, ~7, 520-650 and 70-100 us: 50 forks alone
// are about half of the 0.06 s aimed at for a 50-process restore.
const hostSrc = `#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 5

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double med(double *v)
{
	qsort(v, ROUNDS, sizeof(*v), cmp);
	return v[ROUNDS / 2];
}

static int thr(void *arg)
{
	(void)arg;
	syscall(SYS_exit, 0);
	return 0;
}

int main(void)
{
	double fault[ROUNDS], populate[ROUNDS], sys[ROUNDS], stop[ROUNDS], ctx[ROUNDS], fork_[ROUNDS], clone_[ROUNDS];
	const int pages = 1024, calls = 20000, stops = 500, switches = 5000, forks = 20, clones = 50;
	size_t len = (size_t)pages * 4096;
	cpu_set_t one;

	/* One CPU for all: the figures are then of the kernel's work, not of
	   where the scheduler happened to put the other task. */
	CPU_ZERO(&one);
	CPU_SET(0, &one);
	sched_setaffinity(0, sizeof(one), &one);
	for (int r = 0; r < ROUNDS; r++) {
		char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		double t = now();

		for (int i = 0; i < pages; i++)
			p[(size_t)i * 4096] = 1;
		fault[r] = (now() - t) / pages;
		munmap(p, len);

		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		t = now();
		if (madvise(p, len, 23 /* MADV_POPULATE_WRITE */))
			populate[r] = -1;
		else
			populate[r] = (now() - t) / pages;
		munmap(p, len);

		t = now();
		for (int i = 0; i < calls; i++)
			syscall(SYS_getppid);
		sys[r] = (now() - t) / calls;

		pid_t c = fork();
		int st;

		if (c == 0)
			for (;;)
				pause();
		ptrace(PTRACE_SEIZE, c, 0, 0);
		ptrace(PTRACE_INTERRUPT, c, 0, 0);
		waitpid(c, &st, 0);
		t = now();
		for (int i = 0; i < stops; i++) {
			ptrace(PTRACE_CONT, c, 0, 0);
			ptrace(PTRACE_INTERRUPT, c, 0, 0);
			waitpid(c, &st, 0);
		}
		stop[r] = (now() - t) / stops;
		kill(c, SIGKILL);
		waitpid(c, &st, 0);

		int a[2], b[2];
		char x = 0;

		if (pipe(a) || pipe(b))
			return 2;
		c = fork();
		if (c == 0) {
			for (int i = 0; i < switches; i++)
				if (read(a[0], &x, 1) != 1 || write(b[1], &x, 1) != 1)
					_exit(2);
			_exit(0);
		}
		t = now();
		for (int i = 0; i < switches; i++)
			if (write(a[1], &x, 1) != 1 || read(b[0], &x, 1) != 1)
				return 2;
		ctx[r] = (now() - t) / switches / 2;
		waitpid(c, &st, 0);
		close(a[0]), close(a[1]), close(b[0]), close(b[1]);

		pid_t kids[forks];

		t = now();
		for (int i = 0; i < forks; i++) {
			kids[i] = fork();
			if (kids[i] == 0)
				for (;;)
					pause();
		}
		fork_[r] = (now() - t) / forks;
		for (int i = 0; i < forks; i++) {
			kill(kids[i], SIGKILL);
			waitpid(kids[i], &st, 0);
		}

		char *stk = malloc((size_t)clones * 65536);

		t = now();
		for (int i = 0; i < clones; i++)
			clone(thr, stk + (size_t)(i + 1) * 65536, CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM, NULL);
		clone_[r] = (now() - t) / clones;
		usleep(20000); /* the threads exit before their stacks go */
		free(stk);
	}
	printf("page_fault_us %.2f\npopulate_write_us %.2f\nsyscall_us %.3f\nptrace_stop_us %.1f\n"
	       "context_switch_us %.2f\nfork_us %.0f\nthread_clone_us %.1f\n",
	       med(fault), med(populate), med(sys), med(stop), med(ctx), med(fork_), med(clone_));
	return 0;
}
`

// BenchmarkHostCosts prints the kernel costs of this machine that set the
// floor of the other benchmarks (hostSrc), so that their figures can be
// read against the host they were measured on.
func BenchmarkHostCosts(b *testing.B) {
	requireRoot(b)
	bin := build(b, "hostcosts", hostSrc)
	for i := 0; i < b.N; i++ {
		out, err := exec.Command(bin).CombinedOutput()
		if err != nil {
			b.Fatalf("%s: %v\n%s", bin, err, out)
		}
		if i < b.N-1 {
			continue
		}
		n := 0
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			name, val, ok := strings.Cut(l, " ")
			v, err := strconv.ParseFloat(val, 64)
			if !ok || err != nil {
				b.Fatalf("unexpected line %q in:\n%s", l, out)
			}
			b.ReportMetric(v, name)
			n++
		}
		if n != 7 {
			b.Fatalf("%d figures, want 7:\n%s", n, out)
		}
		b.Logf("host costs (medians of 5 rounds):\n%s", out)
	}
}
