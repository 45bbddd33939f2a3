/*
 * memfd.c - one memfd, open as a descriptor and mapped MAP_SHARED, in a
 * parent and its child (inherited: one object, one open file description),
 * with contents, F_SEAL_GROW|F_SEAL_SHRINK, a second open file description
 * of its own offset, a distinct name, and a private mapping of it with one
 * page copied-on-write (its own) and one not (the memfd's).
 *
 * Verify checks, in the parent: the name (fd link and both tasks' maps),
 * the size, the seals (and that they hold: ftruncate fails), the contents
 * written before the ready (through the mapping and through the fd), the
 * offsets of both descriptions; then writes a new token through the fd and
 * has the child see it in its mapping, has the child write one through its
 * mapping and one with write(2) on the shared description, and sees both
 * (mapping, pread, and its own offset moved by the child's write).
 */
#include "crt.h"
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define NAME "crt-memfd.test"
#define SIZE (3 * 4096)
#define SEALS (F_SEAL_GROW | F_SEAL_SHRINK)
#define TOKOFF 8192 /* where the tokens go, in page 2 */

struct ctl {
	volatile uint64_t req, ack, val, seen;
	volatile uint64_t count;
};

static int M, M2, W;
static const unsigned char *wmap; /* a memfd sealed against writes, mapped read-only shared */
static unsigned char *map, *priv;
static struct ctl *ctl;

static unsigned char pattern(size_t i) { return (unsigned char)(i * 7 + 3); }

static void child(pid_t parent)
{
	signal(SIGUSR1, SIG_IGN);
	signal(SIGUSR2, SIG_IGN);
	for (;;) {
		uint64_t r = ctl->req;

		if (getppid() != parent)
			_exit(0);
		if (r && ctl->ack != r) {
			if (r % 3 == 1) { /* read the token from the mapping */
				ctl->seen = *(volatile uint64_t *)(map + TOKOFF);
			} else if (r % 3 == 2) { /* write a token through the mapping */
				*(volatile uint64_t *)(map + TOKOFF + 8) = ctl->val;
			} else { /* write one byte with write(2): moves the shared offset */
				char c = 'w';

				if (write(M, &c, 1) != 1)
					_exit(3);
			}
			ctl->ack = r;
		}
		ctl->count++;
		crt_sleep_ms(1);
	}
}

static int ask(uint64_t r)
{
	int64_t end = crt_now() + 3000000000LL;

	ctl->req = r;
	while (ctl->ack != r && crt_now() < end)
		crt_sleep_ms(1);
	return ctl->ack == r;
}

static int maps_has_memfd(pid_t pid, unsigned long addr)
{
	char path[64], line[512], want[64];
	FILE *f;
	int ok = 0;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	snprintf(want, sizeof(want), "%lx-", addr);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, want, strlen(want)) && strstr(line, "/memfd:" NAME))
			ok = 1;
	fclose(f);
	return ok;
}

int main(void)
{
	pid_t parent = getpid(), c;
	uint64_t req = 0, tok;
	off_t pos = 5000, pos2 = 100;
	size_t i;

	crt_init();
	M = memfd_create(NAME, MFD_ALLOW_SEALING);
	if (M < 0 || ftruncate(M, SIZE))
		crt_die("memfd");
	/* Pages 1 and 2 hold a pattern, written through the fd. */
	for (i = 4096; i < SIZE; i++) {
		unsigned char b = pattern(i);

		if (pwrite(M, &b, 1, i) != 1)
			crt_die("pwrite");
	}
	map = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, M, 0);
	if (map == MAP_FAILED)
		crt_die("mmap");
	ctl = (struct ctl *)map; /* page 0: the control block */
	/* A private mapping too: page 1 copied-on-write, page 2 not. */
	priv = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, M, 0);
	if (priv == MAP_FAILED)
		crt_die("mmap private");
	priv[4097] = 0xAA;
	memset(map + TOKOFF, 0, 16);
	if (fcntl(M, F_ADD_SEALS, SEALS))
		crt_die("seal");
	if (lseek(M, pos, SEEK_SET) != pos)
		crt_die("lseek");
	{
		char p[64];

		snprintf(p, sizeof(p), "/proc/self/fd/%d", M);
		M2 = open(p, O_RDONLY | O_CLOEXEC); /* a second open file description */
		if (M2 < 0 || lseek(M2, pos2, SEEK_SET) != pos2)
			crt_die("reopen memfd");
	}
	W = memfd_create("crt-sealed", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	if (W < 0 || pwrite(W, "sealed!", 7, 0) != 7)
		crt_die("memfd crt-sealed");
	if (fcntl(W, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SEAL))
		crt_die("seal crt-sealed");
	wmap = mmap(NULL, 4096, PROT_READ, MAP_SHARED, W, 0);
	if (wmap == MAP_FAILED)
		crt_die("mmap crt-sealed");
	c = fork();
	if (c < 0)
		crt_die("fork");
	if (c == 0)
		child(parent);
	while (!ctl->count)
		crt_sleep_ms(1);
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			char link[128], p[64];
			struct stat st;
			ssize_t n;
			uint64_t got, before = ctl->count;
			int bad = -1;

			snprintf(p, sizeof(p), "/proc/self/fd/%d", M);
			n = readlink(p, link, sizeof(link) - 1);
			link[n > 0 ? n : 0] = 0;
			CRT_CHECK(!strcmp(link, "/memfd:" NAME " (deleted)"), "fd %d links to %s", M, link);
			CRT_CHECK(maps_has_memfd(getpid(), (unsigned long)map), "own maps lack /memfd:" NAME " at %p", map);
			CRT_CHECK(maps_has_memfd(c, (unsigned long)map), "child's maps lack /memfd:" NAME " at %p", map);
			CRT_CHECK(maps_has_memfd(getpid(), (unsigned long)priv), "own maps lack the private /memfd:" NAME " at %p", priv);
			CRT_CHECK(priv[4097] == 0xAA && priv[4098] == pattern(4098) && map[4097] == pattern(4097),
				  "private copy of page 1 has %#x %#x, shared %#x", priv[4097], priv[4098], map[4097]);
			CRT_CHECK(fstat(M, &st) == 0 && st.st_size == SIZE, "size %ld, want %d", (long)st.st_size, SIZE);
			CRT_CHECK(fcntl(M, F_GET_SEALS) == SEALS, "seals %#x, want %#x", fcntl(M, F_GET_SEALS), SEALS);
			CRT_CHECK(ftruncate(M, 2 * SIZE) < 0 && errno == EPERM, "ftruncate grew a memfd sealed against growing");
			CRT_CHECK(ftruncate(M, 4096) < 0 && errno == EPERM, "ftruncate shrank a memfd sealed against shrinking");
			CRT_CHECK(fcntl(W, F_GET_SEALS) == (F_SEAL_WRITE | F_SEAL_SEAL), "crt-sealed has seals %#x",
				  fcntl(W, F_GET_SEALS));
			CRT_CHECK(pwrite(W, "x", 1, 0) < 0 && errno == EPERM, "wrote to a memfd sealed against writes");
			CRT_CHECK(!memcmp(wmap, "sealed!", 7), "crt-sealed mapping has %.7s", (const char *)wmap);
			CRT_CHECK(fcntl(W, F_GETFD) == FD_CLOEXEC, "crt-sealed lost close-on-exec");
			for (i = 4096; i < TOKOFF && bad < 0; i++)
				if (map[i] != pattern(i))
					bad = (int)i;
			CRT_CHECK(bad < 0, "mapping byte %d is %d, want %d", bad, bad < 0 ? 0 : map[bad], pattern(bad));
			{
				unsigned char b = 0;

				CRT_CHECK(pread(M2, &b, 1, 5000) == 1 && b == pattern(5000), "pread 5000 gives %d", b);
			}
			CRT_CHECK(lseek(M, 0, SEEK_CUR) == pos, "offset of fd %d is %ld, want %ld", M,
				  (long)lseek(M, 0, SEEK_CUR), (long)pos);
			CRT_CHECK(lseek(M2, 0, SEEK_CUR) == pos2, "offset of fd %d is %ld, want %ld", M2,
				  (long)lseek(M2, 0, SEEK_CUR), (long)pos2);

			/* A token written through the fd is in the child's mapping. */
			tok = crt_now() ^ 0x5eed;
			CRT_CHECK(pwrite(M, &tok, 8, TOKOFF) == 8, "pwrite token");
			CRT_CHECK(*(volatile uint64_t *)(map + TOKOFF) == tok, "own mapping misses the token written through the fd");
			CRT_CHECK(*(volatile uint64_t *)(priv + TOKOFF) == tok,
				  "private mapping, page never copied, misses the token written through the fd");
			CRT_CHECK(ask(++req * 3 - 2) && ctl->seen == tok,
				  "child's mapping has %#" PRIx64 ", the fd wrote %#" PRIx64 ": not one memfd", ctl->seen, tok);
			/* One written by the child through its mapping is in our fd. */
			ctl->val = tok + 1;
			CRT_CHECK(ask(req * 3 - 1), "child did not write");
			got = 0;
			CRT_CHECK(pread(M2, &got, 8, TOKOFF + 8) == 8 && got == tok + 1,
				  "fd reads %#" PRIx64 " where the child's mapping wrote %#" PRIx64, got, tok + 1);
			/* write(2) by the child moves our offset: one open file. */
			CRT_CHECK(ask(req * 3), "child did not write(2)");
			pos++;
			CRT_CHECK(lseek(M, 0, SEEK_CUR) == pos, "offset %ld after the child wrote a byte, want %ld",
				  (long)lseek(M, 0, SEEK_CUR), (long)pos);
			CRT_CHECK(map[pos - 1] == 'w', "the child's byte is not in the mapping");
			map[pos - 1] = pattern(pos - 1);
			{
				int64_t end = crt_now() + 3000000000LL;

				while (ctl->count == before && crt_now() < end)
					crt_sleep_ms(1);
				CRT_CHECK(ctl->count != before, "child stuck at %" PRIu64, before);
			}
			if (crt_usr2) {
				kill(c, SIGKILL);
				waitpid(c, NULL, 0);
			}
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(2);
	}
}
