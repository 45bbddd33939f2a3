/*
 * tree: a small process tree.
 *
 *   root (this process, answers verify)
 *   ├── A        plain child, same session and group as root
 *   │   └── G    grandchild
 *   ├── S        its own session (setsid)
 *   ├── P        its own process group (setpgid)
 *   ├── Z        exits with status 7 at once; root leaves it a zombie
 *   └── T        stopped with SIGSTOP
 *
 * All of them increment their slot in one MAP_SHARED anonymous page, and
 * each running child checks on every round that its parent is still its
 * parent (and exits if not, so nothing outlives a killed root).
 *
 * Verify checks every PID recorded in the page against what fork returned,
 * parent links, sessions and groups, that each running member's counter
 * moves and the stopped one's does not, that T is in state T, and that Z
 * is a zombie with exit status 7 (waitid with WNOWAIT, so it stays one).
 * On SIGUSR2 root reaps Z for real (checking 7), kills the rest and exits.
 */
#include "crt.h"

#include <sys/mman.h>
#include <sys/wait.h>

enum { ROOT, A, G, S, P, Z, T, NMEMB };
static const char *names[NMEMB] = { "root", "A", "G", "S", "P", "Z", "T" };

struct shared {
	volatile pid_t pid[NMEMB];
	volatile uint64_t count[NMEMB];
};

static struct shared *sh;
static pid_t forked[NMEMB];

static void member_loop(int me, pid_t parent)
{
	sh->pid[me] = getpid();
	for (;;) {
		if (getppid() != parent)
			_exit(0);
		__atomic_add_fetch(&sh->count[me], 1, __ATOMIC_SEQ_CST);
		crt_sleep_ms(2);
	}
}

static pid_t spawn(int me, void (*setup)(void))
{
	pid_t parent = getpid();
	pid_t pid = fork();

	if (pid < 0)
		crt_die("fork %s", names[me]);
	if (pid == 0) {
		/* Children do not answer verify requests. */
		signal(SIGUSR1, SIG_IGN);
		signal(SIGUSR2, SIG_IGN);
		if (setup)
			setup();
		member_loop(me, parent);
	}
	return pid;
}

static void setup_session(void)
{
	if (setsid() < 0)
		_exit(3);
}

static void setup_group(void)
{
	if (setpgid(0, 0))
		_exit(3);
}

static void setup_a(void)
{
	/* A forks the grandchild, then counts like the others. */
	forked[G] = spawn(G, NULL);
}

static char proc_state(pid_t pid, pid_t *ppid)
{
	char path[64], buf[512], *p;
	FILE *f;
	char st = '?';

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return '?';
	if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')))
		sscanf(p + 2, "%c %d", &st, ppid);
	fclose(f);
	return st;
}

static void verify(int final)
{
	uint64_t before[NMEMB];
	int64_t end = crt_now() + 3000000000LL;
	int running[] = { A, G, S, P };
	pid_t ppid = -1;
	siginfo_t si;
	int moved;
	char st;

	for (int i = 0; i < NMEMB; i++)
		before[i] = sh->count[i];
	for (int i = A; i < NMEMB; i++) {
		if (i == Z || i == G)
			continue;
		CRT_CHECK(sh->pid[i] == forked[i], "%s: pid %d in the shared page, fork gave %d", names[i],
			  (int)sh->pid[i], (int)forked[i]);
	}
	CRT_CHECK(sh->pid[G] > 0 && proc_state(sh->pid[G], &ppid) != '?' && ppid == forked[A],
		  "G (pid %d): parent %d, want A %d", (int)sh->pid[G], (int)ppid, (int)forked[A]);
	for (int i = A; i < NMEMB; i++) {
		if (i == G || i == Z)
			continue;
		ppid = -1;
		st = proc_state(forked[i], &ppid);
		CRT_CHECK(ppid == getpid(), "%s (pid %d): parent %d, want %d", names[i], (int)forked[i], (int)ppid,
			  (int)getpid());
		if (i == T)
			CRT_CHECK(st == 'T', "T (pid %d) is in state %c, want stopped", (int)forked[T], st);
	}
	CRT_CHECK(getsid(forked[A]) == getsid(0) && getpgid(forked[A]) == getpgid(0),
		  "A: session %d group %d, want root's %d %d", getsid(forked[A]), getpgid(forked[A]), getsid(0),
		  getpgid(0));
	CRT_CHECK(getsid(forked[S]) == forked[S] && getpgid(forked[S]) == forked[S], "S: session %d group %d, want %d",
		  getsid(forked[S]), getpgid(forked[S]), (int)forked[S]);
	CRT_CHECK(getsid(forked[P]) == getsid(0) && getpgid(forked[P]) == forked[P],
		  "P: session %d group %d, want %d and %d", getsid(forked[P]), getpgid(forked[P]), getsid(0),
		  (int)forked[P]);
	CRT_CHECK(getsid(sh->pid[G]) == getsid(0) && getpgid(sh->pid[G]) == getpgid(0), "G: session %d group %d",
		  getsid(sh->pid[G]), getpgid(sh->pid[G]));

	memset(&si, 0, sizeof(si));
	CRT_CHECK(waitid(P_PID, forked[Z], &si, WEXITED | WNOHANG | (final ? 0 : WNOWAIT)) == 0 &&
			  si.si_pid == forked[Z] && si.si_code == CLD_EXITED && si.si_status == 7,
		  "Z (pid %d): waitid gives pid %d code %d status %d, want an exit with 7", (int)forked[Z],
		  (int)si.si_pid, si.si_code, si.si_status);

	do {
		moved = 1;
		for (size_t i = 0; i < sizeof(running) / sizeof(running[0]); i++)
			moved &= sh->count[running[i]] > before[running[i]];
		if (!moved)
			crt_sleep_ms(5);
	} while (!moved && crt_now() < end);
	for (size_t i = 0; i < sizeof(running) / sizeof(running[0]); i++)
		CRT_CHECK(sh->count[running[i]] > before[running[i]], "%s stuck at %" PRIu64, names[running[i]],
			  before[running[i]]);
	CRT_CHECK(sh->count[T] == before[T], "T ran while stopped (%" PRIu64 " -> %" PRIu64 ")", before[T],
		  sh->count[T]);
}

int main(void)
{
	int status;

	crt_init();
	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		crt_die("mmap shared");
	sh->pid[ROOT] = getpid();

	forked[A] = spawn(A, setup_a);
	forked[S] = spawn(S, setup_session);
	forked[P] = spawn(P, setup_group);
	forked[Z] = fork();
	if (forked[Z] < 0)
		crt_die("fork Z");
	if (forked[Z] == 0)
		_exit(7);
	{
		siginfo_t si;

		/* Be sure Z is a zombie before we say ready; WNOWAIT keeps it one. */
		if (waitid(P_PID, forked[Z], &si, WEXITED | WNOWAIT))
			crt_die("wait for Z to exit");
	}
	forked[T] = spawn(T, NULL);

	/* Wait until everyone runs, then stop T and see it stopped. */
	for (int64_t end = crt_now() + 5000000000LL; crt_now() < end;) {
		int all = 1;

		for (int i = A; i < NMEMB; i++)
			if (i != Z)
				all &= sh->pid[i] != 0 && sh->count[i] > 0;
		if (all)
			break;
		crt_sleep_ms(1);
	}
	if (kill(forked[T], SIGSTOP) || waitpid(forked[T], &status, WUNTRACED) != forked[T] || !WIFSTOPPED(status))
		crt_die("stop T");
	crt_ready();

	for (;;) {
		if (crt_pending()) {
			int final = crt_usr2;

			verify(final);
			if (final) {
				for (int i = A; i < NMEMB; i++)
					if (i != Z)
						kill(i == G ? sh->pid[G] : forked[i], SIGKILL);
			}
			crt_report();
		}
		crt_tick();
		sh->count[ROOT]++;
		crt_sleep_ms(2);
	}
	return 0;
}
