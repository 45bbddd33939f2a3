/*
 * simple: a counter loop with a patterned private anonymous region, a
 * patterned heap block and patterned static data. Verify checks every
 * pattern and that the loop's own counter agrees with the progress count
 * (registers and stack carried over as well as memory).
 */
#include "crt.h"

#include <sys/mman.h>

#define ANON_LEN (64 * 4096)
#define HEAP_LEN (1 << 20)

static unsigned char data_pattern[8192];

int main(void)
{
	unsigned char *anon, *heap;
	uint64_t loops = 0;
	uint64_t sum = 0;

	crt_init();
	anon = mmap(NULL, ANON_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (anon == MAP_FAILED)
		crt_die("mmap");
	crt_fill(anon, ANON_LEN, 1);
	heap = malloc(HEAP_LEN);
	if (!heap)
		crt_die("malloc");
	crt_fill(heap, HEAP_LEN, 2);
	crt_fill(data_pattern, sizeof(data_pattern), 3);
	crt_ready();

	for (;;) {
		if (crt_pending()) {
			CRT_CHECK_PATTERN(anon, ANON_LEN, 1, "anonymous region");
			CRT_CHECK_PATTERN(heap, HEAP_LEN, 2, "heap block");
			CRT_CHECK_PATTERN(data_pattern, sizeof(data_pattern), 3, "static data");
			CRT_CHECK(loops == crt_progress, "loop counter %" PRIu64 " but progress %" PRIu64, loops,
				  (uint64_t)crt_progress);
			crt_report();
		}
		/* A little work that reads memory, then a short sleep. */
		for (int i = 0; i < 4096; i += 64)
			sum += anon[(loops * 4096 + i) % ANON_LEN];
		loops++;
		crt_tick();
		crt_sleep_ms(1);
	}
	return (int)sum;
}
