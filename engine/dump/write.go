package dump

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	specialfiles "github.com/crtools/crtools/engine/files"
	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/kernel"
	"github.com/crtools/crtools/engine/pagemap"
	"github.com/crtools/crtools/engine/pageserver"
)

// WriteImages writes the image files of the collected tree into dir. The
// pages files are fsynced; the small images are not (see writeImage): the
// executor's commit step fsyncs the whole directory before renaming it.
func (d *Dumper) WriteImages(ctx context.Context, dir string) error {
	start := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.state
	if s == nil || !d.frozen {
		return fmt.Errorf("write images: nothing collected")
	}
	// The small images are written while the pages are copied. Their
	// encoding (protobuf-go builds each message type's coder on first
	// use) took 6-11 ms before the copy of a 1 GiB dump could start;
	// during the copy the CPUs have time to spare, while a reader waits
	// for the pages file's lock. A failure of either stops the other.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	meta := make(chan error, 1)
	go func() {
		err := s.writeMeta(dir)
		if err != nil {
			cancel()
		}
		meta <- err
	}()
	metaWritten := sync.OnceValue(func() error { return <-meta })
	total, err := d.writePages(ctx, dir, s, metaWritten)
	if err != nil {
		cancel()
	}
	// Always wait: nothing writes into dir once we return.
	if merr := metaWritten(); merr != nil {
		return merr
	}
	if err != nil {
		return err
	}
	d.Timings.Pages = total
	d.Timings.Write = time.Since(start)
	d.log.Info().Int64("page_bytes", total).Dur("took", d.Timings.Write).Dur("copy", d.Timings.Copy).
		Dur("sync", d.Timings.Sync).Msg("images written")
	return nil
}

// writePages writes the pages of every task and shared memory object,
// into dir or to the page server, and returns how many bytes. A page
// server is told to store them only once metaWritten (which waits for the
// other images) says they are written.
// Preconditions: d.mu held.
func (d *Dumper) writePages(ctx context.Context, dir string, s *dumpState, metaWritten func() error) (int64, error) {
	ps, err := openPageServer(ctx, d.opts.PageServer, d.log)
	if err != nil {
		return 0, err
	}
	failed := true
	defer func() { closePageServer(ps, failed) }()
	var pagesID uint32
	var total int64
	for _, ts := range s.tasks {
		if ts.t.zombie {
			continue
		}
		pagesID++
		n, err := d.writeTaskPages(ctx, dir, ts, pagesID, ps)
		if err != nil {
			return 0, err
		}
		total += n
	}
	for _, obj := range s.shmemOrder {
		pagesID++
		n, err := d.writeShmemPages(dir, obj, pagesID, ps)
		if err != nil {
			return 0, err
		}
		total += n
	}
	if ps != nil {
		if err := metaWritten(); err != nil {
			return 0, err
		}
	}
	failed = false
	if err := closePageServer(ps, false); err != nil {
		return 0, err
	}
	return total, nil
}

// runID is the inventory's random run id. It only tells one dump from
// another (no secret rests on it), so math/rand's top-level generator
// serves: seeded from the kernel's random bytes at start-up, it costs no
// system call. crypto/rand would link the whole crypto tree into crtools
// (package inits every command pays for), and getrandom(2) through the
// vDSO (unix.Getrandom) maps and faults in its per-thread state pages.
func runID() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	return fmt.Sprintf("crtools-%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// writeMeta writes every image but the page contents.
func (s *dumpState) writeMeta(dir string) error {
	inv := &pb.InventoryEntry{
		ImgVersion:    proto.Uint32(2),
		FdinfoPerId:   proto.Bool(true),
		RootIds:       s.rootIDs,
		NsPerId:       proto.Bool(true),
		Lsmtype:       pb.Lsmtype_NO_LSM.Enum(),
		DumpCriuRunId: proto.String(runID()),
	}
	if err := writeImage(dir, image.Inventory, 0, inv); err != nil {
		return fmt.Errorf("write inventory: %w", err)
	}
	if err := s.ns.Write(dir); err != nil { // engine/ns
		return err
	}
	var pstree []proto.Message
	for _, ts := range s.tasks {
		pstree = append(pstree, ts.pstree)
	}
	if err := writeImage(dir, image.Pstree, 0, pstree...); err != nil {
		return fmt.Errorf("write process tree: %w", err)
	}
	for _, ts := range s.tasks {
		pid := uint64(ts.imgTid(0))
		for i, c := range ts.cores {
			tid := uint64(ts.imgTid(i))
			if err := writeImage(dir, image.Core, tid, c); err != nil {
				return fmt.Errorf("write core of thread %d: %w", tid, err)
			}
		}
		if ts.t.zombie {
			continue
		}
		if err := writeImage(dir, image.IDs, pid, ts.ids); err != nil {
			return fmt.Errorf("write ids of pid %d: %w", pid, err)
		}
		if err := writeImage(dir, image.MM, pid, ts.mm); err != nil {
			return fmt.Errorf("write memory map of pid %d: %w", pid, err)
		}
		if err := writeImage(dir, image.FS, pid, ts.fs); err != nil {
			return fmt.Errorf("write fs of pid %d: %w", pid, err)
		}
		var fds []proto.Message
		for _, f := range ts.fds {
			fds = append(fds, f)
		}
		if err := writeImage(dir, image.Fdinfo, uint64(ts.ids.GetFilesId()), fds...); err != nil {
			return fmt.Errorf("write fds of pid %d: %w", pid, err)
		}
	}
	var files []proto.Message
	for _, e := range s.files.entries {
		files = append(files, e)
	}
	for _, e := range s.special.Set().Files {
		files = append(files, e)
	}
	if err := writeImage(dir, image.Files, 0, files...); err != nil {
		return fmt.Errorf("write files: %w", err)
	}
	if err := s.writeMemfds(dir); err != nil { // memfd.go
		return err
	}
	if len(s.seccomp.entries) > 0 { // seccomp.go
		if err := writeImage(dir, image.Seccomp, 0, &pb.SeccompEntry{SeccompFilters: s.seccomp.entries}); err != nil {
			return fmt.Errorf("write seccomp filters: %w", err)
		}
	}
	if err := specialfiles.WriteImages(dir, s.special.Set()); err != nil {
		return fmt.Errorf("write images of pipes, sockets and other files: %w", err)
	}
	return nil
}

// Copy pipeline tuning: a batch is at most batchBytes from at most maxIov
// remote ranges (IOV_MAX). Up to maxReaders readers copy alternate batches
// in parallel (the copy is CPU-bound in the kernel: one reader per CPU).
// For a page server, a batch is one process_vm_readv into one of the
// reader's bufsPerReader buffers, so that a reader fills one while the
// writer drains another. Into a local pages file a reader copies a batch
// chunkBytes at a time through one small buffer of its own: a
// process_vm_readv into it, then a pwrite from it (see readBatches).
const (
	batchBytes    = 8 << 20
	chunkBytes    = 256 << 10
	maxIov        = 1024
	maxReaders    = 2
	bufsPerReader = 2
	// writebackEvery bytes of pages, writeback of the pages file starts.
	writebackEvery = 64 << 20
	// A task with at most smallCopyBytes of pages is copied through
	// smallChunkBytes of its reader's chunk (copyToFile).
	smallCopyBytes  = 1 << 20
	smallChunkBytes = 64 << 10
)

type batch struct {
	buf  []byte
	runs []pageRange
	err  error
}

// batchPlan is what one batch reads: runs are in address order and, for
// viaMem, a single range read through /proc/PID/mem.
type batchPlan struct {
	runs   []pageRange
	off    uint64 // of the batch's data in the task's pages
	bytes  uint64
	viaMem bool
}

// planBatches cuts ranges into batches of at most batchBytes and maxIov
// runs; a range the task may not read (viaMem) gets batches of its own.
func planBatches(ranges []pageRange) []batchPlan {
	var plans []batchPlan
	var cur batchPlan
	var off uint64
	flush := func() {
		if len(cur.runs) > 0 {
			cur.off = off
			off += cur.bytes
			plans = append(plans, cur)
		}
		cur = batchPlan{}
	}
	for _, r := range ranges {
		if r.viaMem != cur.viaMem {
			flush()
		}
		for r.start < r.end {
			if cur.bytes == batchBytes || len(cur.runs) == maxIov {
				flush()
			}
			n := min(r.end-r.start, batchBytes-cur.bytes)
			cur.viaMem = r.viaMem
			cur.runs = append(cur.runs, pageRange{start: r.start, end: r.start + n})
			cur.bytes += n
			r.start += n
			if r.viaMem {
				flush() // one ReadAt per batch
			}
		}
	}
	flush()
	return plans
}

// writeTaskPages copies the pages of one task into pagemap-<pid>.img and
// pages-<pagesID>.img.
func (d *Dumper) writeTaskPages(ctx context.Context, dir string, ts *taskState, pagesID uint32, ps *pageserver.Client) (int64, error) {
	pid := ts.imgTid(0)
	pw, err := createPages(ps, dir, image.Pagemap, uint64(pid), pagesID)
	if err != nil {
		return 0, fmt.Errorf("create pagemap of pid %d: %w", pid, err)
	}
	closed := false
	defer func() {
		if !closed {
			pw.Close()
		}
	}()

	plans := planBatches(ts.pages)
	nReaders := min(maxReaders, runtime.GOMAXPROCS(0), len(plans))
	// Into a local pages file the readers write their batches
	// themselves, at their place in it (copyToFile). A page server gets
	// the data in order from the writer below.
	var out *pagesOut
	var total int64
	var werr error
	if lw, ok := pw.(*image.PagesWriter); ok {
		if err := lw.Flush(); err != nil {
			return 0, fmt.Errorf("write pages of pid %d: %w", pid, err)
		}
		f := lw.PagesFile()
		out = &pagesOut{f: f, fd: int(f.Fd()), base: lw.Written(), raw: inMemory(f)}
		total, werr = d.copyToFile(ctx, ts.t.kpid(), pid, plans, nReaders, out, lw)
	} else {
		total, werr = d.sendPages(ctx, ts.t.kpid(), pid, plans, nReaders, pw)
	}
	if werr == nil && out != nil {
		// The readers wrote with pwrite: leave the file offset where the
		// data ends, as a sequential writer would.
		if _, err := out.f.Seek(out.base+total, io.SeekStart); err != nil {
			werr = fmt.Errorf("write pages of pid %d: %w", pid, err)
		}
	}
	if werr != nil {
		return 0, werr
	}
	syncStart := time.Now()
	closed = true
	if err := pw.Close(); err != nil {
		return 0, fmt.Errorf("close pages of pid %d: %w", pid, err)
	}
	d.Timings.Sync += time.Since(syncStart)
	return total, nil
}

// copyToFile copies the batches of plans into a local pages file: nReaders
// readers take alternate batches and copy each straight into its place in
// the file (copyBatch), both copies CPU-bound in the kernel and running
// in parallel; the runs are recorded in address order once all is there.
// No writer goroutine stands between them and nothing bounds how far one
// runs ahead: the data needs no ordering, only the pagemap does.
// Preconditions: d.mu held.
func (d *Dumper) copyToFile(ctx context.Context, taskPid, pid int, plans []batchPlan, nReaders int, out *pagesOut, lw *image.PagesWriter) (int64, error) {
	chunks := make([][]byte, nReaders)
	for w := range chunks {
		chunks[w] = d.getChunk()
	}
	defer func() { d.chunks = append(d.chunks, chunks...) }()
	// A task with little memory is copied through the first
	// smallChunkBytes of each chunk only: every page of a fresh chunk
	// costs a first touch here (~15 us under shadow paging), and the
	// first 256 KiB process_vm_readv of a 50-thread dump took 1.17 ms,
	// the second into the same, touched chunk 0.09 ms.
	var all uint64
	for _, p := range plans {
		all += p.bytes
	}
	use := chunkBytes
	if all <= smallCopyBytes {
		use = smallChunkBytes
	}
	var (
		failed        atomic.Bool
		mu            sync.Mutex // what follows
		first         error
		total, kicked int64
		wg            sync.WaitGroup
	)
	copyTimes := make([]time.Duration, nReaders)
	for w := range nReaders {
		wg.Go(func() {
			var mem *os.File // the task's /proc/PID/mem, opened on first use
			defer func() {
				if mem != nil {
					mem.Close()
				}
			}()
			remote := make([]unix.RemoteIovec, 0, maxIov)
			for k := w; k < len(plans) && !failed.Load(); k += nReaders {
				p := plans[k]
				err := ctx.Err()
				if err == nil {
					start := time.Now()
					err = copyBatch(taskPid, p, out, chunks[w][:use], &mem, remote)
					copyTimes[w] += time.Since(start)
				}
				mu.Lock()
				if err != nil {
					if first == nil {
						first = err
					}
					mu.Unlock()
					failed.Store(true)
					return
				}
				total += int64(p.bytes)
				if d.opts.Progress != nil {
					d.opts.Progress(total, 0)
				}
				kick := total-kicked >= writebackEvery
				if kick {
					kicked = total
				}
				mu.Unlock()
				if kick {
					// Start writeback of what is written so far, so
					// that the disk works while we copy and the final
					// fsync has little left to do (no effect on tmpfs).
					_ = unix.SyncFileRange(int(out.f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
				}
			}
		})
	}
	wg.Wait()
	// The copies overlap: the slowest reader is the copy's wall time.
	d.Timings.Copy += slices.Max(append(copyTimes, 0))
	if first != nil {
		return 0, first
	}
	for _, p := range plans {
		for _, r := range p.runs {
			if err := lw.AddRun(r.start, nil, (r.end-r.start)/pageSize); err != nil {
				return 0, fmt.Errorf("write pages of pid %d: %w", pid, err)
			}
		}
	}
	return total, nil
}

// sendPages copies the batches of plans to a page server (pw): nReaders
// readers take alternate batches, each read with one process_vm_readv
// into one of the reader's buffers, and this goroutine sends them in
// order.
// Preconditions: d.mu held.
func (d *Dumper) sendPages(ctx context.Context, taskPid, pid int, plans []batchPlan, nReaders int, pw pageserver.PageSink) (int64, error) {
	// Buffers: full-size ones are kept for the next task (a tree of
	// small tasks must not allocate 32 MiB each); a task with little
	// memory gets one buffer of its size.
	free := make([]chan []byte, nReaders)
	full := make([]chan batch, nReaders)
	for w := range nReaders {
		free[w] = make(chan []byte, bufsPerReader)
		// A reader has at most bufsPerReader batches out: it never
		// blocks sending one.
		full[w] = make(chan batch, bufsPerReader)
		if len(plans) == 1 && plans[0].bytes < batchBytes {
			free[w] <- make([]byte, max(plans[0].bytes, pageSize))
			continue
		}
		for range bufsPerReader {
			free[w] <- d.getBuf()
		}
	}
	stop := make(chan struct{})
	copyTimes := make([]time.Duration, nReaders)
	for w := range nReaders {
		go func() {
			defer close(full[w])
			copyTimes[w] = readBatches(ctx, taskPid, plans, w, nReaders, free[w], full[w], stop)
		}()
	}
	var werr error
	var total int64
	// Batch k comes from reader k%nReaders: taking them in that order
	// keeps the pagemap runs in address order.
	for k := range plans {
		w := k % nReaders
		b, ok := <-full[w]
		if !ok {
			// A reader stops early only after an error, which comes
			// first in its channel.
			werr = fmt.Errorf("copy pages of pid %d: reader %d ended early", pid, w)
			break
		}
		if b.err != nil {
			werr = b.err
		} else {
			off := 0
			for _, r := range b.runs {
				n := int(r.end - r.start)
				if err := pw.AddRun(r.start, b.buf[off:off+n], uint64(n/pageSize)); err != nil {
					werr = fmt.Errorf("write pages of pid %d: %w", pid, err)
					break
				}
				off += n
				total += int64(n)
			}
			if d.opts.Progress != nil {
				d.opts.Progress(total, 0)
			}
		}
		free[w] <- b.buf[:cap(b.buf)]
		if werr != nil {
			break
		}
	}
	// Stop the readers (they may be ahead, or behind a failed one) and
	// wait for them: every buffer comes back, no reader outlives us.
	close(stop)
	for w := range nReaders {
		for b := range full[w] { // batches past the end or the first error
			if b.buf != nil {
				free[w] <- b.buf[:cap(b.buf)]
			}
		}
	}
	for w := range nReaders {
		close(free[w])
		for b := range free[w] {
			if cap(b) == batchBytes {
				d.bufs = append(d.bufs, b)
			}
		}
	}
	// The copies overlap: the slowest reader is the copy's wall time.
	d.Timings.Copy += slices.Max(append(copyTimes, 0))
	if werr != nil {
		return 0, werr
	}
	return total, nil
}

// pagesOut is a local pages file the readers write into: batch data goes
// at base plus the batch's offset (image.PagesWriter.PagesFile: the runs
// are added with AddRun(vaddr, nil, n), and the data lies at Written()).
type pagesOut struct {
	f    *os.File
	fd   int // f's
	base int64
	// raw: the readers copy with raw system calls (rawReadv, rawPwrite),
	// which the Go scheduler does not see. Through its own wrappers, a
	// call that lasts more than a sysmon tick (20 µs; a 256 KiB chunk
	// takes 30-100 µs each way) has its P taken away and handed to
	// another thread when every P is busy, as both readers keep them: a
	// futex wake and a thread switch per chunk, and the reader waits to
	// get a P back. A test program copying 1 GiB this way (two readers,
	// 256 KiB chunks, on this kind of 2-CPU host, runs back to back)
	// made 4,600 context switches in 0.34-0.35 s through the wrappers,
	// 220 in 0.23-0.27 s raw; the same copy in C, 30 in 0.24-0.27 s.
	// A raw call keeps its P, which is fine only for calls that end soon
	// whatever happens: so raw is set only when f is in memory (tmpfs,
	// ramfs), where a pwrite waits for no disk or server (only, when
	// memory is short, for reclaim, as any allocation may), and each
	// call moves at most chunkBytes. Other goroutines still run: sysmon
	// preempts a reader that held its P 10 ms at its next function call,
	// and a garbage collection waits at most one call.
	raw bool
}

// inMemory tells whether f lives in memory (tmpfs or ramfs): writes to it
// wait for no device.
func inMemory(f *os.File) bool {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return false
	}
	return st.Type == unix.TMPFS_MAGIC || st.Type == unix.RAMFS_MAGIC
}

// writeAt writes all of b at off into the pages file.
func (o *pagesOut) writeAt(b []byte, off int64) error {
	if !o.raw {
		_, err := o.f.WriteAt(b, off)
		return err
	}
	for len(b) > 0 {
		n, err := rawPwrite(o.fd, b, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "write", Path: o.f.Name(), Err: err}
		}
		if n == 0 {
			return fmt.Errorf("write %s at %d: no progress", o.f.Name(), off)
		}
		b = b[n:]
		off += int64(n)
	}
	return nil
}

// readBatches reads the batches first, first+step, ... of plans, each with
// one process_vm_readv (or /proc/PID/mem for pages the task may not read),
// into buffers from free, and sends them in order to full (for a page
// server: sendPages). After an error it sends the error and returns. It
// returns the time spent reading.
func readBatches(ctx context.Context, pid int, plans []batchPlan, first, step int, free <-chan []byte, full chan<- batch, stop <-chan struct{}) time.Duration {
	var spent time.Duration
	var mem *os.File
	defer func() {
		if mem != nil {
			mem.Close()
		}
	}()
	remote := make([]unix.RemoteIovec, 0, maxIov)
	for k := first; k < len(plans); k += step {
		var buf []byte
		select {
		case buf = <-free:
		case <-stop:
			return spent
		}
		select {
		case <-stop:
			full <- batch{buf: buf} // hand it back unread
			return spent
		default:
		}
		p := plans[k]
		if err := ctx.Err(); err != nil {
			full <- batch{buf: buf, err: err}
			return spent
		}
		b := batch{buf: buf[:p.bytes], runs: p.runs}
		start := time.Now()
		if p.viaMem {
			if err := readViaMem(pid, &mem, b.buf, p.runs[0].start); err != nil {
				full <- batch{buf: buf, err: err}
				return spent
			}
		} else {
			remote = remote[:0]
			for _, r := range p.runs {
				remote = append(remote, unix.RemoteIovec{Base: uintptr(r.start), Len: int(r.end - r.start)})
			}
			if err := readv(pid, b.buf, remote, false); err != nil {
				full <- batch{buf: buf, err: err}
				return spent
			}
		}
		spent += time.Since(start)
		full <- b
	}
	return spent
}

// readViaMem reads buf at addr from pid's /proc/PID/mem, *mem, opened on
// first use (the caller closes it), for pages the task may not read itself
// (pageRange.viaMem): both page copies (readBatches, copyBatch) read them so.
func readViaMem(pid int, mem **os.File, buf []byte, addr uint64) error {
	if *mem == nil {
		f, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
		if err != nil {
			return fmt.Errorf("open memory of pid %d: %w", pid, err)
		}
		*mem = f
	}
	if _, err := (*mem).ReadAt(buf, int64(addr)); err != nil {
		return fmt.Errorf("read memory of pid %d at %#x: %w", pid, addr, err)
	}
	return nil
}

// copyBatch copies the batch p into out at its place, len(chunk) bytes at
// a time: a process_vm_readv (or a read of /proc/PID/mem) into chunk and a
// pwrite from it. mem is the task's /proc/PID/mem, opened on first use.
//
// Why chunks: the pages pass through crtools on their way from the task
// into the file. Through a buffer that stays in the CPU's L2 cache the
// pwrite reads them from cache, not from memory. And on this machine's
// hypervisor (PVM, shadow paging) the first access to each page of a
// buffer through crtools' page tables costs a VM exit, 8-13 µs per 4 KiB
// page whether the page was faulted in or populated with madvise: the
// 32 MiB of 8 MiB batch buffers this used before cost ~100 ms of CPU per
// dump, 2 x 256 KiB cost ~1 ms. A standalone program copying 1 GiB that
// way (one thread, buffers already touched) measured the process_vm_readv
// part at 128-136 ms through 256 KiB against 147-174 ms through 8 MiB,
// and smaller chunks (64 KiB) slower again (syscalls). One copy instead
// of two, process_vm_readv straight into a shared mapping of the pages
// file, was measured too and rejected: every page of that mapping is a
// first access as above (1.3-2.6 s per GiB here), and populating it
// zeroes the pages first.
func copyBatch(pid int, p batchPlan, out *pagesOut, chunk []byte, mem **os.File, remote []unix.RemoteIovec) error {
	runs := p.runs
	off := out.base + int64(p.off)
	var cur pageRange // what is left of runs[0]
	if len(runs) > 0 {
		cur = runs[0]
	}
	for len(runs) > 0 {
		// Take up to len(chunk) bytes of the runs left.
		remote = remote[:0]
		n := 0
		for len(runs) > 0 && n < len(chunk) {
			take := min(int(cur.end-cur.start), len(chunk)-n)
			remote = append(remote, unix.RemoteIovec{Base: uintptr(cur.start), Len: take})
			n += take
			cur.start += uint64(take)
			if cur.start == cur.end {
				runs = runs[1:]
				if len(runs) > 0 {
					cur = runs[0]
				}
			}
		}
		buf := chunk[:n]
		if p.viaMem {
			// One run (planBatches): remote[0] is all of buf.
			if err := readViaMem(pid, mem, buf, uint64(remote[0].Base)); err != nil {
				return err
			}
		} else if err := readv(pid, buf, remote, out.raw); err != nil {
			return err
		}
		if err := out.writeAt(buf, off); err != nil {
			return fmt.Errorf("write pages of pid %d: %w", pid, err)
		}
		off += int64(n)
	}
	return nil
}

// readv reads remote into buf (whose length is the sum of the remote
// lengths) with as few process_vm_readv calls as the kernel allows; raw:
// with rawReadv (pagesOut.raw).
func readv(pid int, buf []byte, remote []unix.RemoteIovec, raw bool) error {
	for len(buf) > 0 {
		var n int
		var err error
		if raw {
			n, err = rawReadv(pid, buf, remote)
		} else {
			local := []unix.Iovec{{Base: &buf[0], Len: uint64(len(buf))}}
			n, err = unix.ProcessVMReadv(pid, local, remote, 0)
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return kernel.IfMissing("process_vm_readv", fmt.Errorf("read memory of pid %d at %#x: %w", pid, remote[0].Base, err))
		}
		if n == 0 {
			return fmt.Errorf("read memory of pid %d at %#x: no progress", pid, remote[0].Base)
		}
		// A partial read stops at a range boundary or inside one; go on
		// from there.
		buf = buf[n:]
		remote = pagemap.AdvanceRemote(remote, n)
	}
	return nil
}

// writeShmemPages saves the pages of one shared anonymous object into
// pagemap-shmem-<ino>.img. It reads the object through the map_files link
// of a mapping of it, finding its pages with SEEK_DATA/SEEK_HOLE, so that
// pages only other tasks touched and swapped-out pages are included.
func (d *Dumper) writeShmemPages(dir string, obj *shmemObj, pagesID uint32, ps *pageserver.Client) (int64, error) {
	f := obj.file // a SysV segment (sysv.go)
	if f == nil {
		path := obj.path() // a mapping or, for a memfd, maybe a descriptor (memfd.go)
		var err error
		if f, err = os.Open(path); err != nil {
			return 0, fmt.Errorf("open shared memory %d of pid %d: %w", obj.ino, obj.pid, err)
		}
	}
	defer f.Close()
	pw, err := createPages(ps, dir, image.ShmemPagemap, obj.ino, pagesID)
	if err != nil {
		return 0, fmt.Errorf("create shared memory pagemap %d: %w", obj.ino, err)
	}
	var total int64
	// Through a chunk buffer, as the readers of writeTaskPages copy
	// (readBatches says why); AddRun writes it straight into the file
	// and merges the pieces of a range into one pagemap entry.
	buf := d.getChunk()
	defer func() { d.chunks = append(d.chunks, buf) }()
	fd := int(f.Fd())
	off := int64(0)
	size := int64(obj.size)
	for off < size {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			pw.Close()
			return 0, fmt.Errorf("find pages of shared memory %d: %w", obj.ino, err)
		}
		if data >= size {
			break
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			pw.Close()
			return 0, fmt.Errorf("find pages of shared memory %d: %w", obj.ino, err)
		}
		if hole > size {
			hole = size
		}
		data &^= pageSize - 1
		for p := data; p < hole; {
			n := hole - p
			if n > int64(len(buf)) {
				n = int64(len(buf))
			}
			n = (n + pageSize - 1) &^ (pageSize - 1)
			got, err := f.ReadAt(buf[:n], p)
			if err != nil && got < int(n) {
				// The tail of the last page past EOF reads short.
				for i := got; i < int(n); i++ {
					buf[i] = 0
				}
			}
			if err := pw.AddRun(uint64(p), buf[:n], uint64(n/pageSize)); err != nil {
				pw.Close()
				return 0, fmt.Errorf("write pages of shared memory %d: %w", obj.ino, err)
			}
			total += n
			p += n
		}
		off = hole
	}
	syncStart := time.Now()
	if err := pw.Close(); err != nil {
		return 0, fmt.Errorf("close pages of shared memory %d: %w", obj.ino, err)
	}
	d.Timings.Sync += time.Since(syncStart)
	return total, nil
}

// getBuf returns a batch buffer, reusing one of an earlier task.
// Preconditions: d.mu held.
func (d *Dumper) getBuf() []byte { return popBuf(&d.bufs, batchBytes) }

// getChunk returns a reader's chunk buffer, reusing one of an earlier
// task: its pages are then already known to the hypervisor.
// Preconditions: d.mu held.
func (d *Dumper) getChunk() []byte { return popBuf(&d.chunks, chunkBytes) }

// popBuf takes the last buffer of pool, or makes one of size bytes.
func popBuf(pool *[][]byte, size int) []byte {
	if n := len(*pool); n > 0 {
		b := (*pool)[n-1]
		*pool = (*pool)[:n-1]
		return b
	}
	return make([]byte, size)
}
