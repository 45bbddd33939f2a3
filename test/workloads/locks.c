/*
 * locks: holds three kinds of file locks in its working directory: a
 * flock(2) exclusive lock on "flock.dat" (fd 30), an OFD read lock on bytes
 * 10..14 of "ofd.dat" (fd 31) and a POSIX write lock from byte 100 to the
 * end of "posix.dat" (fd 32).
 *
 * Verify proves each lock is held by looking from a fresh open file
 * description (which conflicts with all three kinds): flock LOCK_NB fails
 * with EWOULDBLOCK, and F_OFD_GETLK reports the OFD lock and the POSIX lock
 * (the latter with this process's pid) with their ranges. Then it releases
 * each lock (they are its own), sees it free, and takes it again.
 */
#include "crt.h"

#include <sys/file.h>

enum { FD_FLOCK = 30, FD_OFD = 31, FD_POSIX = 32 };

static int open_at(const char *name, int want)
{
	int fd = open(name, O_RDWR | O_CREAT, 0644);

	if (fd < 0)
		crt_die("open %s", name);
	if (dup3(fd, want, 0) != want)
		crt_die("dup3 %s", name);
	close(fd);
	return want;
}

static void check_locks(void)
{
	struct flock fl;
	int fd;

	fd = open("flock.dat", O_RDWR);
	CRT_CHECK(flock(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK, "flock lock is not held");
	close(fd);

	fd = open("ofd.dat", O_RDWR);
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	fl.l_start = 0;
	fl.l_len = 0;
	CRT_CHECK(fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type == F_RDLCK && fl.l_start == 10 && fl.l_len == 5,
		  "OFD lock: type %d start %lld len %lld", fl.l_type, (long long)fl.l_start, (long long)fl.l_len);
	close(fd);

	/* Closing any descriptor of posix.dat would drop our POSIX lock:
	 * the probe stays open. */
	static int probe = -1;
	if (probe < 0)
		probe = open("posix.dat", O_RDWR);
	fd = probe;
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_RDLCK;
	fl.l_whence = SEEK_SET;
	CRT_CHECK(fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type == F_WRLCK && fl.l_start == 100 && fl.l_len == 0 &&
			  fl.l_pid == getpid(),
		  "POSIX lock: type %d start %lld len %lld pid %d", fl.l_type, (long long)fl.l_start,
		  (long long)fl.l_len, (int)fl.l_pid);
}

/* release_retake proves the restored locks belong to this process: it
 * releases each one, sees from a fresh open file description that it is
 * free, and takes it again. */
static void release_retake(void)
{
	struct flock fl;
	int fd;

	CRT_CHECK(flock(FD_FLOCK, LOCK_UN) == 0, "release flock: errno %d", errno);
	fd = open("flock.dat", O_RDWR);
	CRT_CHECK(flock(fd, LOCK_EX | LOCK_NB) == 0, "flock still held after its owner released it (errno %d)", errno);
	close(fd);
	CRT_CHECK(flock(FD_FLOCK, LOCK_EX | LOCK_NB) == 0, "take flock again: errno %d", errno);

	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_UNLCK;
	fl.l_start = 10;
	fl.l_len = 5;
	CRT_CHECK(fcntl(FD_OFD, F_OFD_SETLK, &fl) == 0, "release OFD lock: errno %d", errno);
	fd = open("ofd.dat", O_RDWR);
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	CRT_CHECK(fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type == F_UNLCK, "OFD lock still there after release: type %d", fl.l_type);
	close(fd);
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_RDLCK;
	fl.l_start = 10;
	fl.l_len = 5;
	CRT_CHECK(fcntl(FD_OFD, F_OFD_SETLK, &fl) == 0, "take OFD lock again: errno %d", errno);

	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_UNLCK;
	fl.l_start = 100;
	CRT_CHECK(fcntl(FD_POSIX, F_SETLK, &fl) == 0, "release POSIX lock: errno %d", errno);
	fd = open("posix.dat", O_RDWR);
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	CRT_CHECK(fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type == F_UNLCK, "POSIX lock still there after release: type %d", fl.l_type);
	close(fd); /* before taking it again: any close of the file drops our POSIX locks */
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_start = 100;
	CRT_CHECK(fcntl(FD_POSIX, F_SETLK, &fl) == 0, "take POSIX lock again: errno %d", errno);
}

int main(void)
{
	struct flock fl;

	crt_init();
	if (flock(open_at("flock.dat", FD_FLOCK), LOCK_EX))
		crt_die("flock");
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_RDLCK;
	fl.l_whence = SEEK_SET;
	fl.l_start = 10;
	fl.l_len = 5;
	if (fcntl(open_at("ofd.dat", FD_OFD), F_OFD_SETLK, &fl))
		crt_die("OFD lock");
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	fl.l_start = 100;
	if (fcntl(open_at("posix.dat", FD_POSIX), F_SETLK, &fl))
		crt_die("POSIX lock");
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			check_locks();
			release_retake();
			check_locks();
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(1);
	}
}
