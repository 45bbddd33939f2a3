/*
 * evasive: /dev/zero's device opened through a node of its own
 * ("zero.dev" in the working directory), read-write at fd 70, and the node
 * removed: the path the task used no longer exists (--evasive-devices).
 * Verify: fd 70 is still that device, reads zeros and takes writes.
 */
#define _GNU_SOURCE
#include "../../workloads/crt.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

int main(void)
{
	struct stat st;
	char buf[16];
	int fd;

	crt_init();
	if (mknod("zero.dev", S_IFCHR | 0666, makedev(1, 5)))
		crt_die("mknod");
	fd = open("zero.dev", O_RDWR);
	if (fd < 0 || dup3(fd, 70, 0) != 70 || unlink("zero.dev"))
		crt_die("open zero.dev");
	close(fd);
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			memset(buf, 1, sizeof buf);
			CRT_CHECK(fstat(70, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 5), "fd 70 is not /dev/zero's device");
			CRT_CHECK((fcntl(70, F_GETFL) & O_ACCMODE) == O_RDWR, "fd 70 not read-write");
			CRT_CHECK(read(70, buf, sizeof buf) == sizeof buf && !buf[0] && !buf[15], "fd 70 does not read zeros");
			CRT_CHECK(write(70, buf, sizeof buf) == sizeof buf, "fd 70 refuses writes");
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(1);
	}
}
