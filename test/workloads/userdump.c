/*
 * userdump: a process of another user (euid 65534; real and saved uid 0,
 * fsuid 0 so that it can write the CRT_* files of the test's directory)
 * that is dumpable, as a process a non-root user starts is, and a child
 * forked with the same credentials (a heir on restore). A change of
 * credentials makes the kernel reset the dumpable flag (commit_creds), so
 * restore must set it once the credentials are in place. The child checks
 * its flag every 2 ms and exits 3 when it is wrong; verify checks the
 * root's flag and that the child still runs.
 */
#include "crt.h"

#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <sys/wait.h>

int main(void)
{
	pid_t child;

	crt_init();
	if (setresuid(0, 65534, 0))
		crt_die("setresuid");
	setfsuid(0);
	if (setfsuid(-1) != 0)
		crt_die("setfsuid");
	if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0))
		crt_die("PR_SET_DUMPABLE");
	pid_t root = getpid();

	child = fork();
	if (child < 0)
		crt_die("fork");
	if (child == 0) {
		for (;;) {
			if (getppid() != root)
				_exit(0);
			if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 1)
				_exit(3);
			crt_sleep_ms(2);
		}
	}
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			int st = 0;

			crt_sleep_ms(20); /* a child that finds its flag wrong has exited by now */
			CRT_CHECK(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1, "dumpable %d, want 1",
				  prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
			CRT_CHECK(waitpid(child, &st, WNOHANG) == 0, "child exited (status %#x): dumpable wrong there", st);
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(2);
	}
	return 0;
}
