/*
 * shelljob_ctty: a pseudo-terminal pair of the tree that is the
 * controlling terminal of a session of the tree, with a foreground job.
 * The root holds the master (fd 40). Its child S starts a session and opens
 * the slave without O_NOCTTY, so it becomes S's controlling terminal; S's
 * child G leads its own process group, which S makes the terminal's
 * foreground (tcsetpgrp), as a shell does for a job.
 *
 * Verify (in the root): the master reports S's session and G's group
 * (TIOCGSID, TIOCGPGRP), /proc says the same for S (tty_nr is the slave,
 * tpgid G), and a ^C typed on the master interrupts G (its SIGINT count in
 * a shared page goes up) and not S. When the root exits the master closes,
 * the terminal hangs up and S and G get SIGHUP, as on a real terminal;
 * should a copy of the master outlive the root (then no hangup comes), S
 * and G also die with their parents (PR_SET_PDEATHSIG), so that no run
 * leaves them behind.
 */
#define _GNU_SOURCE
#include "../../workloads/crt.h"

#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <termios.h>

struct shared {
	volatile int s_ints, g_ints, g_pid, s_ready, g_ready;
};

static struct shared *sh;

static void on_int_s(int sig) { (void)sig; sh->s_ints++; }
static void on_int_g(int sig) { (void)sig; sh->g_ints++; }

static void stat_of(int pid, int *sid, int *tty, int *tpgid)
{
	char path[64], buf[512], *p;
	FILE *f;
	int pgrp, ppid;
	char st;

	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f || !fgets(buf, sizeof buf, f))
		crt_die("read %s", path);
	fclose(f);
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%c %d %d %d %d %d", &st, &ppid, &pgrp, sid, tty, tpgid) != 6)
		crt_die("parse %s", path);
}

int main(void)
{
	struct stat sst;
	int m, s_pid;
	char name[64];

	crt_init();
	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		crt_die("mmap");
	m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) || unlockpt(m) || dup3(m, 40, 0) != 40)
		crt_die("posix_openpt");
	close(m);
	snprintf(name, sizeof name, "%s", ptsname(40));
	if (stat(name, &sst))
		crt_die("stat %s", name);

	s_pid = fork();
	if (s_pid == 0) { /* S: session leader with the slave as its terminal */
		int s, g;

		close(40);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		signal(SIGINT, on_int_s);
		if (setsid() < 0)
			crt_die("setsid");
		s = open(name, O_RDWR); /* no O_NOCTTY: becomes the controlling terminal */
		if (s < 0)
			crt_die("open %s", name);
		g = fork();
		if (g == 0) { /* G: the foreground job */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			signal(SIGINT, on_int_g);
			setpgid(0, 0);
			sh->g_ready = 1; /* its own handler is in place */
			for (;;)
				pause();
		}
		setpgid(g, g);
		signal(SIGTTOU, SIG_IGN);
		if (tcsetpgrp(s, g))
			crt_die("tcsetpgrp");
		while (!sh->g_ready)
			usleep(1000);
		sh->g_pid = g;
		sh->s_ready = 1;
		for (;;)
			pause();
	}
	fcntl(40, F_SETFL, O_RDWR | O_NONBLOCK);
	while (!sh->s_ready)
		crt_sleep_ms(1);
	crt_ready();

	for (;;) {
		if (crt_pending()) {
			int sid = -1, pgrp = -1, ssid, tty, tpgid, before = sh->g_ints;
			char buf[256];

			CRT_CHECK(ioctl(40, TIOCGSID, &sid) == 0 && sid == s_pid, "TIOCGSID on the master: %d (errno %d), want session %d", sid, errno, s_pid);
			CRT_CHECK(ioctl(40, TIOCGPGRP, &pgrp) == 0 && pgrp == sh->g_pid, "TIOCGPGRP on the master: %d, want the job %d", pgrp, sh->g_pid);
			stat_of(s_pid, &ssid, &tty, &tpgid);
			/* The restored pair may have another number: compare with
			 * the slave of the master we hold now. */
			if (stat(ptsname(40), &sst))
				crt_die("stat slave");
			CRT_CHECK(ssid == s_pid && (dev_t)tty == sst.st_rdev && tpgid == sh->g_pid,
				  "S: session %d tty_nr %#x tpgid %d, want %d %#lx %d", ssid, tty, tpgid, s_pid, (unsigned long)sst.st_rdev, sh->g_pid);
			/* G was born into the session after S got its terminal:
			 * it has the same controlling terminal. */
			stat_of(sh->g_pid, &ssid, &tty, &tpgid);
			CRT_CHECK(ssid == s_pid && (dev_t)tty == sst.st_rdev, "G: session %d tty_nr %#x, want %d %#lx", ssid, tty, s_pid, (unsigned long)sst.st_rdev);
			if (write(40, "\003", 1) != 1)
				crt_die("type ^C");
			for (int i = 0; i < 2000 && sh->g_ints == before; i++)
				crt_sleep_ms(1);
			CRT_CHECK(sh->g_ints == before + 1, "^C: the foreground job got %d SIGINTs, want 1", sh->g_ints - before);
			CRT_CHECK(sh->s_ints == 0, "^C reached the session leader (%d times): it is not in the foreground", sh->s_ints);
			while (read(40, buf, sizeof buf) > 0) /* the echoed ^C */
				;
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(1);
	}
}
