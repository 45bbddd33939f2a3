/* dump_traced: forks a child that sleeps, traces it with PTRACE_SEIZE and
 * writes the child's pid to the file named by argv[1]; then waits forever. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	pid_t c = fork();
	if (c == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (;;)
			pause();
	}
	if (ptrace(PTRACE_SEIZE, c, 0, 0))
		return 1;
	FILE *f = fopen(argv[1], "w");
	fprintf(f, "%d\n", c);
	fclose(f);
	for (;;)
		pause();
}
