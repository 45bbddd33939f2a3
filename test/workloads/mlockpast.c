/*
 * mlockpast: mlockall(MCL_CURRENT) with a file mapping that reaches past
 * the end of its file.
 *
 * The file "short" holds one patterned page; it is mapped MAP_SHARED,
 * read-only, 4 pages long. mlockall succeeds (it ignores the pages it
 * cannot fault in) and the kernel marks the whole VMA locked, smaps "lo",
 * but an mlock of that VMA alone fails with ENOMEM: the pages beyond the
 * end of the file cannot be faulted in. The mapping's address is written
 * to the file "mapped" for the test.
 *
 * Verify checks the mapped page's pattern and that the process has
 * locked memory (VmLck in /proc/self/status).
 */
#include "crt.h"

#include <fcntl.h>
#include <sys/mman.h>

#define PAGE 4096
#define MAP_LEN (4 * PAGE)

int main(void)
{
	unsigned char page[PAGE], *m;
	char buf[64];
	int fd;

	crt_init();
	crt_fill(page, PAGE, 9);
	fd = open("short", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, page, PAGE) != PAGE)
		crt_die("write short");
	m = mmap(NULL, MAP_LEN, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		crt_die("mmap short");
	close(fd);
	if (mlockall(MCL_CURRENT))
		crt_die("mlockall");
	snprintf(buf, sizeof(buf), "%p\n", (void *)m);
	if (crt_write_atomic("mapped", buf))
		crt_die("write mapped");
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			CRT_CHECK_PATTERN(m, PAGE, 9, "mapped page of short");
			CRT_CHECK(crt_vmlck_kb() >= MAP_LEN / 1024, "VmLck %ld kB, want >= %d", crt_vmlck_kb(),
				  MAP_LEN / 1024);
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(1);
	}
	return 0;
}
