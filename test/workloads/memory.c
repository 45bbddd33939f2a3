/*
 * memory: one of every kind of mapping the engine saves.
 *
 *   private anonymous, shared anonymous, a private file mapping with
 *   copied-on-write pages, a shared file mapping (kept coherent with the
 *   file), a memfd mapping, a PROT_NONE region holding data, an empty
 *   PROT_NONE guard, a read-only region, a big stack frame and brk growth.
 *
 * Verify checks every pattern, the protections in /proc/self/maps, that
 * the private file mapping's unmodified pages still match the file and the
 * file itself was not changed, and that the shared file mapping and the
 * file still see the same bytes.
 */
#include "crt.h"

#include <sys/mman.h>
#include <sys/stat.h>

#define PG 4096
#define ANON_LEN (32 * PG)
#define SHANON_LEN (16 * PG)
#define PRIVF_LEN (8 * PG)
#define SHF_LEN (4 * PG)
#define MEMFD_LEN (4 * PG)
#define NONE_LEN (4 * PG)
#define RO_LEN (4 * PG)
#define BRK_LEN (256 * 1024)
#define STACK_LEN (512 * 1024)

static unsigned char *anon, *shanon, *privf, *shf, *memfdm, *nonedata, *noneguard, *ro, *brkp;
static int shf_fd, privf_fd;

static void *map(size_t len, int prot, int flags, int fd)
{
	void *p = mmap(NULL, len, prot, flags, fd, 0);

	if (p == MAP_FAILED)
		crt_die("mmap %zu bytes", len);
	return p;
}

static int make_file(const char *name, size_t len, uint64_t seed)
{
	unsigned char *buf = malloc(len);
	int fd = open(name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0 || !buf)
		crt_die("create %s", name);
	crt_fill(buf, len, seed);
	if (write(fd, buf, len) != (ssize_t)len)
		crt_die("write %s", name);
	free(buf);
	return fd;
}

/* perms_of returns the permission field of the mapping starting at p. */
static const char *perms_of(void *p)
{
	static char perms[8];
	char line[512];
	FILE *f = fopen("/proc/self/maps", "re");

	strcpy(perms, "none");
	if (!f)
		return perms;
	while (fgets(line, sizeof(line), f)) {
		unsigned long start;
		char pr[8];

		if (sscanf(line, "%lx-%*x %7s", &start, pr) == 2 && start == (unsigned long)p) {
			strcpy(perms, pr);
			break;
		}
	}
	fclose(f);
	return perms;
}

static void check_file(int fd, size_t len, uint64_t seed, const char *what)
{
	unsigned char *buf = malloc(len);

	CRT_CHECK(buf && pread(fd, buf, len, 0) == (ssize_t)len, "%s: short read", what);
	if (buf)
		CRT_CHECK_PATTERN(buf, len, seed, what);
	free(buf);
}

static void verify(unsigned char *stack, uint64_t loops)
{
	unsigned char page[PG];
	uint64_t v;

	CRT_CHECK_PATTERN(anon, ANON_LEN, 10, "private anonymous");
	CRT_CHECK(!strcmp(perms_of(anon), "rw-p"), "private anonymous perms %s", perms_of(anon));
	CRT_CHECK_PATTERN(shanon, SHANON_LEN, 11, "shared anonymous");
	CRT_CHECK(!strcmp(perms_of(shanon), "rw-s"), "shared anonymous perms %s", perms_of(shanon));

	/* Private file mapping: pages 2 and 5 were written (COW), the rest
	 * still shows the file, and the file did not change. */
	for (int i = 0; i < PRIVF_LEN / PG; i++) {
		if (i == 2 || i == 5)
			CRT_CHECK_PATTERN(privf + i * PG, PG, 13 + i, "private file mapping, written page");
		else
			CRT_CHECK(crt_find_bad(privf + i * PG, PG, 12 + i * PG) < 0,
				  "private file mapping, page %d differs from the file", i);
	}
	CRT_CHECK(!strcmp(perms_of(privf), "rw-p"), "private file mapping perms %s", perms_of(privf));
	check_file(privf_fd, PRIVF_LEN, 12, "file under the private mapping");

	/* Shared file mapping: the mapping and the file agree, including
	 * the counter the loop keeps storing through the mapping. */
	CRT_CHECK_PATTERN(shf + 8, SHF_LEN - 8, 14 + 8, "shared file mapping");
	CRT_CHECK(pread(shf_fd, page, PG, 0) == PG, "read shared file");
	memcpy(&v, page, 8);
	CRT_CHECK(v == loops, "shared file holds counter %" PRIu64 ", loop is at %" PRIu64, v, loops);
	CRT_CHECK(!memcmp(page, shf, PG), "shared file mapping and file differ");
	CRT_CHECK(!strcmp(perms_of(shf), "rw-s"), "shared file mapping perms %s", perms_of(shf));

	CRT_CHECK_PATTERN(memfdm, MEMFD_LEN, 15, "memfd mapping");
	CRT_CHECK(!strcmp(perms_of(memfdm), "rw-s"), "memfd mapping perms %s", perms_of(memfdm));

	CRT_CHECK(!strcmp(perms_of(nonedata), "---p"), "PROT_NONE data perms %s", perms_of(nonedata));
	CRT_CHECK(mprotect(nonedata, NONE_LEN, PROT_READ) == 0, "mprotect PROT_NONE data readable");
	CRT_CHECK_PATTERN(nonedata, NONE_LEN, 16, "PROT_NONE data");
	CRT_CHECK(mprotect(nonedata, NONE_LEN, PROT_NONE) == 0, "mprotect PROT_NONE data back");
	CRT_CHECK(!strcmp(perms_of(noneguard), "---p"), "PROT_NONE guard perms %s", perms_of(noneguard));

	CRT_CHECK_PATTERN(ro, RO_LEN, 17, "read-only region");
	CRT_CHECK(!strcmp(perms_of(ro), "r--p"), "read-only perms %s", perms_of(ro));

	CRT_CHECK_PATTERN(stack, STACK_LEN, 18, "big stack frame");
	CRT_CHECK(sbrk(0) == brkp + BRK_LEN, "brk is %p, want %p", sbrk(0), (void *)(brkp + BRK_LEN));
	CRT_CHECK_PATTERN(brkp, BRK_LEN, 19, "brk area");
}

static void run(void)
{
	unsigned char stack[STACK_LEN];
	uint64_t loops = 0;

	crt_fill(stack, STACK_LEN, 18);
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			verify(stack, loops);
			crt_report();
		}
		loops++;
		memcpy(shf, &loops, 8);
		crt_tick();
		crt_sleep_ms(1);
	}
}

int main(void)
{
	int fd;

	crt_init();
	anon = map(ANON_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	crt_fill(anon, ANON_LEN, 10);
	shanon = map(SHANON_LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1);
	crt_fill(shanon, SHANON_LEN, 11);

	privf_fd = make_file("private.bin", PRIVF_LEN, 12);
	privf = map(PRIVF_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE, privf_fd);
	crt_fill(privf + 2 * PG, PG, 13 + 2);
	crt_fill(privf + 5 * PG, PG, 13 + 5);

	shf_fd = make_file("shared.bin", SHF_LEN, 14);
	shf = map(SHF_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, shf_fd);
	memset(shf, 0, 8);

	fd = memfd_create("crt-memfd", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, MEMFD_LEN))
		crt_die("memfd");
	memfdm = map(MEMFD_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd);
	close(fd); /* the mapping alone keeps the memfd */
	crt_fill(memfdm, MEMFD_LEN, 15);

	nonedata = map(NONE_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	crt_fill(nonedata, NONE_LEN, 16);
	if (mprotect(nonedata, NONE_LEN, PROT_NONE))
		crt_die("mprotect none");
	noneguard = map(NONE_LEN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1);

	ro = map(RO_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	crt_fill(ro, RO_LEN, 17);
	if (mprotect(ro, RO_LEN, PROT_READ))
		crt_die("mprotect ro");

	brkp = sbrk(BRK_LEN);
	if (brkp == (void *)-1)
		crt_die("sbrk");
	crt_fill(brkp, BRK_LEN, 19);

	run();
	return 0;
}
