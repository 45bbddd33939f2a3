/*
 * bigmem MIB: writes MIB MiB of private anonymous memory (every page), then
 * reports ready (CRT_READY gets its pid) and sleeps. Used by the restore
 * benchmark; verify is by pattern on SIGUSR1 (CRT_RESULT gets PASS/FAIL).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t check;
static void on_usr1(int sig) { (void)sig; check = 1; }

static void put(const char *path, const char *s)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		exit(2);
	fputs(s, f);
	fclose(f);
	rename(tmp, path);
}

int main(int argc, char **argv)
{
	size_t len = (size_t)(argc > 1 ? atol(argv[1]) : 1024) << 20;
	unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char buf[64];

	if (p == MAP_FAILED)
		return 2;
	for (size_t i = 0; i < len; i += 8)
		*(unsigned long *)(p + i) = i * 0x9e3779b97f4a7c15UL;
	signal(SIGUSR1, on_usr1);
	snprintf(buf, sizeof(buf), "%d", getpid());
	if (getenv("CRT_READY"))
		put(getenv("CRT_READY"), buf);
	for (;;) {
		pause();
		if (check && getenv("CRT_RESULT")) {
			size_t bad = len;
			check = 0;
			for (size_t i = 0; i < len; i += 8)
				if (*(unsigned long *)(p + i) != i * 0x9e3779b97f4a7c15UL) {
					bad = i;
					break;
				}
			if (bad == len)
				put(getenv("CRT_RESULT"), "PASS\n");
			else {
				snprintf(buf, sizeof(buf), "FAIL at %zu\n", bad);
				put(getenv("CRT_RESULT"), buf);
			}
		}
	}
}
