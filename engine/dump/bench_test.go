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

const bigMemSrc = `
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
	size_t len = (size_t)atol(argv[1]) << 20;
	unsigned char *p = mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) return 1;
	for (size_t i = 0; i < len; i += 4096)
		memset(p + i, (int)(i >> 12), 4096);
	FILE *f = fopen(getenv("READY"), "w");
	fprintf(f, "ready\n");
	fclose(f);
	for (;;) pause();
}
`

// memcpyTime measures one copy of n bytes between two written buffers.
func memcpyTime(n int) time.Duration {
	src := make([]byte, n)
	dst := make([]byte, n)
	for i := 0; i < n; i += 4096 {
		src[i], dst[i] = 1, 1
	}
	best := time.Duration(1 << 62)
	for i := 0; i < 3; i++ {
		start := time.Now()
		copy(dst, src)
		if d := time.Since(start); d < best {
			best = d
		}
	}
	return best
}

// BenchmarkDump1GiB dumps a process holding 1 GiB of written anonymous
// memory and reports the time, the throughput, the image size and the
// ratio to a 1 GiB memcpy measured in the same run, with the time split
// into freeze, collect (including the page scan), copy (process_vm_readv)
// and write (everything in WriteImages, of which sync is the fsync).
//
// Two targets: "tmpfs" writes the images to /dev/shm, which measures the
// engine; "disk" writes them under the test's temporary directory, which
// adds the disk (the images are fsynced, so a disk slower than the copy
// bounds the dump).
func BenchmarkDump1GiB(b *testing.B) {
	testenv.RequireRoot(b, "ptrace of another user's process")
	const mib = 1024
	pid := startDetached(b, bigMemSrc, fmt.Sprint(mib))
	b.Run("tmpfs", func(b *testing.B) {
		if _, err := os.Stat("/dev/shm"); err != nil {
			testenv.SkipOrFail(b, "no /dev/shm to write the images to")
		}
		base, err := os.MkdirTemp("/dev/shm", "crtools-bench-")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(base)
		benchDump(b, pid, mib, base)
	})
	b.Run("disk", func(b *testing.B) { benchDump(b, pid, mib, b.TempDir()) })
}

func benchDump(b *testing.B, pid, mib int, base string) {
	mc := memcpyTime(mib << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dir := filepath.Join(base, fmt.Sprint(i))
		if err := os.Mkdir(dir, 0o700); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		tm, err := dumpPid(b, pid, dir, engine.FinishLeaveRunning)
		if err != nil {
			b.Fatal(err)
		}
		total := time.Since(start)
		size := dirSize(dir)
		b.Logf("dump %v (%.2f GB/s), image %.1f MiB, memcpy %v, ratio %.1fx; freeze %v collect %v copy %v write %v (sync %v)",
			total, float64(tm.Pages)/total.Seconds()/1e9, float64(size)/(1<<20), mc, float64(total)/float64(mc),
			tm.Freeze, tm.Collect, tm.Copy, tm.Write, tm.Sync)
		b.ReportMetric(float64(total)/float64(mc), "x-memcpy")
		b.ReportMetric(float64(tm.Pages)/total.Seconds()/1e9, "GB/s")
		os.RemoveAll(dir)
	}
}

func dirSize(dir string) int64 {
	var n int64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}
