package dump

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/test/testenv"
)

// A process with argv[1] extra threads and argv[2] children, each child
// with 1 MiB of written memory, everything blocked in pause().
const fanSrc = `
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
static void *idle(void *a) { (void)a; for (;;) pause(); return NULL; }
int main(int argc, char **argv) {
	int nt = atoi(argv[1]), np = atoi(argv[2]);
	char *m = malloc(1 << 20);
	memset(m, 1, 1 << 20);
	for (int i = 0; i < nt; i++) { pthread_t th; pthread_create(&th, NULL, idle, NULL); }
	for (int i = 0; i < np; i++)
		if (fork() == 0) { prctl(PR_SET_PDEATHSIG, SIGKILL); memset(m, 2, 1 << 20); for (;;) pause(); }
	sleep(1);
	FILE *f = fopen(getenv("READY"), "w");
	fprintf(f, "ready\n");
	fclose(f);
	for (;;) pause();
}
`

// BenchmarkDumpFanout dumps (leaving it running) a single process, a
// process with 50 threads and a tree of 50 processes, and prints each
// time and its ratio to the single process measured in the same run
// (issue 4; images on /dev/shm so that the disk does not dominate).
func BenchmarkDumpFanout(b *testing.B) {
	testenv.RequireRoot(b, "ptrace of another user's process")
	base, err := os.MkdirTemp("/dev/shm", "crtools-bench-")
	if err != nil {
		base = b.TempDir()
	}
	defer os.RemoveAll(base)
	cases := []struct {
		name   string
		th, np int
	}{{"single", 0, 0}, {"threads50", 49, 0}, {"tree50", 0, 49}}
	single := time.Duration(0)
	for _, c := range cases {
		pid := startDetached(b, fanSrc, fmt.Sprint(c.th), fmt.Sprint(c.np))
		b.Run(c.name, func(b *testing.B) {
			var best time.Duration = 1 << 62
			for i := 0; i < b.N; i++ {
				dir := filepath.Join(base, fmt.Sprint(c.name, i))
				os.Mkdir(dir, 0o700)
				start := time.Now()
				tm, err := dumpPid(b, pid, dir, engine.FinishLeaveRunning)
				if err != nil {
					b.Fatal(err)
				}
				d := time.Since(start)
				if d < best {
					best = d
				}
				b.Logf("%s: dump %v (freeze %v collect %v write %v)", c.name, d, tm.Freeze, tm.Collect, tm.Write)
				os.RemoveAll(dir)
			}
			if c.name == "single" {
				single = best
			} else if single > 0 {
				b.Logf("%s: best %v, %.1fx the single process (%v)", c.name, best, float64(best)/float64(single), single)
			}
		})
	}
}
