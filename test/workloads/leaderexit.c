/*
 * leaderexit [self|child]: a process whose main thread called pthread_exit
 * while two other threads run on. Its leader is a zombie ('Z' in
 * /proc/PID/stat); the process is not.
 *
 *   self   (default) the workload itself: thread A answers verify
 *          requests, thread B counts (SIGUSR1/SIGUSR2 blocked). Verify
 *          checks that the leader is still a zombie and that B counted on.
 *   child  the workload's root runs a plain loop; a child it forked is such
 *          a process, its thread B counting in a shared page. The child's
 *          pid is written to the file "child". Verify checks that the child
 *          is alive, its leader still a zombie, and that B counted on. The
 *          child's threads exit when the root is gone.
 */
#include "crt.h"

#include <pthread.h>
#include <sys/mman.h>

static volatile uint64_t *counter;
static pid_t root;

/* leader_state is the state letter of pid's leader thread, or '?'. */
static char leader_state(pid_t pid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)pid, (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return '?';
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return '?';
	buf[n] = 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : '?';
}

/* counted_since waits up to 3 s for the counting thread to pass last. */
static uint64_t counted_since(uint64_t last)
{
	int64_t end = crt_now() + 3000000000LL;

	while (*counter <= last && crt_now() < end)
		crt_sleep_ms(1);
	return *counter;
}

static void block_verify_signals(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static void *counting(void *arg)
{
	(void)arg;
	block_verify_signals();
	for (;;) {
		if (getppid() != root && root)
			_exit(0);
		(*counter)++;
		crt_sleep_ms(1);
	}
	return NULL;
}

/* verifying is thread A of "self": the workload's own main loop. */
static void *verifying(void *arg)
{
	uint64_t last = 0;

	(void)arg;
	while (leader_state(getpid()) != 'Z' || !*counter)
		crt_sleep_ms(1);
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			uint64_t now = counted_since(last);

			CRT_CHECK(leader_state(getpid()) == 'Z', "leader state %c, want Z", leader_state(getpid()));
			CRT_CHECK(now > last, "counting thread stopped at %" PRIu64, now);
			last = now;
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(2);
	}
	return NULL;
}

/* exit_leader starts the counting thread (and fn, if any) and ends the main thread. */
static void exit_leader(void *(*fn)(void *))
{
	pthread_t th;

	if (pthread_create(&th, NULL, counting, NULL))
		crt_die("pthread_create");
	if (fn && pthread_create(&th, NULL, fn, NULL))
		crt_die("pthread_create");
	pthread_exit(NULL);
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "self";
	uint64_t last = 0;
	char buf[32];
	pid_t c;

	crt_init();
	counter = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (counter == MAP_FAILED)
		crt_die("mmap");
	if (strcmp(mode, "self") == 0)
		exit_leader(verifying);
	if (strcmp(mode, "child") != 0)
		crt_die("unknown mode %s", mode);
	root = getpid();
	c = fork();
	if (c < 0)
		crt_die("fork");
	if (c == 0)
		exit_leader(NULL);
	snprintf(buf, sizeof(buf), "%d\n", (int)c);
	if (crt_write_atomic("child", buf))
		crt_die("write child");
	while (leader_state(c) != 'Z' || !*counter)
		crt_sleep_ms(1);
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			uint64_t now = counted_since(last);

			CRT_CHECK(kill(c, 0) == 0, "child %d gone", (int)c);
			CRT_CHECK(leader_state(c) == 'Z', "child's leader state %c, want Z", leader_state(c));
			CRT_CHECK(now > last, "child's counting thread stopped at %" PRIu64, now);
			last = now;
			if (crt_usr2)
				kill(c, SIGKILL);
			crt_report();
		}
		crt_tick();
		crt_sleep_ms(2);
	}
}
