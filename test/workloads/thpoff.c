/*
 * thpoff: THP disabled (PR_SET_THP_DISABLE) in a process with a 4 MiB
 * anonymous region, 2 MiB aligned and MADV_HUGEPAGE, filled with a
 * pattern: with THP allowed (enabled "madvise" or "always") the kernel
 * could back it with huge pages, the flag says it must not. The region's
 * address is written to the file "region" for the test, which checks
 * smaps' AnonHugePages of it after the restore (the flag must be set
 * before the restore fills the pages).
 *
 * Verify checks the pattern and that THP is still disabled.
 */
#include "crt.h"

#include <sys/mman.h>
#include <sys/prctl.h>

#define HUGE (2UL << 20)
#define LEN (2 * HUGE)

int main(void)
{
	unsigned char *m, *r;
	char buf[64];

	crt_init();
	if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0))
		crt_die("PR_SET_THP_DISABLE");
	m = mmap(NULL, LEN + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		crt_die("mmap region");
	r = (unsigned char *)(((unsigned long)m + HUGE - 1) & ~(HUGE - 1));
	if (madvise(r, LEN, MADV_HUGEPAGE))
		crt_die("madvise MADV_HUGEPAGE");
	crt_fill(r, LEN, 7);
	snprintf(buf, sizeof(buf), "%p\n", (void *)r);
	if (crt_write_atomic("region", buf))
		crt_die("write region");
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			CRT_CHECK_PATTERN(r, LEN, 7, "THP-disabled region");
			CRT_CHECK(prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1, "THP disable %d, want 1",
				  prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(1);
	}
	return 0;
}
