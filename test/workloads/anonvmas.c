/*
 * anonvmas: adjacent private anonymous VMAs that differ in protection,
 * in pages and in madvise state, as a restore that maps neighbours with
 * one mmap (anonRun) must give back VMA by VMA: a 16-page region mapped
 * PROT_NONE and opened page range by page range with mprotect (as glibc
 * makes thread stacks and malloc arenas), some written, some made
 * read-only after the write, one MADV_DONTDUMP; and a 4-page region
 * mapped writable (between guard pages) with a page made PROT_NONE and
 * one read-only. Whether a
 * VMA is accounted ("ac" in smaps' VmFlags) depends on that history. The
 * regions' addresses go to the files "region_a" and "region_b" for the test, which compares
 * their smaps before the dump and after the restore.
 *
 * Verify checks the written pages' patterns.
 */
#include "crt.h"

#include <sys/mman.h>

#define PG 4096UL

static void prot(unsigned char *p, size_t lo, size_t hi, int pr)
{
	if (mprotect(p + lo * PG, (hi - lo) * PG, pr))
		crt_die("mprotect pages %zu-%zu", lo, hi);
}

int main(void)
{
	unsigned char *a, *b;
	char buf[96];

	crt_init();
	a = mmap(NULL, 16 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	/* b between two guard pages: merged with a neighbour that has pages
	 * it would have them too (see below). */
	b = mmap(NULL, 6 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED || b == MAP_FAILED)
		crt_die("mmap");
	b += PG;
	if (mmap(b, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != b)
		crt_die("mmap b");
	prot(a, 1, 4, PROT_READ | PROT_WRITE);
	crt_fill(a + 1 * PG, 3 * PG, 11);
	prot(a, 3, 4, PROT_READ); /* written, then read-only */
	prot(a, 5, 8, PROT_READ | PROT_WRITE);
	crt_fill(a + 5 * PG, 3 * PG, 12);
	prot(a, 9, 12, PROT_READ | PROT_WRITE); /* never written */
	prot(a, 12, 13, PROT_READ);
	prot(a, 13, 14, PROT_READ | PROT_WRITE);
	crt_fill(a + 13 * PG, PG, 13);
	if (madvise(a + 13 * PG, PG, MADV_DONTDUMP))
		crt_die("madvise MADV_DONTDUMP");
	prot(a, 14, 16, PROT_READ | PROT_EXEC);
	/*
	 * Its middle loses write before any page of b is written: a VMA
	 * with pages (an anon_vma) would keep its accounting when it does,
	 * which the images cannot tell from a VMA made PROT_NONE before.
	 */
	prot(b, 1, 2, PROT_NONE);
	crt_fill(b, PG, 14);
	crt_fill(b + 2 * PG, PG, 15);
	prot(b, 2, 3, PROT_READ);
	snprintf(buf, sizeof(buf), "%p\n", (void *)a);
	if (crt_write_atomic("region_a", buf))
		crt_die("write region_a");
	snprintf(buf, sizeof(buf), "%p\n", (void *)b);
	if (crt_write_atomic("region_b", buf))
		crt_die("write region_b");
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			CRT_CHECK_PATTERN(a + 1 * PG, 3 * PG, 11, "pages 1-3 of a");
			CRT_CHECK_PATTERN(a + 5 * PG, 3 * PG, 12, "pages 5-7 of a");
			CRT_CHECK_PATTERN(a + 13 * PG, PG, 13, "page 13 of a");
			CRT_CHECK_PATTERN(b, PG, 14, "page 0 of b");
			CRT_CHECK_PATTERN(b + 2 * PG, PG, 15, "page 2 of b");
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(1);
	}
	return 0;
}
