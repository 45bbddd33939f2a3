/*
 * ghostmap: a program whose executable, shared library and a MAP_SHARED
 * data file are all deleted while it runs (as after a package upgrade).
 * argv[1] is the library to dlopen (a copy the test deletes, like the copy
 * of this program it runs); "shared.dat" (8 KiB) in the working directory
 * is mapped MAP_SHARED read-write and held open as fd 60, then deleted by
 * the test too, once ready.
 *
 * The main loop calls ghost_fn of the library (its text runs from the
 * deleted file). Verify checks that /proc/self/exe and /proc/self/maps
 * name the three files "(deleted)", that fd 60 has no link left, that the
 * library still computes and counts its calls (its private data), and
 * that the mapping and the fd are one file: its contents are what was
 * last written, a word written through the mapping reads back through
 * the fd and one written through the fd shows in the mapping.
 */
#define _GNU_SOURCE
#include "../../workloads/crt.h"

#include <dlfcn.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define FD_SHARED 60
#define SIZE 8192

static unsigned long (*fn)(unsigned long), (*count)(void);
static unsigned char *map;
static unsigned char want[SIZE];
static char exe[4096], lib[4096], shared[4096];

/*
 * ghost_name: is link the deleted file path, "PATH (deleted)"? With
 * GHOSTMAP_REPLACED set (the test put new files at the old names before
 * the restore) the restored file has a hidden name next to it instead:
 * "DIR/.BASE.crtools-ghost-XXXX (deleted)".
 */
static int ghost_name(const char *link, const char *path)
{
	char want[4200], prefix[4200];
	const char *base = strrchr(path, '/') + 1;
	size_t n = strlen(link), d = sizeof " (deleted)" - 1;

	snprintf(want, sizeof want, "%s (deleted)", path);
	if (!strcmp(link, want))
		return 1;
	if (!getenv("GHOSTMAP_REPLACED") || n < d || strcmp(link + n - d, " (deleted)"))
		return 0;
	snprintf(prefix, sizeof prefix, "%.*s.%s.crtools-ghost-", (int)(base - path), path, base);
	return !strncmp(link, prefix, strlen(prefix));
}

static int maps_has(const char *path)
{
	char line[8192], *name;
	int found = 0;
	FILE *f = fopen("/proc/self/maps", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, "\n")] = 0;
		if ((name = strchr(line, '/')) && ghost_name(name, path))
			found = 1;
	}
	fclose(f);
	return found;
}

int main(int argc, char **argv)
{
	unsigned long i = 0, calls = 1000, gen = 0, v;
	char link[4200];
	struct stat st;
	ssize_t n;
	void *h;
	int fd;

	crt_init();
	if (argc != 2 || !realpath(argv[1], lib) || readlink("/proc/self/exe", exe, sizeof exe - 1) < 0 ||
	    !getcwd(shared, sizeof shared - 16))
		crt_die("usage: ghostmap LIBRARY");
	strcat(shared, "/shared.dat");
	h = dlopen(lib, RTLD_NOW);
	if (!h || !(fn = dlsym(h, "ghost_fn")) || !(count = dlsym(h, "ghost_count")))
		crt_die("dlopen %s: %s", lib, dlerror());
	crt_fill(want, SIZE, 7);
	fd = open("shared.dat", O_RDWR | O_CREAT | O_TRUNC, 0640);
	if (fd < 0 || write(fd, want, SIZE) != SIZE || dup3(fd, FD_SHARED, 0) != FD_SHARED)
		crt_die("shared.dat");
	close(fd);
	map = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, FD_SHARED, 0);
	if (map == MAP_FAILED)
		crt_die("mmap shared.dat");
	crt_ready();
	for (;;) {
		if (crt_pending()) {
			n = readlink("/proc/self/exe", link, sizeof link - 1);
			link[n > 0 ? n : 0] = 0;
			CRT_CHECK(n > 0 && ghost_name(link, exe), "exe links to %s, want %s (deleted)", link, exe);
			CRT_CHECK(maps_has(exe), "maps do not show %s (deleted)", exe);
			CRT_CHECK(maps_has(lib), "maps do not show %s (deleted)", lib);
			CRT_CHECK(maps_has(shared), "maps do not show %s (deleted)", shared);
			CRT_CHECK(fstat(FD_SHARED, &st) == 0 && st.st_nlink == 0 && st.st_size == SIZE, "fd %d: nlink %lu size %lld",
				  FD_SHARED, (unsigned long)st.st_nlink, (long long)st.st_size);
			v = fn(i);
			calls++;
			CRT_CHECK(v == i * 3 + 7, "ghost_fn(%lu) = %lu", i, v);
			CRT_CHECK(count() == calls, "library counted %lu calls, want %lu", count(), calls);
			CRT_CHECK(!memcmp(map, want, SIZE), "shared mapping lost its contents");
			/* Through the mapping, read back through the fd. */
			gen++;
			memcpy(want + 100, &gen, sizeof gen);
			memcpy(map + 100, &gen, sizeof gen);
			CRT_CHECK(pread(FD_SHARED, &v, sizeof v, 100) == sizeof v && v == gen, "fd reads %lu after a write of %lu through the mapping", v, gen);
			/* Through the fd, seen in the mapping. */
			gen++;
			memcpy(want + 5000, &gen, sizeof gen);
			CRT_CHECK(pwrite(FD_SHARED, &gen, sizeof gen, 5000) == sizeof gen, "pwrite: %s", strerror(errno));
			memcpy(&v, map + 5000, sizeof v);
			CRT_CHECK(v == gen, "mapping shows %lu after a write of %lu through the fd", v, gen);
			crt_report();
		}
		v = fn(i);
		calls++;
		CRT_CHECK(v == i * 3 + 7, "ghost_fn(%lu) = %lu", i, v);
		i++;
		crt_tick();
		crt_sleep_ms(1);
	}
}
