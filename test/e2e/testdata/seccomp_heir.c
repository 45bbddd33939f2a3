/* seccomp_heir: a single-threaded parent R and its child H under seccomp,
 * with nothing shared, so that a restore forks H late from R (an heir,
 * engine/restore/inherit.go).
 *
 *   R: no_new_privs, F1 (getppid fails with EPERM); forks H; then adds
 *      F3 (getpgrp fails with EACCES): R has F1, F3.
 *   H: inherits F1, adds F2 (uname fails with EXDEV): H has F1, F2, and
 *      not F3, which R installed after the fork.
 *
 * H checks its calls every few ms and writes one byte a round into a pipe
 * to R: 'k' when all was as set up, 'b' if not. Verify (in R) checks its
 * own calls, that H wrote since the last verify and never 'b', and the
 * "Seccomp_filters:" count of both (2 each). H's pid is in the file
 * "child".
 */
#include "crt.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/utsname.h>

static void deny(int nr, int err)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | err),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };

	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog))
		crt_die("seccomp filter for syscall %d", nr);
}

/* fails tells whether syscall nr (uname's buffer given) fails with err
 * (err 0: succeeds). */
static int fails(long nr, int err)
{
	struct utsname u;
	long r;

	errno = 0;
	r = syscall(nr, &u);
	return err ? r == -1 && errno == err : r >= 0;
}

static int filters_of(pid_t pid)
{
	char path[64], line[256];
	int n = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		sscanf(line, "Seccomp_filters: %d", &n);
	fclose(f);
	return n;
}

int main(void)
{
	pid_t root = getpid(), h;
	int p[2], ok;
	char buf[32];

	crt_init();
	if (pipe2(p, O_NONBLOCK | O_CLOEXEC))
		crt_die("pipe");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		crt_die("no_new_privs");
	deny(SYS_getppid, EPERM);
	h = fork();
	if (h < 0)
		crt_die("fork");
	if (h == 0) {
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) || kill(root, 0))
			_exit(3);
		deny(SYS_uname, EXDEV);
		for (;;) {
			ok = fails(SYS_getppid, EPERM) && fails(SYS_uname, EXDEV) && fails(SYS_getpgrp, 0);
			if (write(p[1], ok ? "k" : "b", 1) < 0 && errno != EAGAIN)
				_exit(4);
			crt_sleep_ms(5);
		}
	}
	deny(SYS_getpgrp, EACCES);
	snprintf(buf, sizeof(buf), "%d\n", (int)h);
	if (crt_write_atomic("child", buf))
		crt_die("write child");
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			int64_t end = crt_now() + 3000000000LL;
			int got = 0, bad = 0;
			char c[64];
			ssize_t n;

			while (!got && crt_now() < end) {
				while ((n = read(p[0], c, sizeof(c))) > 0)
					for (ssize_t i = 0; i < n; i++) {
						got++;
						bad += c[i] != 'k';
					}
				if (!got)
					crt_sleep_ms(1);
			}
			CRT_CHECK(got > 0, "child %d wrote nothing since the last verify", (int)h);
			CRT_CHECK(bad == 0, "child %d found its filters wrong %d times", (int)h, bad);
			CRT_CHECK(fails(SYS_getppid, EPERM) && fails(SYS_getpgrp, EACCES) && fails(SYS_uname, 0),
				  "the parent's filters are not as set up");
			CRT_CHECK(filters_of(root) == 2 && filters_of(h) == 2, "Seccomp_filters: parent %d, child %d; want 2, 2",
				  filters_of(root), filters_of(h));
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(1);
	}
}
