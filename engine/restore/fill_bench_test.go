package restore

import (
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/test/testenv"
)

// BenchmarkFill1GiB measures the memory part of a restore: one puppet, a
// 1 GiB private anonymous VMA, filled from a pages file (in the page
// cache) by injected preadv. It prints GB/s and the ratio to a 1 GiB
// memcpy measured in the same run.
func BenchmarkFill1GiB(b *testing.B) {
	testenv.RequireRoot(b, "restore (clone3 with set_tid, ptrace)")
	const size = 1 << 30
	dir := b.TempDir()
	const base = 0x200000000
	pw, err := image.CreatePages(dir, image.Pagemap, 1, 1)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 64<<20)
	for i := range chunk {
		chunk[i] = byte(i * 31)
	}
	for off := 0; off < size; off += len(chunk) {
		if err := pw.AddRun(uint64(base+off), chunk, uint64(len(chunk)/pageSize)); err != nil {
			b.Fatal(err)
		}
	}
	if err := pw.Close(); err != nil {
		b.Fatal(err)
	}
	pm, err := image.ReadPagemap(dir, image.Pagemap, 1)
	if err != nil {
		b.Fatal(err)
	}
	// memcpy baseline.
	src, dst := make([]byte, size), make([]byte, size)
	for i := 0; i < size; i += pageSize {
		src[i] = 1
	}
	t0 := time.Now()
	copy(dst, src)
	memcpy := time.Since(t0)
	src, dst = nil, nil

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		pid := freePid(b)
		vma := &pb.VmaEntry{Start: u64(base), End: u64(base + size), Prot: u32(unix.PROT_READ | unix.PROT_WRITE),
			Flags: u32(unix.MAP_PRIVATE | unix.MAP_ANONYMOUS), Status: u32(vmaAreaRegular | vmaAnonPrivate)}
		task := &taskImage{pid: pid, tids: []int{pid}, mm: &pb.MmEntry{Vmas: []*pb.VmaEntry{vma}}, pagemap: pm}
		r := &restorer{opts: engine.RestoreOptions{ImagesDir: dir}, log: zerolog.Nop(),
			img: &imageSet{dir: dir, tasks: []*taskImage{task}, files: map[uint32]*pb.FileEntry{}}}
		b.StartTimer()
		start := time.Now()
		if err := r.CreateTasks(b.Context()); err != nil {
			b.Fatal(err)
		}
		p := r.procs[0].threads[0]
		err := r.tr.Do(func() error {
			if err := p.unmapPuppet(); err != nil {
				return err
			}
			if _, err := p.mapVMAs(r.img, newShmState(), task.mm.Vmas, pm); err != nil {
				return err
			}
			_, err := p.fillPages(dir, pm)
			return err
		})
		took := time.Since(start)
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(size)/took.Seconds()/1e9, "GB/s")
		b.ReportMetric(took.Seconds()/memcpy.Seconds(), "x_memcpy")
		b.Logf("fill 1 GiB: %v (memcpy %v, ratio %.2f)", took, memcpy, took.Seconds()/memcpy.Seconds())
		_ = r.Kill()
		r.Close()
		b.StartTimer()
	}
}

// freePid is shared with the tests; the benchmark needs the testing.TB form.
var _ = freePid
