/*
 * sysvshm.c - one SysV shared memory segment (3 pages and a bit: the
 * attachment is rounded up to 4 pages) attached by a parent and its child,
 * in the IPC namespace the workload starts in: both increment a counter
 * of their own in it, and the child copies the parent's counter into a
 * third word (so each sees the other's writes). The last page of the
 * attachment is made read-only (mprotect: the attachment is two VMAs),
 * and the parent attaches the segment a second time, SHM_RDONLY, at
 * another address.
 *
 * Verify checks, in the parent: the segment id, its key and size
 * (IPC_STAT), 6 attachments (nattch: the kernel counts VMAs); both tasks' maps show the segment
 * (inode = shmid) at the addresses and with the protections of the start;
 * the child's counter moves, the child echoes the parent's counter, the
 * read-only attachment sees what the other writes. The shmid goes to the
 * file named by argv[1] (for the test, which removes the segment).
 *
 * "rmid" as argv[2]: the segment is removed (IPC_RMID) once attached, so
 * that it lives only as long as the tree (dump refuses it).
 */
#include "crt.h"
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/wait.h>

#define SEGSZ (3 * 4096 + 100)
#define ATTSZ (4 * 4096)

struct seg {
	volatile uint64_t parent, child, echo;
	volatile uint64_t tick;
	char pattern[64];
};

static int shmid;
static struct seg *seg;
static const struct seg *ro;

/* maps_has checks that pid maps the segment at addr with perms (4 chars). */
static int maps_has(pid_t pid, unsigned long addr, const char *perms)
{
	char path[64], line[512], want[128];
	FILE *f;
	int ok = 0;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	snprintf(want, sizeof(want), "%lx-", addr);
	while (fgets(line, sizeof(line), f)) {
		char p[8];
		unsigned long long ino;
		char name[256];

		if (strncmp(line, want, strlen(want)))
			continue;
		if (sscanf(line, "%*lx-%*lx %4s %*x %*x:%*x %llu %255s", p, &ino, name) == 3 && !strcmp(p, perms) &&
		    ino == (unsigned long long)shmid && !strncmp(name, "/SYSV", 5))
			ok = 1;
	}
	fclose(f);
	return ok;
}

static void child(pid_t parent)
{
	signal(SIGUSR1, SIG_IGN);
	signal(SIGUSR2, SIG_IGN);
	for (;;) {
		if (getppid() != parent)
			_exit(0);
		seg->child++;
		seg->echo = seg->parent;
		crt_sleep_ms(1);
	}
}

int main(int argc, char **argv)
{
	pid_t c, parent = getpid();
	int rmid = argc > 2 && !strcmp(argv[2], "rmid");
	void *at, *ro_at;
	char buf[32];
	int fd;

	crt_init();
	shmid = shmget(IPC_PRIVATE, SEGSZ, IPC_CREAT | 0600);
	if (shmid < 0)
		crt_die("shmget");
	if (argc > 1) {
		fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
		snprintf(buf, sizeof(buf), "%d\n", shmid);
		if (fd < 0 || write(fd, buf, strlen(buf)) != (ssize_t)strlen(buf))
			crt_die("write %s", argv[1]);
		close(fd);
	}
	at = shmat(shmid, NULL, 0);
	if (at == (void *)-1)
		crt_die("shmat");
	seg = at;
	memset(seg, 0, sizeof(*seg));
	for (int i = 0; i < 64; i++)
		seg->pattern[i] = (char)crt_pattern(crt_token, i);
	/* The last page read-only: the attachment is two VMAs. */
	if (mprotect((char *)at + 3 * 4096, 4096, PROT_READ))
		crt_die("mprotect");
	ro_at = shmat(shmid, NULL, SHM_RDONLY);
	if (ro_at == (void *)-1)
		crt_die("shmat read-only");
	ro = ro_at;
	if (rmid && shmctl(shmid, IPC_RMID, NULL))
		crt_die("IPC_RMID");
	c = fork();
	if (c < 0)
		crt_die("fork");
	if (c == 0)
		child(parent);
	if (!CRT_WAITFOR(seg->child > 0))
		crt_die("child does not run");
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			struct shmid_ds ds;
			uint64_t before = seg->child, mine;

			CRT_CHECK(shmctl(shmid, IPC_STAT, &ds) == 0, "IPC_STAT of segment %d fails: %s", shmid, strerror(errno));
			CRT_CHECK(ds.shm_segsz == SEGSZ, "segment %d has %zu bytes, want %d", shmid, (size_t)ds.shm_segsz, SEGSZ);
			CRT_CHECK(ds.shm_perm.__key == IPC_PRIVATE || rmid, "segment key %#x", ds.shm_perm.__key);
			CRT_CHECK((ds.shm_perm.mode & 0777) == 0600, "segment mode %o", ds.shm_perm.mode);
			/* One a VMA: 3 in each task (the child inherited both attachments). */
			CRT_CHECK(ds.shm_nattch == 6, "segment attached %lu times, want 6", (unsigned long)ds.shm_nattch);
			CRT_CHECK(maps_has(getpid(), (unsigned long)at, "rw-s"), "own maps lack the segment at %p (rw-s)", at);
			CRT_CHECK(maps_has(getpid(), (unsigned long)at + 3 * 4096, "r--s"), "own maps lack the read-only page at %p",
				  (char *)at + 3 * 4096);
			CRT_CHECK(maps_has(getpid(), (unsigned long)ro_at, "r--s"), "own maps lack the read-only attachment at %p", ro_at);
			CRT_CHECK(maps_has(c, (unsigned long)at, "rw-s"), "child's maps lack the segment at %p", at);
			CRT_CHECK(maps_has(c, (unsigned long)at + 3 * 4096, "r--s"), "child's maps lack the read-only page");
			CRT_CHECK(maps_has(c, (unsigned long)ro_at, "r--s"), "child's maps lack the read-only attachment");
			for (int i = 0; i < 64; i++)
				CRT_CHECK(ro->pattern[i] == (char)crt_pattern(crt_token, i), "pattern byte %d differs", i);
			mine = ++seg->parent;
			CRT_CHECK(CRT_WAITFOR(seg->echo >= mine), "child echoes %" PRIu64 ", parent wrote %" PRIu64, seg->echo, mine);
			CRT_CHECK(CRT_WAITFOR(seg->child != before), "child's counter stuck at %" PRIu64, before);
			CRT_CHECK(ro->child == seg->child || CRT_WAITFOR(ro->child != before), "read-only attachment misses the child's counter");
			if (crt_usr2) {
				kill(c, SIGKILL);
				waitpid(c, NULL, 0);
				shmdt(at);
				shmdt(ro_at);
				shmctl(shmid, IPC_RMID, NULL);
			}
			crt_report();
		}
		seg->parent++;
		crt_tick();
		crt_sleep_ms(2);
	}
}
