package pageserver

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/crtools/crtools/engine/image"
)

const benchBytes = 1 << 30

// memcpyTime is the time of one 1 GiB copy between buffers that are
// already faulted in: the baseline the page server is compared with.
func memcpyTime() time.Duration {
	src := make([]byte, benchBytes)
	dst := make([]byte, benchBytes)
	for i := 0; i < len(src); i += image.PageSize {
		src[i] = byte(i >> 12)
		dst[i] = 1
	}
	best := time.Duration(1 << 62)
	for range 3 {
		start := time.Now()
		copy(dst, src)
		best = min(best, time.Since(start))
	}
	return best
}

// BenchmarkLoopback1GiB sends 1 GiB of pages in 8 MiB runs (the dump
// engine's batch size) to a page server on 127.0.0.1 and waits until it
// has stored them, into a tmpfs directory (the transport) and into a
// directory on disk (with the fsync a real session does). It reports GB/s
// and the time as a multiple of a 1 GiB memcpy measured in the same run.
//
//	go test -run XXX -bench Loopback1GiB -benchtime 3x ./engine/pageserver/
func BenchmarkLoopback1GiB(b *testing.B) {
	mc := memcpyTime()
	b.Logf("memcpy 1 GiB: %v (%.2f GB/s)", mc, benchBytes/mc.Seconds()/1e9)
	for _, where := range []string{"tmpfs", "disk"} {
		b.Run(where, func(b *testing.B) {
			const run = 8 << 20
			buf := make([]byte, run)
			for i := range buf {
				buf[i] = byte(i * 7)
			}
			b.SetBytes(benchBytes)
			var total time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dir := b.TempDir()
				if where == "tmpfs" {
					dir = memDir(b)
				}
				opts := ServerOptions{ImagesDir: dir, Address: "127.0.0.1", Log: zerolog.Nop()}
				srv, err := Listen(opts)
				if err != nil {
					b.Fatal(err)
				}
				ch := make(chan error, 1)
				go func() { _, err := srv.Serve(context.Background()); ch <- err }()
				b.StartTimer()
				start := time.Now()
				c, err := Dial(context.Background(), srv.Addr().String(), zerolog.Nop())
				if err != nil {
					b.Fatal(err)
				}
				s, err := c.CreatePages(image.Pagemap, 1)
				if err != nil {
					b.Fatal(err)
				}
				for off := uint64(0); off < benchBytes; off += run {
					if err := s.AddRun(0x7f0000000000+off, buf, run/image.PageSize); err != nil {
						b.Fatal(err)
					}
				}
				s.Close()
				if err := c.Close(); err != nil {
					b.Fatal(err)
				}
				if err := <-ch; err != nil {
					b.Fatal(err)
				}
				el := time.Since(start)
				total += el
				b.StopTimer()
				srv.Close()
			}
			per := total / time.Duration(b.N)
			gbs := benchBytes / per.Seconds() / 1e9
			b.ReportMetric(gbs, "GB/s")
			b.ReportMetric(per.Seconds()/mc.Seconds(), "x_memcpy")
			b.Logf("%s: 1 GiB in %v: %.2f GB/s, %.1f× a memcpy (%v)", where, per, gbs, per.Seconds()/mc.Seconds(), mc)
		})
	}
}
