package restore

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/kernel"
	"github.com/crtools/crtools/engine/pagemap"
	procfs "github.com/crtools/crtools/engine/proc"
)

// taskSizeMax is the top of the 47-bit user address space (TASK_SIZE with
// 4-level paging). Nothing above it is unmapped: [vsyscall] lives there and
// can be neither unmapped nor needs to be.
const taskSizeMax = 0x7ffffffff000

// archMapVdso64 is ARCH_MAP_VDSO_64 for arch_prctl.
const archMapVdso64 = 0x2003

// maxPreadvBytes bounds one injected preadv (the kernel caps a single read
// at MAX_RW_COUNT, just under 2 GiB) and maxIovecs is IOV_MAX.
const (
	maxPreadvBytes = 1 << 30
	// progressBatchBytes caps a preadv when progress is reported.
	progressBatchBytes = 64 << 20
	maxIovecs          = 1024
)

// vmaPlan is one VMA with what restore does with it.
type vmaPlan struct {
	e        *pb.VmaEntry
	mapProt  uint64 // protection while pages are filled
	needProt bool   // mprotect to e.Prot after the fill
}

func vmaLen(e *pb.VmaEntry) uint64 { return e.GetEnd() - e.GetStart() }

// unmapPuppet removes every mapping of the puppet except the trampoline:
// the exec'ed binary, its stack, the vDSO. The puppet's own code goes too,
// which is fine: it only ever runs the trampoline.
func (p *puppet) unmapPuppet() error {
	if p.bare {
		return nil
	}
	lo, hi := p.tr.addr, p.tr.addr+p.tr.size
	if lo > 0 {
		if err := p.queuef("unmap below the trampoline", unix.SYS_MUNMAP, 0, lo); err != nil {
			return err
		}
	}
	return p.queuef("unmap above the trampoline", unix.SYS_MUNMAP, hi, taskSizeMax-hi)
}

// mapVdso maps the vDSO of the running kernel where the dumped task had it.
// arch_prctl(ARCH_MAP_VDSO_64) takes the start of [vvar] (the data pages
// precede the code), returns the vDSO size, and treats the address as a
// hint, so where it landed is checked in /proc/PID/maps. The call is
// queued with the mappings (one batch); the returned check, to call once
// it has run, compares.
//
// landed holds the placements already checked in this restore. When the
// call runs, the puppet holds nothing but the trampoline, at the same
// address in every puppet (unmapPuppet runs in the same batch, before
// it): where the kernel puts the vDSO is a function of the hint alone, so
// one check per hint (and image placement) covers every task that has it
// there, and the others skip a read of /proc/PID/maps.
func (p *puppet) mapVdso(vmas []*pb.VmaEntry, landed map[vdsoPlace]bool) (func() error, error) {
	var vdso *pb.VmaEntry
	hint := uint64(0)
	for _, v := range vmas {
		st := v.GetStatus()
		if st&(vmaAreaVdso|vmaAreaVvar) == 0 {
			continue
		}
		if st&vmaAreaVdso != 0 {
			vdso = v
		}
		if hint == 0 || v.GetStart() < hint {
			hint = v.GetStart()
		}
	}
	if vdso == nil {
		// A task that unmapped its vDSO stays without one.
		return func() error { return nil }, nil
	}
	size := new(uint64)
	if err := p.queue(pendingCall{what: "map the vDSO", nr: unix.SYS_ARCH_PRCTL, ret: size}, []uint64{archMapVdso64, hint}); err != nil {
		return nil, err
	}
	place := vdsoPlace{hint: hint, start: vdso.GetStart(), size: vmaLen(vdso)}
	if landed[place] {
		return func() error {
			if *size != place.size {
				return fmt.Errorf("map the vDSO of task %d: arch_prctl gave a vDSO of %d bytes, the image has %d", p.pid, *size, place.size)
			}
			return nil
		}, nil
	}
	return func() error {
		got, gotSize, err := findMapping(p.pid, "[vdso]")
		if err != nil {
			return err
		}
		if got != vdso.GetStart() || gotSize != vmaLen(vdso) {
			return fmt.Errorf("map the vDSO of task %d: landed at %#x (%d bytes, arch_prctl said %d), the image has it at %#x (%d bytes); "+
				"the images come from a kernel with another vDSO layout", p.pid, got, gotSize, *size, vdso.GetStart(), vmaLen(vdso))
		}
		landed[place] = true
		return nil
	}, nil
}

// vdsoPlace is a vDSO placement checked by mapVdso: the hint given to
// arch_prctl and where the image has the vDSO.
type vdsoPlace struct{ hint, start, size uint64 }

// mapVMAs creates every VMA of the image (except the vDSO/vvar and
// vsyscall) with MAP_FIXED. Mappings that get pages are made writable for
// the fill; mprotectVMAs sets the final protections afterwards.
func (p *puppet) mapVMAs(img *imageSet, sh *shmState, vmas []*pb.VmaEntry, pm *image.PageIndex) ([]vmaPlan, error) {
	fds := map[uint64]uint64{} // file id -> fd in the puppet, closed at the end
	// The fds on shared anonymous memory (shmemFd) close at the end
	// too, not later: a task sharing this fd table may restore its files
	// before this task's endProc (the pipeline of RestoreState), and
	// predicts their numbers with this table empty of them.
	closeFds := func() {
		for id, fd := range fds {
			_ = p.queueIgnore(unix.SYS_CLOSE, fd)
			delete(fds, id)
		}
		if sh != nil {
			p.closeShmemFds(sh)
		}
	}
	defer func() {
		closeFds()
		_ = p.runPending()
	}()
	var plans []vmaPlan
	var run anonRun
	var sysv map[uint64]*sysvAttachment // SysV attachments, once there is one
	for _, v := range vmas {
		st := v.GetStatus()
		if st&(vmaAreaVdso|vmaAreaVvar|vmaAreaVsyscall) != 0 {
			continue
		}
		if st&vmaUnsupp != 0 || st&(vmaAreaSocket|vmaAreaAioring) != 0 {
			return nil, fmt.Errorf("restore VMA %#x-%#x of task %d: kind %#x not supported yet", v.GetStart(), v.GetEnd(), p.pid, st)
		}
		if st&vmaAreaSysvipc != 0 {
			// SysV shared memory: shmat, not mmap (sysv.go).
			if err := run.flush(p); err != nil {
				return nil, err
			}
			if sysv == nil {
				var err error
				if sysv, err = sysvAttachments(vmas); err != nil {
					return nil, fmt.Errorf("restore task %d: %w", p.pid, err)
				}
			}
			plan, err := p.attachSysV(sysv, v)
			if err != nil {
				return nil, err
			}
			plans = append(plans, plan)
			continue
		}
		prot := uint64(v.GetProt())
		flags := uint64(v.GetFlags()) & (unix.MAP_SHARED | unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_GROWSDOWN | unix.MAP_NORESERVE)
		flags |= unix.MAP_FIXED
		plan := vmaPlan{e: v, mapProt: prot}
		fd := ^uint64(0)
		off := uint64(0)
		fileBacked := st&(vmaFilePrivate|vmaFileShared) != 0
		if st&vmaAnonShared != 0 {
			if err := run.flush(p); err != nil {
				return nil, err
			}
			fd, err := p.shmemFd(img, sh, v)
			if err != nil {
				return nil, err
			}
			if fd == noFd {
				flags |= unix.MAP_ANONYMOUS // the first mapping creates the object
			} else {
				flags &^= unix.MAP_ANONYMOUS
			}
			plan.mapProt = prot | unix.PROT_READ | unix.PROT_WRITE
			plan.needProt = plan.mapProt != prot
			if _, err := p.callf(fmt.Sprintf("map shared VMA %#x-%#x", v.GetStart(), v.GetEnd()), unix.SYS_MMAP,
				v.GetStart(), vmaLen(v), plan.mapProt, flags, fd, v.GetPgoff()*boolU64(fd != noFd)); err != nil {
				return nil, err
			}
			if fd == noFd {
				if err := p.shmemCreated(img, sh, v); err != nil {
					return nil, err
				}
			}
			plans = append(plans, plan)
			continue
		}
		if fileBacked {
			flags &^= unix.MAP_ANONYMOUS
			var err error
			fd, err = p.openMapFile(img, v, fds)
			if err != nil {
				return nil, err
			}
			off = v.GetPgoff()
		} else {
			flags |= unix.MAP_ANONYMOUS
		}
		// Pages are written by an injected preadv, which obeys
		// protections: a private mapping is made readable and writable
		// for the fill. Shared file mappings get no pages (the file holds
		// them), so they get their final protection at once.
		// Only a VMA that gets pages is widened: mapping every VMA
		// writable would also make the kernel account them all, and
		// VMAs that differ only in that flag would merge after restore
		// (a PROT_NONE guard next to PROT_NONE data, a RELRO page next
		// to read-only text).
		if st&vmaFileShared == 0 && prot&(unix.PROT_READ|unix.PROT_WRITE) != unix.PROT_READ|unix.PROT_WRITE &&
			hasPages(pm, v.GetStart(), v.GetEnd()) {
			plan.mapProt = prot | unix.PROT_READ | unix.PROT_WRITE
			plan.needProt = true
		}
		plans = append(plans, plan)
		if !fileBacked && flags&unix.MAP_GROWSDOWN == 0 {
			// Anonymous: with its neighbours, in as few calls as
			// they allow (anonRun).
			if !run.add(plan, flags) {
				if err := run.flush(p); err != nil {
					return nil, err
				}
				run.add(plan, flags)
			}
			continue
		}
		if err := run.flush(p); err != nil {
			return nil, err
		}
		// MAP_FIXED at the dumped address: the result is known, so
		// the mmaps are queued and run as one batch (a file's fd stays
		// open until the deferred closes, after the batch).
		if err := p.queuef(fmt.Sprintf("map VMA %#x-%#x", v.GetStart(), v.GetEnd()), unix.SYS_MMAP,
			v.GetStart(), vmaLen(v), plan.mapProt, flags, fd, off); err != nil {
			return nil, err
		}
	}
	if err := run.flush(p); err != nil {
		return nil, err
	}
	// The executable's fd stays open for restoreMM's PR_SET_MM_MAP,
	// which would otherwise open the same file again (keepExe).
	p.exeFd = noFd
	if fd, ok := fds[p.keepExe]; ok && p.keepExe != 0 {
		if fe := img.files[uint32(p.keepExe)]; fe != nil && fe.GetReg() != nil {
			p.exeFd = fd
			delete(fds, p.keepExe)
		}
	}
	closeFds() // in the same batch as the mmaps
	if err := p.runPending(); err != nil {
		return nil, err
	}
	return plans, nil
}

// anonRun is a run of adjacent private anonymous VMAs with the same mmap
// flags (mapVMAs). Mapped one by one, each costs an mmap; the run costs
// one mmap of all of it with the protection most of them have, and an
// mprotect of each of the others, when that is fewer calls. A thread's
// stack and its guard page are such neighbours (glibc maps both with one
// mmap and makes the stack writable with one mprotect), and so are the
// stacks of a process's threads: 50 threads' 98 VMAs take 50 calls
// instead of 98. The VMAs come out as they would one by one: each
// protection change splits the mapping where the image has a boundary,
// and the kernel merged neighbours with equal flags either way.
type anonRun struct {
	plans []vmaPlan
	flags uint64
}

// add appends plan (flags: its mmap flags) to the run, or reports false
// when it does not continue it.
func (r *anonRun) add(plan vmaPlan, flags uint64) bool {
	if n := len(r.plans); n > 0 && (r.flags != flags || r.plans[n-1].e.GetEnd() != plan.e.GetStart()) {
		return false
	}
	r.plans, r.flags = append(r.plans, plan), flags
	return true
}

// flush queues the calls that map the run and empties it.
func (r *anonRun) flush(p *puppet) error {
	plans := r.plans
	r.plans = r.plans[:0]
	if len(plans) == 0 {
		return nil
	}
	// The protection most VMAs of the run are mapped with.
	count := map[uint64]int{}
	base := plans[0].mapProt
	for _, pl := range plans {
		count[pl.mapProt]++
		if c := count[pl.mapProt]; c > count[base] || (c == count[base] && pl.mapProt < base) {
			base = pl.mapProt
		}
	}
	if len(plans) == 1 || 1+len(plans)-count[base] >= len(plans) {
		for _, pl := range plans {
			v := pl.e
			if err := p.queuef(fmt.Sprintf("map VMA %#x-%#x", v.GetStart(), v.GetEnd()), unix.SYS_MMAP,
				v.GetStart(), vmaLen(v), pl.mapProt, r.flags, ^uint64(0), 0); err != nil {
				return err
			}
		}
		return nil
	}
	start, end := plans[0].e.GetStart(), plans[len(plans)-1].e.GetEnd()
	if err := p.queuef(fmt.Sprintf("map VMAs %#x-%#x", start, end), unix.SYS_MMAP,
		start, end-start, base, r.flags, ^uint64(0), 0); err != nil {
		return err
	}
	for _, pl := range plans {
		if pl.mapProt == base {
			continue
		}
		v := pl.e
		if err := p.queuef(fmt.Sprintf("protect VMA %#x-%#x", v.GetStart(), v.GetEnd()), unix.SYS_MPROTECT,
			v.GetStart(), vmaLen(v), pl.mapProt); err != nil {
			return err
		}
	}
	return nil
}

// openMapFile opens the file behind a file-backed VMA in the puppet (once
// per file). vma_entry.shmid holds the id of its reg-file entry.
func (p *puppet) openMapFile(img *imageSet, v *pb.VmaEntry, fds map[uint64]uint64) (uint64, error) {
	id := v.GetShmid()
	if fd, ok := fds[id]; ok {
		return fd, nil
	}
	fe := img.files[uint32(id)]
	if fe.GetMemfd() != nil {
		// A memfd mapping (CRIU's encoding): crtools' object (memfd.go),
		// through a descriptor with the entry's access mode: a read-only
		// shared mapping made through a read-write one could be
		// mprotect'ed writable, and would keep F_SEAL_WRITE from being
		// added again. mapVMAs closes it.
		fd, err := p.takeMemfd(img, fe.GetMemfd())
		if err != nil {
			return 0, fmt.Errorf("restore VMA %#x-%#x of task %d: %w", v.GetStart(), v.GetEnd(), p.pid, err)
		}
		fds[id] = fd
		return fd, nil
	}
	if fe == nil || fe.GetReg() == nil {
		return 0, fmt.Errorf("restore VMA %#x-%#x of task %d: no regular file with id %d in files.img", v.GetStart(), v.GetEnd(), p.pid, id)
	}
	mode := uint64(unix.O_RDONLY)
	if v.Fdflags != nil {
		mode = uint64(v.GetFdflags()) & unix.O_ACCMODE
	} else if v.GetStatus()&vmaFileShared != 0 && v.GetProt()&unix.PROT_WRITE != 0 {
		mode = unix.O_RDWR
	}
	if img.special != nil && img.special.Handles(uint32(id)) {
		// A file deleted before the dump: crtools recreated it
		// (engine/files MakeGhosts) and opened it with the entry's
		// access mode; the puppet takes that file, whatever mount
		// namespace it is in, the same file as the tasks' fds on it.
		fd, err := p.takeSpecial(img, uint32(id))
		if err != nil {
			return 0, fmt.Errorf("restore VMA %#x-%#x of task %d: %w", v.GetStart(), v.GetEnd(), p.pid, err)
		}
		fds[id] = fd
		return fd, nil
	}
	fd, err := p.openat(fe.GetReg().GetName(), mode|unix.O_CLOEXEC)
	if err != nil {
		return 0, fmt.Errorf("open %q for VMA %#x-%#x: %w", fe.GetReg().GetName(), v.GetStart(), v.GetEnd(), err)
	}
	fds[id] = fd
	return fd, nil
}

// openat opens path in the puppet and returns the fd. With the fd table
// known (fdtable.go) the call is only queued, and its error comes from
// the next runPending, naming the path.
func (p *puppet) openat(path string, flags uint64) (uint64, error) {
	addr, err := p.putString(path)
	if err != nil {
		return 0, err
	}
	return p.openFd(fmt.Sprintf("open %q", path), unix.SYS_OPENAT, atFdcwd, addr, flags, 0)
}

// fillPages reads the task's pages straight from the pages file into its
// memory with injected preadv calls: the kernel copies from the page cache
// into the new anonymous pages, once, with up to IOV_MAX runs per call.
func (p *puppet) fillPages(dir string, pm *image.PageIndex) (int64, error) {
	var runs []iovec
	next := int64(0)
	for _, r := range pm.Runs {
		if r.Flags&image.PEParent != 0 {
			return 0, fmt.Errorf("pages %#x+%d of task %d are in a parent images directory: incremental images are not supported yet", r.Vaddr, r.NrPages, p.pid)
		}
		if r.Offset < 0 {
			continue // not in the pages file
		}
		if r.Offset != next {
			return 0, fmt.Errorf("pagemap of task %d: run at %#x starts at offset %d of the pages file, expected %d", p.pid, r.Vaddr, r.Offset, next)
		}
		next += int64(r.NrPages * pageSize)
		runs = append(runs, iovec{Base: r.Vaddr, Len: r.NrPages * pageSize})
	}
	return p.fillRuns(dir, pm.PagesID, 0, runs)
}

// fillRuns reads the pages file pages-<pagesID>.img from offset start into
// runs, back to back, with as few preadv calls as IOV_MAX and the kernel's
// per-call limit allow.
func (p *puppet) fillRuns(dir string, pagesID uint32, start int64, runs []iovec) (int64, error) {
	if len(runs) == 0 {
		return 0, nil
	}
	path, err := filepath.Abs(filepath.Join(dir, fmt.Sprintf("pages-%d.img", pagesID)))
	if err != nil {
		return 0, err
	}
	if !fillByPreadv {
		return p.writeRuns(path, start, runs)
	}
	fd, err := p.openat(path, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return 0, fmt.Errorf("open %s in task %d: %w", path, p.pid, err)
	}
	defer func() { _, _ = p.call(unix.SYS_CLOSE, fd) }()

	// With a progress display, smaller batches let it move (a preadv
	// per 64 MiB costs nothing measurable).
	limit := uint64(maxPreadvBytes)
	if p.filled != nil {
		limit = progressBatchBytes
	}
	off := start
	for len(runs) > 0 {
		// Take up to maxIovecs runs and limit bytes.
		var batch []iovec
		var total uint64
		for len(runs) > 0 && len(batch) < maxIovecs && total < limit {
			r := runs[0]
			if total+r.Len > limit {
				take := limit - total
				batch = append(batch, iovec{Base: r.Base, Len: take})
				runs[0] = iovec{Base: r.Base + take, Len: r.Len - take}
				total += take
				break
			}
			batch = append(batch, r)
			total += r.Len
			runs = runs[1:]
		}
		t0 := time.Now()
		p.populate(batch)
		p.populateTime += time.Since(t0)
		t0 = time.Now()
		for total > 0 {
			addr, err := p.put(putIovecs(batch))
			if err != nil {
				return off - start, err
			}
			n, err := p.call(unix.SYS_PREADV, fd, addr, uint64(len(batch)), uint64(off), 0)
			if err != nil {
				return off - start, fmt.Errorf("read pages of task %d from %s at offset %d: %w", p.pid, path, off, err)
			}
			if n == 0 {
				return off - start, fmt.Errorf("read pages of task %d from %s at offset %d: pages file too short", p.pid, path, off)
			}
			off += int64(n)
			total -= n
			if p.filled != nil {
				p.filled(int64(n))
			}
			// A short read: drop what was filled and go on.
			for n > 0 {
				if batch[0].Len <= n {
					n -= batch[0].Len
					batch = batch[1:]
					continue
				}
				batch[0].Base += n
				batch[0].Len -= n
				n = 0
			}
		}
		p.readTime += time.Since(t0)
	}
	return off - start, nil
}

func boolU64(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// protectVMAs sets the final protections and the madvise flags.
func (p *puppet) protectVMAs(plans []vmaPlan) error {
	for _, pl := range plans {
		v := pl.e
		if pl.needProt {
			if err := p.queuef(fmt.Sprintf("mprotect VMA %#x-%#x", v.GetStart(), v.GetEnd()), unix.SYS_MPROTECT,
				v.GetStart(), vmaLen(v), uint64(v.GetProt())); err != nil {
				return err
			}
		}
	}
	for _, r := range madviseRuns(plans) {
		if err := p.queuef(fmt.Sprintf("madvise(%d) %#x-%#x", r.adv, r.start, r.end), unix.SYS_MADVISE,
			r.start, r.end-r.start, r.adv); err != nil {
			return err
		}
	}
	return nil // queued: the caller's next batch
}

// madviseRun is one madvise of protectVMAs: advice adv over [start, end).
type madviseRun struct{ start, end, adv uint64 }

// madviseRuns turns the madvise flags of the VMAs of plans (vma_entry.madv,
// a bitmap of the MADV_* numbers in effect: states such as
// MADV_NOHUGEPAGE or MADV_DONTFORK, which the kernel sets VMA by VMA over
// a range) into one call per advice and run of back-to-back VMAs that
// have it: the thread stacks of a process and their guard pages, each with
// the flag, took two calls per thread. plans are in address order.
func madviseRuns(plans []vmaPlan) []madviseRun {
	var runs []madviseRun
	open := map[uint64]int{} // advice -> index in runs of its run going on
	for _, pl := range plans {
		v := pl.e
		for m := v.GetMadv(); m != 0; m &= m - 1 {
			adv := uint64(bits.TrailingZeros64(m))
			if i, ok := open[adv]; ok && runs[i].end == v.GetStart() {
				runs[i].end = v.GetEnd()
				continue
			}
			open[adv] = len(runs)
			runs = append(runs, madviseRun{start: v.GetStart(), end: v.GetEnd(), adv: adv})
		}
	}
	return runs
}

// lockVMAs locks the VMAs that were locked (mlock, mlockall: MAP_LOCKED
// in the image, from smaps' "lo"). mapVMAs maps them unlocked: locking
// then would fault in every page before the fill writes them. A fork
// (heirs) does not copy the lock either, so a heir locks its own, all of
// them. PROT_NONE VMAs stay unlocked: mlock refuses to fault them in.
// (Locks on fault are not in the images: see dump's collectMemory.)
// A file VMA may fail with ENOMEM yet be locked (past the end of its
// file): accepted once smaps shows the lock. Queued: the caller's next
// batch.
func (p *puppet) lockVMAs(vmas []*pb.VmaEntry) error {
	for _, v := range vmas {
		if v.GetFlags()&unix.MAP_LOCKED == 0 || v.GetProt() == unix.PROT_NONE {
			continue
		}
		what := fmt.Sprintf("mlock VMA %#x-%#x", v.GetStart(), v.GetEnd())
		if v.GetStatus()&(vmaFilePrivate|vmaFileShared) == 0 {
			if err := p.queuef(what, unix.SYS_MLOCK, v.GetStart(), vmaLen(v)); err != nil {
				return err
			}
			continue
		}
		start, end := v.GetStart(), v.GetEnd()
		after := func(_ uint64, err error) error {
			if err == nil {
				return nil
			}
			if errors.Is(err, unix.ENOMEM) {
				// A file mapping that reaches past the end of its
				// file: mlock sets VM_LOCKED on the whole VMA, then
				// fails to fault in the pages beyond the end (they
				// have none) and returns ENOMEM. mlockall ignores
				// that, so such a VMA was locked in the dumped
				// process. The lock is what is restored: accept
				// the error if the kernel did set it.
				locked, lerr := vmaRangeLocked(p.pid, start, end)
				if lerr != nil {
					return fmt.Errorf("%s in task %d: %w (and check its lock: %w)", what, p.pid, err, lerr)
				}
				if locked {
					return nil
				}
			}
			return fmt.Errorf("%s in task %d: %w", what, p.pid, err)
		}
		if err := p.queue(pendingCall{what: what, nr: unix.SYS_MLOCK, mayFail: true, after: after},
			[]uint64{start, end - start}); err != nil {
			return err
		}
	}
	return nil
}

// vmaRangeLocked tells whether every VMA of task pid in [start, end) is
// locked (smaps' "lo") and they cover it all.
func vmaRangeLocked(pid int, start, end uint64) (bool, error) {
	maps, err := procfs.ReadSmaps(pid)
	if err != nil {
		return false, err
	}
	at := start
	for i := range maps {
		m := &maps[i]
		if m.End <= at || m.Start >= end {
			continue
		}
		if m.Start > at || !m.Flag("lo") {
			return false, nil
		}
		at = m.End
		if at >= end {
			return true, nil
		}
	}
	return false, nil
}

// atFdcwd is AT_FDCWD (-100) as a register value.
const atFdcwd = ^uint64(99)

// hasPages tells whether the pages file holds any page of [start, end).
func hasPages(pm *image.PageIndex, start, end uint64) bool {
	if pm == nil {
		return false
	}
	for _, s := range pm.Lookup(start, end-start) {
		if s.Offset >= 0 {
			return true
		}
	}
	return false
}

// madvPopulateWrite is MADV_POPULATE_WRITE (Linux 5.14).
const madvPopulateWrite = 23

// populateMin is the smallest run worth one more injected syscall.
const populateMin = 64 << 10

// populate pre-faults the bigger runs with MADV_POPULATE_WRITE before the
// preadv fills them. Faulting page by page from copy_to_user costs one
// exception per 4 KiB page, which virtual machines make very expensive
// (measured here: 5-9 s per GiB against 0.2-0.5 s for the populate); the
// kernel populates a range in one go. Failure (an old kernel) only costs
// speed.
func (p *puppet) populate(runs []iovec) {
	if p.noPopulate {
		return
	}
	for _, r := range runs {
		if r.Len < populateMin {
			continue
		}
		if _, err := p.call(unix.SYS_MADVISE, r.Base, r.Len, madvPopulateWrite); err != nil {
			if isErrno(err, unix.EINVAL) {
				p.noPopulate = true
				return
			}
			p.log.Debug().Err(err).Msg("MADV_POPULATE_WRITE failed")
		}
	}
}

// fillByPreadv selects the in-puppet preadv fill instead of writeRuns.
// The design's first choice (one copy, from the page cache into the task)
// measured 2.3 s for 1 GiB on this machine against 0.5-0.8 s for
// writeRuns, for the reason writeRuns explains; it stays for kernels and
// machines where faulting through the task's page tables is cheap.
var fillByPreadv = false

// Tuning of writeRuns: up to fillWorkers goroutines (one per CPU) copy
// alternate pieces of fillChunk bytes, each through its own buffer of
// that size.
const (
	fillChunk   = 256 << 10
	fillWorkers = 2
	// Up to fillSmall bytes (a small process, or one of 50 threads with
	// a few stack pages each) are copied by one worker in pieces of
	// fillChunkSmall.
	fillSmall      = 1 << 20
	fillChunkSmall = 64 << 10
)

// writeRuns copies the runs from the pages file (read from offset start,
// back to back) into the puppet with process_vm_writev from crtools. The
// kernel writes the puppet's pages through its own mapping of physical
// memory (get_user_pages), so the puppet's page tables are never walked by
// a faulting access: under a hypervisor with shadow paging (this machine
// runs PVM) each first touch of a page through a user mapping costs a VM
// exit, about 13 µs per 4 KiB, which made an in-puppet preadv of 1 GiB
// take 3-9 s. The copy through crtools' buffer costs one memcpy more.
// The pages the puppet gets are plain anonymous pages.
//
// The same first-touch cost is why the buffers are small: the pages of a
// fresh buffer are first accesses too, and the 32 MiB buffer this used
// before cost 8192 of them (0.1-0.3 s per restore here, more when the
// host is busy); 256 KiB per worker stays in the L2 cache besides, so
// the process_vm_writev reads what the pread just wrote from cache. The
// workers run in parallel because both copies are CPU-bound in the
// kernel and nothing serialises them: reads of the pages file share its
// page cache, and faults in the puppet take its mmap lock shared.
func (p *puppet) writeRuns(path string, start int64, runs []iovec) (int64, error) {
	// Without Go's poller: os.Open tries to register the file with
	// epoll (four fcntls and an epoll_ctl that fails for a regular
	// file), once per task.
	fd, err := procfs.OpenNoPoll(path, unix.O_RDONLY, 0)
	if err != nil {
		return 0, fmt.Errorf("open pages file: %w", err)
	}
	defer unix.Close(fd)
	// ends[i] is where run i ends in the concatenation of the runs.
	ends := make([]uint64, len(runs))
	var total uint64
	for i, r := range runs {
		total += r.Len
		ends[i] = total
	}
	if total == 0 {
		return 0, nil
	}
	chunk, nw := uint64(fillChunk), fillWorkers
	if total <= fillSmall {
		// One worker, through a small buffer: every page of a fresh
		// buffer costs a first touch (see above), more than the
		// syscalls of the extra pieces.
		chunk, nw = fillChunkSmall, 1
	}
	pieces := int((total + chunk - 1) / chunk)
	nw = min(nw, runtime.GOMAXPROCS(0), pieces)
	bufs := p.tr.fillBuffer(nw * int(min(total, chunk)))
	per := len(bufs) / nw
	t0 := time.Now()
	var (
		mu     sync.Mutex // p.filled and firstErr
		first  error
		failed atomic.Bool
		done   atomic.Int64
		wg     sync.WaitGroup
	)
	for w := range nw {
		buf := bufs[w*per : (w+1)*per]
		wg.Go(func() {
			if w == 0 && p.tr.fillOn != nil {
				defer p.tr.fillElsewhere()()
			}
			remote := make([]unix.RemoteIovec, 0, chunk/pageSize+1)
			for k := w; k < pieces && !failed.Load(); k += nw {
				lo := uint64(k) * chunk
				hi := min(lo+chunk, total)
				err := p.writePiece(fd, path, start, buf[:hi-lo], runs, ends, lo, remote)
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					failed.Store(true)
					return
				}
				done.Add(int64(hi - lo))
				if p.filled != nil {
					mu.Lock()
					p.filled(int64(hi - lo))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	p.readTime += time.Since(t0)
	return done.Load(), first
}

// writePiece copies bytes [lo, lo+len(buf)) of the concatenated runs
// (ends: where each run ends in it) from the pages file, where they start
// at offset start+lo, into the puppet through buf.
func (p *puppet) writePiece(fd int, path string, start int64, buf []byte, runs []iovec, ends []uint64, lo uint64, remote []unix.RemoteIovec) error {
	off := start + int64(lo)
	if err := preadFull(fd, buf, off); err != nil {
		return fmt.Errorf("read %s at %d: %w", path, off, err)
	}
	// The runs covering the piece: the first one ending after lo, on.
	remote = remote[:0]
	hi := lo + uint64(len(buf))
	i := sort.Search(len(ends), func(i int) bool { return ends[i] > lo })
	for pos := lo; pos < hi; i++ {
		runStart := ends[i] - runs[i].Len // of run i in the concatenation
		from := pos - runStart
		n := min(ends[i], hi) - pos
		remote = append(remote, unix.RemoteIovec{Base: uintptr(runs[i].Base + from), Len: int(n)})
		pos += n
	}
	local := []unix.Iovec{{Base: &buf[0], Len: uint64(len(buf))}}
	for written := 0; written < len(buf); {
		w, err := unix.ProcessVMWritev(p.pid, local, remote, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return kernel.IfMissing("process_vm_writev", fmt.Errorf("write pages into task %d: %w", p.pid, err))
		}
		if w == 0 {
			return fmt.Errorf("write pages into task %d: no progress", p.pid)
		}
		written += w
		if written >= len(buf) {
			break
		}
		// Drop what was written (a short write stops at an iovec
		// boundary or inside one).
		local[0].Base = &buf[written]
		local[0].Len = uint64(len(buf) - written)
		remote = pagemap.AdvanceRemote(remote, w)
	}
	return nil
}

// preadFull reads len(buf) bytes of fd at off (io.ErrUnexpectedEOF when the
// file ends before).
func preadFull(fd int, buf []byte, off int64) error {
	for len(buf) > 0 {
		n, err := unix.Pread(fd, buf, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		buf, off = buf[n:], off+int64(n)
	}
	return nil
}

// fillElsewhere moves the calling goroutine, locked to its thread, to the
// CPU fillOn (the tracer and the puppets share the other one), and
// returns what puts it back. The copy is kernel work of 10-15 µs a page
// here; on the tracer's CPU, where the runtime's wakeup put it, the
// tracer waited for it in the middle of its own work (2.3 ms of a 50-thread
// restore's 4.7 ms before the threads' batches ran), while the other CPU
// was idle. Failure only costs speed.
func (t *trampoline) fillElsewhere() (back func()) {
	runtime.LockOSThread()
	if unix.SchedSetaffinity(0, t.fillOn) != nil {
		return runtime.UnlockOSThread
	}
	return func() {
		// A thread left on one CPU would serve other goroutines
		// there: one that cannot get its mask back ends with the
		// goroutine (locked, it is not reused).
		if unix.SchedSetaffinity(0, t.fillBack) == nil {
			runtime.UnlockOSThread()
		}
	}
}

// fillBuffer returns a buffer of at least n bytes, shared by every puppet
// of the restore (they are filled one after the other on the tracer
// thread): allocating and faulting in a fresh one per task cost more than
// a small task's whole restore.
func (t *trampoline) fillBuffer(n int) []byte {
	if len(t.fillBuf) < n {
		t.fillBuf = make([]byte, n)
		// Faulted in at once rather than page by page by the first
		// reads into it: a first touch costs 13-15 µs under this
		// machine's hypervisor (shadow page tables), a populated page
		// about 1.5 µs; 128 pages for two 256 KiB buffers. The heap
		// crtools populates at start-up (cmd/crtools) may already
		// hold it. Failure only costs speed.
		_ = unix.Madvise(t.fillBuf, unix.MADV_POPULATE_WRITE)
	}
	return t.fillBuf[:n]
}
