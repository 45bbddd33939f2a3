/* seccomp_notif: a filter whose getpgrp goes to a user-space listener
 * (SECCOMP_RET_USER_NOTIF). The root installs it and keeps the listener
 * fd, as a supervisor would; its child C inherits the filter, closes its
 * copy of the fd and counts in shared memory. C's pid is in the file
 * "child". A dump of C must be refused and leave it running: verify
 * checks that C's count moved on. */
#include "crt.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>

int main(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getpgrp, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };
	volatile uint64_t *count;
	pid_t root = getpid(), c;
	char buf[32];
	int listener;

	crt_init();
	count = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (count == MAP_FAILED)
		crt_die("mmap");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		crt_die("no_new_privs");
	listener = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
	if (listener < 0)
		crt_die("seccomp filter with a listener");
	c = fork();
	if (c < 0)
		crt_die("fork");
	if (c == 0) {
		close(listener);
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) || kill(root, 0))
			_exit(3);
		for (;;) {
			(*count)++;
			crt_sleep_ms(1);
		}
	}
	snprintf(buf, sizeof(buf), "%d\n", (int)c);
	if (crt_write_atomic("child", buf))
		crt_die("write child");
	while (*count == 0)
		crt_sleep_ms(1);
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			uint64_t before = *count;
			int64_t end = crt_now() + 3000000000LL;

			while (*count == before && crt_now() < end)
				crt_sleep_ms(1);
			CRT_CHECK(*count != before, "child %d stopped counting at %" PRIu64, (int)c, before);
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(1);
	}
}
