/*
 * ghostfiles: deleted files still open, bigger than the default ghost
 * limit (1 MiB): fd 50 is an O_TMPFILE file in the working directory (never
 * had a name, so --link-remap can link it back) with 2 MiB at offset 4097,
 * read-write; fd 51 a file "small.dat" of 100 bytes, unlinked, read-only
 * at offset 7.
 *
 * Verify checks that both still have no name, their sizes, offsets and
 * every byte, and that fd 50 is still writable (a byte is changed, read
 * back and put back).
 */
#define _GNU_SOURCE
#include "../../workloads/crt.h"

#include <sys/stat.h>

#define BIG (2 << 20)

static unsigned char big[BIG], small[100];

static void check(int fd, const unsigned char *want, size_t n, off_t pos, const char *what)
{
	static unsigned char buf[BIG];
	struct stat st;

	CRT_CHECK(fstat(fd, &st) == 0 && st.st_nlink == 0 && st.st_size == (off_t)n, "%s: nlink %lu size %lld, want 0 and %zu",
		  what, (unsigned long)st.st_nlink, (long long)st.st_size, n);
	CRT_CHECK(lseek(fd, 0, SEEK_CUR) == pos, "%s: offset %lld, want %lld", what, (long long)lseek(fd, 0, SEEK_CUR), (long long)pos);
	CRT_CHECK(pread(fd, buf, n, 0) == (ssize_t)n && !memcmp(buf, want, n), "%s: contents differ", what);
}

int main(void)
{
	unsigned char c;
	int fd;

	crt_init();
	crt_fill(big, BIG, 5);
	crt_fill(small, sizeof small, 6);
	fd = open(".", O_TMPFILE | O_RDWR, 0640);
	if (fd < 0 || write(fd, big, BIG) != BIG || lseek(fd, 4097, SEEK_SET) != 4097 || dup3(fd, 50, 0) != 50)
		crt_die("O_TMPFILE file");
	close(fd);
	fd = open("small.dat", O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, small, sizeof small) != sizeof small || close(fd))
		crt_die("small.dat");
	fd = open("small.dat", O_RDONLY);
	if (fd < 0 || lseek(fd, 7, SEEK_SET) != 7 || unlink("small.dat") || dup3(fd, 51, 0) != 51)
		crt_die("open small.dat");
	close(fd);
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			check(50, big, BIG, 4097, "tmpfile");
			check(51, small, sizeof small, 7, "small.dat");
			c = big[1000] ^ 0xff;
			CRT_CHECK(pwrite(50, &c, 1, 1000) == 1 && pread(50, &c, 1, 1000) == 1 && c == (big[1000] ^ 0xff), "tmpfile not writable");
			if (pwrite(50, &big[1000], 1, 1000) != 1)
				crt_die("put the byte back");
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(1);
	}
}
