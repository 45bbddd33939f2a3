/*
 * files: descriptors of the kinds Engine I restores, each at a fixed
 * number: a regular file open read-write at an offset, an O_APPEND log, a
 * directory, /dev/null, /dev/zero, /dev/urandom, with and without
 * close-on-exec; stdin is /dev/null and stdout/stderr are files (the
 * harness sets them up). The read-write file is owned (F_SETOWN) by the
 * process, with a signal of its own (F_SETSIG); the directory is owned by
 * the process group.
 *
 * Verify checks numbers, access modes and flags, close-on-exec, offsets,
 * identities (inode, device numbers), contents, and that the descriptors
 * still work: the O_APPEND file appends, the directory resolves names,
 * the devices read and write, and stdout's offset moved exactly by what
 * the workload wrote, and the owners and the signal.
 */
#include "crt.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

enum { FD_RW = 10, FD_APPEND = 11, FD_DIR = 12, FD_NULL = 13, FD_ZERO = 14, FD_URANDOM = 15 };

#define RW_LEN 10000
#define RW_OFF 4321
#define OWNER_SIG (SIGRTMIN + 3)

static ino_t rw_ino, dir_ino, out_ino;
static off_t out_pos;

static void place(int fd, int want, int cloexec)
{
	if (fd < 0)
		crt_die("open for fd %d", want);
	if (dup3(fd, want, cloexec ? O_CLOEXEC : 0) != want)
		crt_die("dup3 to %d", want);
	close(fd);
}

static ino_t ino_of(int fd)
{
	struct stat st;

	if (fstat(fd, &st))
		return 0;
	return st.st_ino;
}

static void check_fd(int fd, int accmode, int flags, int cloexec, const char *what)
{
	int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);

	CRT_CHECK(fl >= 0, "%s (fd %d) is not open", what, fd);
	if (fl < 0)
		return;
	CRT_CHECK((fl & O_ACCMODE) == accmode, "%s: access mode %d, want %d", what, fl & O_ACCMODE, accmode);
	CRT_CHECK((fl & (O_APPEND | O_NONBLOCK | O_DIRECTORY)) == flags, "%s: flags %#x, want %#x", what,
		  fl & (O_APPEND | O_NONBLOCK | O_DIRECTORY), flags);
	CRT_CHECK(!!(fdfl & FD_CLOEXEC) == cloexec, "%s: close-on-exec %d, want %d", what, !!(fdfl & FD_CLOEXEC),
		  cloexec);
}

static void check_owner(int fd, int type, pid_t pid, const char *what)
{
	struct f_owner_ex o = { 0 };

	CRT_CHECK(fcntl(fd, F_GETOWN_EX, &o) == 0 && o.type == type && o.pid == pid,
		  "%s: owner type %d pid %d, want type %d pid %d", what, o.type, o.pid, type, (int)pid);
}

static void check_dev(int fd, int maj, int min, const char *what)
{
	struct stat st;

	CRT_CHECK(fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == (unsigned)maj &&
			  minor(st.st_rdev) == (unsigned)min,
		  "%s: not the character device %d:%d", what, maj, min);
}

static void verify(void)
{
	unsigned char buf[RW_LEN];
	struct stat st;
	off_t before;
	char line[64];
	int n, fd;

	check_fd(FD_RW, O_RDWR, 0, 1, "read-write file");
	CRT_CHECK(ino_of(FD_RW) == rw_ino, "read-write file: another inode");
	CRT_CHECK(lseek(FD_RW, 0, SEEK_CUR) == RW_OFF, "read-write file: offset %ld, want %d",
		  (long)lseek(FD_RW, 0, SEEK_CUR), RW_OFF);
	CRT_CHECK(pread(FD_RW, buf, RW_LEN, 0) == RW_LEN, "read-write file: short read");
	CRT_CHECK_PATTERN(buf, RW_LEN, 30, "read-write file");
	check_owner(FD_RW, F_OWNER_PID, getpid(), "read-write file");
	CRT_CHECK(fcntl(FD_RW, F_GETSIG) == OWNER_SIG, "read-write file: owner signal %d, want %d",
		  fcntl(FD_RW, F_GETSIG), OWNER_SIG);

	check_fd(FD_APPEND, O_WRONLY, O_APPEND, 0, "append file");
	fstat(FD_APPEND, &st);
	before = st.st_size;
	CRT_CHECK(write(FD_APPEND, "v\n", 2) == 2, "append file: write");
	fstat(FD_APPEND, &st);
	CRT_CHECK(st.st_size == before + 2 && lseek(FD_APPEND, 0, SEEK_CUR) == st.st_size,
		  "append file: size %ld -> %ld, offset %ld: not appending", (long)before, (long)st.st_size,
		  (long)lseek(FD_APPEND, 0, SEEK_CUR));

	check_fd(FD_DIR, O_RDONLY, O_DIRECTORY, 1, "directory");
	CRT_CHECK(ino_of(FD_DIR) == dir_ino, "directory: another inode");
	fd = openat(FD_DIR, "rw.txt", O_RDONLY | O_CLOEXEC);
	CRT_CHECK(fd >= 0 && ino_of(fd) == rw_ino, "directory: openat rw.txt gives another file");
	if (fd >= 0)
		close(fd);
	check_owner(FD_DIR, F_OWNER_PGRP, getpgrp(), "directory");

	check_fd(FD_NULL, O_WRONLY, 0, 0, "/dev/null");
	check_dev(FD_NULL, 1, 3, "/dev/null");
	CRT_CHECK(write(FD_NULL, buf, 100) == 100, "/dev/null: write");
	check_fd(FD_ZERO, O_RDONLY, 0, 1, "/dev/zero");
	check_dev(FD_ZERO, 1, 5, "/dev/zero");
	memset(buf, 1, 64);
	CRT_CHECK(read(FD_ZERO, buf, 64) == 64 && buf[0] == 0 && buf[63] == 0, "/dev/zero: read");
	check_fd(FD_URANDOM, O_RDONLY, O_NONBLOCK, 0, "/dev/urandom");
	check_dev(FD_URANDOM, 1, 9, "/dev/urandom");
	CRT_CHECK(read(FD_URANDOM, buf, 16) == 16, "/dev/urandom: read");

	check_fd(0, O_RDONLY, 0, 0, "stdin");
	check_dev(0, 1, 3, "stdin (/dev/null)");
	CRT_CHECK(ino_of(1) == out_ino, "stdout: another file");
	CRT_CHECK(lseek(1, 0, SEEK_CUR) == out_pos, "stdout: offset %ld, want %ld", (long)lseek(1, 0, SEEK_CUR),
		  (long)out_pos);
	n = snprintf(line, sizeof(line), "verify at %" PRIu64 "\n", (uint64_t)crt_progress);
	CRT_CHECK(write(1, line, n) == n, "stdout: write");
	out_pos += n;
}

int main(void)
{
	unsigned char buf[RW_LEN];
	struct stat st;
	int fd;

	crt_init();
	crt_fill(buf, RW_LEN, 30);
	fd = open("rw.txt", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, buf, RW_LEN) != RW_LEN || lseek(fd, RW_OFF, SEEK_SET) != RW_OFF)
		crt_die("rw.txt");
	place(fd, FD_RW, 1);
	rw_ino = ino_of(FD_RW);
	place(open("append.log", O_WRONLY | O_CREAT | O_APPEND, 0644), FD_APPEND, 0);
	place(open(".", O_RDONLY | O_DIRECTORY), FD_DIR, 1);
	dir_ino = ino_of(FD_DIR);
	{
		struct f_owner_ex grp = { .type = F_OWNER_PGRP, .pid = getpgrp() };

		if (fcntl(FD_RW, F_SETOWN, getpid()) || fcntl(FD_RW, F_SETSIG, OWNER_SIG) ||
		    fcntl(FD_DIR, F_SETOWN_EX, &grp))
			crt_die("set the owners");
	}
	place(open("/dev/null", O_WRONLY), FD_NULL, 0);
	place(open("/dev/zero", O_RDONLY), FD_ZERO, 1);
	place(open("/dev/urandom", O_RDONLY | O_NONBLOCK), FD_URANDOM, 0);

	if (fstat(1, &st) || !S_ISREG(st.st_mode))
		crt_die("stdout is not a regular file");
	out_ino = st.st_ino;
	if (write(1, "files workload\n", 15) != 15)
		crt_die("write stdout");
	out_pos = lseek(1, 0, SEEK_CUR);
	crt_ready();

	for (;;) {
		if (crt_pending()) {
			verify();
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(2);
	}
	return 0;
}
