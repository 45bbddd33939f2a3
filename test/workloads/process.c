/*
 * process: per-process attributes set to values that differ from the
 * defaults: lowered rlimits, umask, a working directory with a space in
 * its name, comm, personality, no_new_privs, dumpable, parent-death
 * signal, child-subreaper, and the robust futex list head
 * (glibc registers one; we check it stays where it was).
 *
 * Verify reads each of them back.
 */
#include "crt.h"

#include <linux/futex.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#define PDEATH_SIG (SIGRTMIN + 7)
#define PERSONA (PER_LINUX | ADDR_NO_RANDOMIZE | UNAME26)

struct rl {
	int res;
	const char *name;
	rlim_t cur, max;
};

static struct rl rls[] = {
	{ RLIMIT_NOFILE, "NOFILE", 200, 300 },
	{ RLIMIT_CORE, "CORE", 0, 4096 },
	{ RLIMIT_STACK, "STACK", 4 << 20, 0 /* keep */ },
	{ RLIMIT_MSGQUEUE, "MSGQUEUE", 4096, 8192 },
	{ RLIMIT_NICE, "NICE", 0, 0 },
};
#define NRLS (sizeof(rls) / sizeof(rls[0]))

static volatile sig_atomic_t pdeath_hits;
static void *robust_head;
static size_t robust_len;
static char cwd_want[4096];

static void h_pdeath(int sig)
{
	(void)sig;
	pdeath_hits++;
}

static void verify(void)
{
	char name[32], cwd[4096];
	struct rlimit r;
	void *head = NULL;
	size_t len = 0;
	int v = -1;
	mode_t m;

	for (size_t i = 0; i < NRLS; i++) {
		getrlimit(rls[i].res, &r);
		CRT_CHECK(r.rlim_cur == rls[i].cur && r.rlim_max == rls[i].max, "RLIMIT_%s is %llu/%llu, want %llu/%llu",
			  rls[i].name, (unsigned long long)r.rlim_cur, (unsigned long long)r.rlim_max,
			  (unsigned long long)rls[i].cur, (unsigned long long)rls[i].max);
	}
	m = umask(0);
	umask(m);
	CRT_CHECK(m == 027, "umask %03o, want 027", m);
	CRT_CHECK(getcwd(cwd, sizeof(cwd)) && !strcmp(cwd, cwd_want), "cwd %s, want %s", cwd, cwd_want);
	prctl(PR_GET_NAME, name, 0, 0, 0);
	CRT_CHECK(!strcmp(name, "crt proc(x)"), "comm %s, want \"crt proc(x)\"", name);
	CRT_CHECK(personality(0xffffffff) == PERSONA, "personality %#x, want %#x", personality(0xffffffff), PERSONA);
	CRT_CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1, "no_new_privs is not set");
	CRT_CHECK(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0, "dumpable %d, want 0", prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
	prctl(PR_GET_PDEATHSIG, &v, 0, 0, 0);
	CRT_CHECK(v == PDEATH_SIG, "parent-death signal %d, want %d", v, PDEATH_SIG);
	v = -1;
	prctl(PR_GET_CHILD_SUBREAPER, &v, 0, 0, 0);
	CRT_CHECK(v == 1, "child-subreaper %d, want 1", v);
	CRT_CHECK(syscall(SYS_get_robust_list, 0, &head, &len) == 0 && head == robust_head && len == robust_len,
		  "robust list %p+%zu, want %p+%zu", head, len, robust_head, robust_len);
}

int main(void)
{
	struct sigaction sa;
	struct rlimit r;

	crt_init();
	for (size_t i = 0; i < NRLS; i++) {
		if (getrlimit(rls[i].res, &r))
			crt_die("getrlimit %s", rls[i].name);
		if (rls[i].max == 0 && rls[i].res == RLIMIT_STACK)
			rls[i].max = r.rlim_max;
		/* Only lower: there is no CAP_SYS_RESOURCE to raise a hard limit. */
		if (rls[i].max > r.rlim_max)
			rls[i].max = r.rlim_max;
		if (rls[i].cur > rls[i].max)
			rls[i].cur = rls[i].max;
		r.rlim_cur = rls[i].cur;
		r.rlim_max = rls[i].max;
		if (setrlimit(rls[i].res, &r))
			crt_die("setrlimit %s", rls[i].name);
	}
	umask(027);
	if (mkdir("sub dir", 0755) || chdir("sub dir") || !getcwd(cwd_want, sizeof(cwd_want)))
		crt_die("chdir");
	if (prctl(PR_SET_NAME, "crt proc(x)", 0, 0, 0))
		crt_die("PR_SET_NAME");
	if (personality(PERSONA) < 0)
		crt_die("personality");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		crt_die("PR_SET_NO_NEW_PRIVS");
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = h_pdeath;
	sigemptyset(&sa.sa_mask);
	/* The parent may be the exited crtools after a restore: count the
	 * signal rather than die of it. */
	if (sigaction(PDEATH_SIG, &sa, NULL) || prctl(PR_SET_PDEATHSIG, PDEATH_SIG, 0, 0, 0))
		crt_die("PR_SET_PDEATHSIG");
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
		crt_die("PR_SET_CHILD_SUBREAPER");
	if (syscall(SYS_get_robust_list, 0, &robust_head, &robust_len))
		crt_die("get_robust_list");
	/* Last: with dumpable 0, /proc/self files belong to root. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0))
		crt_die("PR_SET_DUMPABLE");
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
