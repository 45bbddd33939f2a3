/*
 * sysvns.c - SysV IPC objects in an IPC namespace of the workload's own
 * (unshare(CLONE_NEWIPC) at start, before the fork): dumped with -n ipc.
 *
 *   - segment A (key KEY_A, 2 pages and a bit, id SHM_ID), attached by the
 *     parent and its child, who both count in it; the child echoes the
 *     parent's counter;
 *   - segment B (key KEY_B, 1 page, IPC_PRIVATE-less), never attached,
 *     holding a pattern, created by uid 1234 gid 5678 and then given to
 *     owner 4321:8765 with mode 0604;
 *   - a message queue (key KEY_Q, id MSG_ID) of 20000 bytes (more than
 *     the namespace's msgmnb: the workload raised msgmnb for the create
 *     and set it back) holding NMSG messages of different types, one
 *     empty;
 *   - a semaphore set (key KEY_S, id SEM_ID) of 4 semaphores with values.
 *
 * Verify checks every id, key, mode, owner, creator, size and content
 * (messages by MSG_COPY, which leaves them queued, in order with their
 * types), that the parent and child still share segment A, and that a
 * semop works; after SIGUSR2 it receives the messages for real, in order.
 *
 * "rmid" as argv[1]: segment A is removed (IPC_RMID) once attached: it
 * lives on while attached, with the private key and SHM_DEST, and goes
 * with its last detach (verify checks both). "outside": the parent attaches, before its unshare, a
 * segment of the IPC namespace it started in (removed at once, so that it
 * goes with the workload), which the dumped namespace does not hold (dump
 * refuses it). "forced": once everything is set up, the namespace's
 * kernel/shm_rmid_forced is 1 (a segment goes with its last detach) and
 * kernel/shmmax 4096, less than segment A's size: the restore must create
 * the objects under limits that let it and set the dumped ones after.
 * Segment B, unattached, is not checked there (verify's own attach and
 * detach would destroy it, as would its creator's exit).
 */
#include "crt.h"
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>

#define KEY_A 0x5eed0001
#define KEY_B 0x5eed0002
#define KEY_Q 0x5eed0003
#define KEY_S 0x5eed0004
#define SHM_ID (5 + 2 * 32768) /* index 5, sequence 2 */
#define MSG_ID (7 + 3 * 32768)
#define SEM_ID 3
#define SIZE_A (2 * 4096 + 10)
#define NMSG 4

struct seg {
	volatile uint64_t parent, child, echo;
};

static const struct {
	long type;
	const char *text;
} msgs[NMSG] = {
	{3, "first, of type 3"},
	{1, "second: a longer message of type one, to cross a multiple of eight"},
	{2, ""},
	{3, "fourth"},
};
static const unsigned short semvals[4] = {0, 7, 32767, 1};

static int shm_a, shm_b, msq, sem;
static struct seg *seg;
static unsigned char *b_pat;

static void set_sysctl(const char *name, long v)
{
	char p[128], s[32];
	int fd;

	snprintf(p, sizeof(p), "/proc/sys/kernel/%s", name);
	snprintf(s, sizeof(s), "%ld", v);
	fd = open(p, O_WRONLY);
	if (fd < 0 || write(fd, s, strlen(s)) != (ssize_t)strlen(s))
		crt_die("write %s", p);
	close(fd);
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

static struct {
	long mtype;
	char mtext[256];
} mbuf;

int main(int argc, char **argv)
{
	pid_t c, parent = getpid();
	int rmid = argc > 1 && !strcmp(argv[1], "rmid");
	int forced = argc > 1 && !strcmp(argv[1], "forced");
	struct msqid_ds mq;
	unsigned char *b;

	crt_init();
	if (argc > 1 && !strcmp(argv[1], "outside")) {
		int id = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);

		if (id < 0 || shmat(id, NULL, 0) == (void *)-1 || shmctl(id, IPC_RMID, NULL))
			crt_die("segment outside");
	}
	if (unshare(CLONE_NEWIPC))
		crt_die("unshare(CLONE_NEWIPC)");
	set_sysctl("shm_next_id", SHM_ID);
	shm_a = shmget(KEY_A, SIZE_A, IPC_CREAT | IPC_EXCL | 0640);
	if (shm_a != SHM_ID)
		crt_die("shmget A gave %d", shm_a);
	seg = shmat(shm_a, NULL, 0);
	if (seg == (void *)-1)
		crt_die("shmat A");
	/* B: created by 1234:5678, then owned by 4321:8765. */
	if (setegid(5678) || seteuid(1234))
		crt_die("seteuid");
	shm_b = shmget(KEY_B, 4096, IPC_CREAT | IPC_EXCL | 0604);
	if (seteuid(0) || setegid(0) || shm_b < 0)
		crt_die("shmget B as 1234");
	{
		struct shmid_ds ds;

		if (shmctl(shm_b, IPC_STAT, &ds))
			crt_die("IPC_STAT B");
		ds.shm_perm.uid = 4321;
		ds.shm_perm.gid = 8765;
		if (shmctl(shm_b, IPC_SET, &ds))
			crt_die("IPC_SET B");
	}
	b = shmat(shm_b, NULL, 0);
	if (b == (void *)-1)
		crt_die("shmat B");
	b_pat = malloc(4096);
	for (int i = 0; i < 4096; i++)
		b_pat[i] = b[i] = crt_pattern(crt_token, i);
	shmdt(b);

	set_sysctl("msg_next_id", MSG_ID);
	set_sysctl("msgmnb", 20000);
	msq = msgget(KEY_Q, IPC_CREAT | IPC_EXCL | 0600);
	set_sysctl("msgmnb", 16384);
	if (msq != MSG_ID)
		crt_die("msgget gave %d", msq);
	for (int i = 0; i < NMSG; i++) {
		mbuf.mtype = msgs[i].type;
		strcpy(mbuf.mtext, msgs[i].text);
		if (msgsnd(msq, &mbuf, strlen(msgs[i].text), IPC_NOWAIT))
			crt_die("msgsnd %d", i);
	}
	set_sysctl("sem_next_id", SEM_ID);
	sem = semget(KEY_S, 4, IPC_CREAT | IPC_EXCL | 0660);
	if (sem != SEM_ID)
		crt_die("semget gave %d", sem);
	if (semctl(sem, 0, SETALL, semvals))
		crt_die("SETALL");
	if (rmid && shmctl(shm_a, IPC_RMID, NULL))
		crt_die("IPC_RMID");

	c = fork();
	if (c < 0)
		crt_die("fork");
	if (c == 0)
		child(parent);
	if (!CRT_WAITFOR(seg->child > 0))
		crt_die("child does not run");
	if (forced) {
		set_sysctl("shm_rmid_forced", 1);
		set_sysctl("shmmax", 4096);
	}
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			struct shmid_ds ds;
			struct semid_ds sds;
			unsigned short vals[4];
			uint64_t before = seg->child, mine;
			int r;
			struct sembuf op[2] = {{1, -1, IPC_NOWAIT}, {1, 1, IPC_NOWAIT}};

			CRT_CHECK(shmctl(shm_a, IPC_STAT, &ds) == 0, "IPC_STAT of segment %d: %s", shm_a, strerror(errno));
			/* Removed (rmid), A has the private key and SHM_DEST. */
			CRT_CHECK(ds.shm_perm.__key == (rmid ? IPC_PRIVATE : KEY_A) && (ds.shm_perm.mode & 0777) == 0640 && ds.shm_segsz == SIZE_A,
				  "segment A: key %#x mode %o size %zu", ds.shm_perm.__key, ds.shm_perm.mode, (size_t)ds.shm_segsz);
			CRT_CHECK(ds.shm_nattch == 2, "segment A attached %lu times, want 2", (unsigned long)ds.shm_nattch);
			CRT_CHECK(rmid || shmget(KEY_A, 0, 0) == SHM_ID, "key A finds %d, want %d", shmget(KEY_A, 0, 0), SHM_ID);
			CRT_CHECK(!!(ds.shm_perm.mode & SHM_DEST) == rmid, "segment A: mode %o, removed %d", ds.shm_perm.mode, rmid);
			if (forced) {
				char v[32] = "";
				FILE *f = fopen("/proc/sys/kernel/shm_rmid_forced", "r");

				CRT_CHECK(f && fgets(v, sizeof(v), f) && atoi(v) == 1, "kernel/shm_rmid_forced is %s", v);
				if (f)
					fclose(f);
				f = fopen("/proc/sys/kernel/shmmax", "r");
				CRT_CHECK(f && fgets(v, sizeof(v), f) && atoi(v) == 4096, "kernel/shmmax is %s", v);
				if (f)
					fclose(f);
			} else {
				CRT_CHECK(shmget(KEY_B, 0, 0) == shm_b, "key B finds %d, want %d", shmget(KEY_B, 0, 0), shm_b);
				CRT_CHECK(shmctl(shm_b, IPC_STAT, &ds) == 0, "IPC_STAT of segment B %d: %s", shm_b, strerror(errno));
				CRT_CHECK(ds.shm_perm.uid == 4321 && ds.shm_perm.gid == 8765 && ds.shm_perm.cuid == 1234 && ds.shm_perm.cgid == 5678 &&
						  (ds.shm_perm.mode & 0777) == 0604 && ds.shm_segsz == 4096 && ds.shm_nattch == 0,
					  "segment B: owner %u:%u creator %u:%u mode %o size %zu nattch %lu", ds.shm_perm.uid, ds.shm_perm.gid,
					  ds.shm_perm.cuid, ds.shm_perm.cgid, ds.shm_perm.mode, (size_t)ds.shm_segsz, (unsigned long)ds.shm_nattch);
				b = shmat(shm_b, NULL, SHM_RDONLY);
				CRT_CHECK(b != (void *)-1, "shmat B: %s", strerror(errno));
				if (b != (void *)-1) {
					CRT_CHECK(!memcmp(b, b_pat, 4096), "segment B lost its contents");
					shmdt(b);
				}
			}
			CRT_CHECK(msgctl(msq, IPC_STAT, &mq) == 0, "IPC_STAT of queue %d: %s", msq, strerror(errno));
			CRT_CHECK(mq.msg_perm.__key == KEY_Q && (mq.msg_perm.mode & 0777) == 0600 && mq.msg_qnum == NMSG && mq.msg_qbytes == 20000,
				  "queue: key %#x mode %o qnum %lu qbytes %lu", mq.msg_perm.__key, mq.msg_perm.mode, (unsigned long)mq.msg_qnum,
				  (unsigned long)mq.msg_qbytes);
			for (int i = 0; i < NMSG; i++) {
				ssize_t n = msgrcv(msq, &mbuf, sizeof(mbuf.mtext), i, IPC_NOWAIT | MSG_COPY);

				CRT_CHECK(n == (ssize_t)strlen(msgs[i].text) && mbuf.mtype == msgs[i].type && !memcmp(mbuf.mtext, msgs[i].text, n),
					  "message %d: %zd bytes of type %ld (%s)", i, n, mbuf.mtype, n < 0 ? strerror(errno) : "");
			}
			/* The calls first: the messages print what they read. */
			r = semctl(sem, 0, IPC_STAT, &sds);
			CRT_CHECK(r == 0 && sds.sem_perm.__key == KEY_S && sds.sem_nsems == 4 && (sds.sem_perm.mode & 0777) == 0660,
				  "semaphore set: key %#x nsems %lu mode %o", sds.sem_perm.__key, (unsigned long)sds.sem_nsems, sds.sem_perm.mode);
			r = semctl(sem, 0, GETALL, vals);
			CRT_CHECK(r == 0 && !memcmp(vals, semvals, sizeof(vals)), "semaphores %u %u %u %u", vals[0], vals[1], vals[2], vals[3]);
			CRT_CHECK(semop(sem, op, 2) == 0 && semctl(sem, 1, GETVAL) == 7, "semop: %s", strerror(errno));
			mine = ++seg->parent;
			CRT_CHECK(CRT_WAITFOR(seg->echo >= mine), "child echoes %" PRIu64 ", parent wrote %" PRIu64, seg->echo, mine);
			CRT_CHECK(CRT_WAITFOR(seg->child != before), "child's counter stuck at %" PRIu64, before);
			if (crt_usr2) {
				for (int i = 0; i < NMSG; i++) {
					ssize_t n = msgrcv(msq, &mbuf, sizeof(mbuf.mtext), 0, IPC_NOWAIT);

					CRT_CHECK(n == (ssize_t)strlen(msgs[i].text) && mbuf.mtype == msgs[i].type,
						  "received message %d: %zd bytes of type %ld", i, n, mbuf.mtype);
				}
				kill(c, SIGKILL);
				waitpid(c, NULL, 0);
				if (rmid) { /* the last detach destroys it */
					shmdt((void *)seg);
					CRT_CHECK(shmctl(shm_a, IPC_STAT, &ds) < 0 && errno == EINVAL,
						  "removed segment A outlived its last detach");
				}
			}
			crt_report();
		}
		seg->parent++;
		crt_tick();
		crt_sleep_ms(2);
	}
}
