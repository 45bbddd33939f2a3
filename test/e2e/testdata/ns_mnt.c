/*
 * ns_mnt: "ns_mnt setup NEWROOT DATADIR" is started by the test as PID 1
 * of new pid and mount namespaces. It builds a small root under NEWROOT:
 * NEWROOT bound on itself, the host's /usr bound read-only on /usr, DATADIR
 * bound on /data, a tmpfs on /tmp, proc on /proc; pivot_roots into it,
 * writes /tmp/hello.txt (a token drawn now) and /tmp/sub/f, and execs
 * /bin/ns_mnt run TOKEN from the new root. "run" closes its inherited
 * files and counts; on SIGUSR1 it writes /data/report: "counter N", "token
 * T" (in memory), "hello H" and "sub S" (the tmpfs files now), "proc P"
 * (readlink /proc/self: its pid in the proc mount), "usr-ro E" (errno of a
 * write into /usr: 30 is EROFS). SIGTERM ends it with 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t report, stop;

static void on_usr1(int sig) { (void)sig; report = 1; }
static void on_term(int sig) { (void)sig; stop = 1; }

static void die(const char *what)
{
	perror(what);
	exit(10);
}

static void put(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, s, strlen(s)) != (ssize_t)strlen(s) || close(fd) < 0)
		die(path);
}

static void get(const char *path, char *buf, size_t n)
{
	int fd = open(path, O_RDONLY), r = -1;
	if (fd >= 0) {
		r = read(fd, buf, n - 1);
		close(fd);
	}
	buf[r > 0 ? r : 0] = 0;
	if (r <= 0)
		snprintf(buf, n, "missing");
}

static int setup(const char *root, const char *data)
{
	char p[4096], tok[64];
	struct timespec now;

	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		die("make / private");
	if (mount(root, root, NULL, MS_BIND, NULL) < 0)
		die("bind root");
	snprintf(p, sizeof(p), "%s/usr", root);
	if (mount("/usr", p, NULL, MS_BIND, NULL) < 0 || mount(NULL, p, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0)
		die("bind /usr");
	snprintf(p, sizeof(p), "%s/data", root);
	if (mount(data, p, NULL, MS_BIND, NULL) < 0)
		die("bind data");
	snprintf(p, sizeof(p), "%s/tmp", root);
	if (mount("tmpfs", p, "tmpfs", MS_NOSUID, "size=4m,mode=1777") < 0)
		die("tmpfs");
	snprintf(p, sizeof(p), "%s/proc", root);
	if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		die("proc");
	if (chdir(root) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 || umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
		die("pivot_root");
	clock_gettime(CLOCK_REALTIME, &now);
	snprintf(tok, sizeof(tok), "t%ld", (long)(now.tv_nsec ^ now.tv_sec));
	put("/tmp/hello.txt", tok);
	if (mkdir("/tmp/sub", 0750) < 0)
		die("mkdir");
	put("/tmp/sub/f", "sub-file");
	execl("/bin/ns_mnt", "ns_mnt", "run", tok, (char *)NULL);
	die("exec");
	return 1;
}

int main(int argc, char **argv)
{
	struct timespec ts = {0, 5 * 1000 * 1000};
	unsigned long counter = 0;
	char token[64];
	int fd;

	if (argc == 4 && strcmp(argv[1], "setup") == 0)
		return setup(argv[2], argv[3]);
	if (argc != 3 || strcmp(argv[1], "run") != 0)
		return 1;
	snprintf(token, sizeof(token), "%s", argv[2]);
	for (fd = 0; fd < 3; fd++)
		close(fd);
	signal(SIGUSR1, on_usr1);
	signal(SIGTERM, on_term);
	put("/data/ready", "1");
	while (!stop) {
		counter++;
		if (report) {
			char buf[1024], hello[128], sub[128], proc[64] = "none";
			ssize_t n;
			int e = 0;

			report = 0;
			get("/tmp/hello.txt", hello, sizeof(hello));
			get("/tmp/sub/f", sub, sizeof(sub));
			n = readlink("/proc/self", proc, sizeof(proc) - 1);
			proc[n > 0 ? n : 4] = 0;
			fd = open("/usr/crtools-rofs-probe", O_WRONLY | O_CREAT, 0600);
			if (fd >= 0) {
				close(fd);
				unlink("/usr/crtools-rofs-probe");
			} else
				e = errno;
			snprintf(buf, sizeof(buf), "counter %lu\ntoken %s\nhello %s\nsub %s\nproc %s\nusr-ro %d\n", counter, token, hello, sub, proc, e);
			put("/data/report.tmp", buf);
			if (rename("/data/report.tmp", "/data/report") < 0)
				die("rename");
		}
		nanosleep(&ts, NULL);
	}
	return 0;
}
