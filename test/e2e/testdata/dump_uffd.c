/* dump_uffd: a workload holding a userfaultfd, a kind of file crtools
 * cannot dump; a dump must fail, naming the fd, and leave it running. */
#include "crt.h"

#include <linux/userfaultfd.h>

int main(void)
{
	int fd;
	FILE *f;

	crt_init();
	fd = syscall(SYS_userfaultfd, O_CLOEXEC);
	if (fd < 0)
		crt_die("userfaultfd");
	f = fopen("fd", "w");
	fprintf(f, "%d\n", fd);
	fclose(f);
	crt_ready();
	for (;;) {
		if (crt_pending())
			crt_report();
		crt_tick();
		crt_sleep_ms(1);
	}
}
