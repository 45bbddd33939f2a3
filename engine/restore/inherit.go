package restore

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
	procfs "github.com/crtools/crtools/engine/proc"
	"github.com/crtools/crtools/engine/ptrace"
)

// Heirs: a child forked from its parent usually has the parent's memory
// layout, files, fs info, signal actions and limits, and most of its
// pages. Restoring it the full way (unmap the puppet, mmap every VMA,
// write every page, open or take every file) does all of that again. An
// heir is instead created late, by fork (clone3 without CLONE_VM) from
// its parent's puppet once the parent's memory, files, fs info, signal
// actions and limits are restored, and before anything fork does not
// copy or copies wrongly (per-thread state, pending signals, credentials,
// the trampoline's removal). It then has its parent's restored memory,
// copy-on-write: only the pages in which its image differs are written
// (and pages the parent has and it has not are dropped with
// MADV_DONTNEED, which gives an anonymous page back as zeros and a
// private file page as the file's), and only what fork does not copy is
// restored (restoreHeir). In a 50-task tree of children forked from one
// parent this saves about 20 mmaps, 20-odd pages written and a dozen file
// calls per child.
//
// Only children whose images say that this gives exactly their dumped
// state are heirs (heirOK): a single-threaded leaf, alive, in its parent's
// session and group, sharing no fd table, fs info, mm or signal handlers
// with another task (nor does its parent, whose other threads have no
// rseq area: the kernel writes to those), with only private VMAs (none
// MADV_DONTFORK/WIPEONFORK) on both sides and the vDSO where the parent
// has it, the parent's mm fields but for the brk, and the parent's fd
// table image (the same open files on the same numbers: fork shares the
// open files as the dump found them shared), fs image, signal actions,
// limits, personality and oom_score_adj. The parent's VMAs the heir does
// not have as they are go, the heir's own are mapped and filled (layout).
// No heirs with namespaces, a shell job, or file locks (POSIX locks are
// not inherited). A heir is forked after its parent's other children:
// a child with a later sibling that is no heir is none (planHeirs).
// Every other task is restored as before.
type heir struct {
	from *proc // the parent, restored the full way

	// Its layout against the parent's (layout).
	unmap  []iovec        // the parent's VMAs it does not have
	mapv   []*pb.VmaEntry // its VMAs the parent does not have
	kept   []*pb.VmaEntry // its VMAs the parent has as they are
	setBrk bool           // its brk differs (PR_SET_MM_MAP)
}

// pageDiff is what a heir's memory needs beyond its parent's.
type pageDiff struct {
	runs  []iovec // the heir's pages its parent's differ from
	from  []int64 // where each run is in the heir's pages data
	size  int64   // bytes in runs
	drops []iovec // pages the parent has and the heir has not
}

// heirMaxPages bounds the pages files compared for a heir: the
// comparison reads both, and for big memories the plain copy is as fast.
const heirMaxPages = 8 << 20

// madvDontfork and madvWipeonfork are MADV_DONTFORK and MADV_WIPEONFORK:
// a VMA with either is not copied (or comes empty) by fork.
const (
	madvDontfork   = 10
	madvWipeonfork = 18
)

// heirsPossible tells whether the restore allows heirs at all.
func (r *restorer) heirsPossible() bool {
	return !r.opts.ShellJob && r.nsCloneFlags() == 0 && !r.newPidNS() && !r.anyLocks()
}

// heirOK tells whether t, not yet created, can be created as a heir of its
// parent (see heir), and if not, why: a constant string (no allocation),
// which planHeirs logs. Preconditions: heirsPossible.
func (r *restorer) heirOK(t *taskImage, keys msgKeys) (ok bool, why string) {
	p := t.parent
	if p == nil || t.dead() || p.dead() || len(t.tids) != 1 || len(t.children) != 0 {
		return false, "not a live single-threaded leaf with a live parent"
	}
	tc, ptc := t.core().GetTc(), p.core().GetTc()
	if tc.GetTaskState() != taskAlive || ptc.GetTaskState() != taskAlive {
		return false, "task state not alive"
	}
	if p.leaderExited() {
		// The heir would be forked by the parent's leader thread, gone
		// by then (exitLeader).
		return false, "parent's main thread has exited"
	}
	if t.sid != p.sid || t.pgid != p.pgid || t.sid == t.pid || t.pgid == t.pid {
		return false, "session or group differs from the parent's, or leads one"
	}
	if t.ids == nil || p.ids == nil || t.mm == nil || p.mm == nil || t.pagemap == nil || p.pagemap == nil {
		return false, "ids, mm or pages missing"
	}
	// The parent's memory must be its image when the heir is forked. Its
	// other threads register their rseq areas before (restoreOtherThreads,
	// while the pages are copied), and the kernel then writes their cpu
	// fields into that memory, before or after the fill; the heir would
	// keep those bytes where its image may have others (the leader's
	// area is registered after the fork).
	for _, tid := range p.tids[1:] {
		if p.cores[tid].GetThreadCore().GetRseqEntry().GetRseqAbiPointer() != 0 {
			return false, "a thread of the parent has an rseq area"
		}
	}
	// Nothing shared with another task, by the heir or its parent.
	for _, x := range []*taskImage{t, p} {
		for _, o := range r.img.tasks {
			if o == x || o.ids == nil {
				continue
			}
			if o.ids.GetVmId() == x.ids.GetVmId() || o.ids.GetFilesId() == x.ids.GetFilesId() ||
				o.ids.GetFsId() == x.ids.GetFsId() || o.ids.GetSighandId() == x.ids.GetSighandId() {
				return false, "shares ids with another task"
			}
		}
	}
	if t.mm != p.mm && !mmFieldsEqual(t.mm, p.mm) {
		return false, "mm fields differ"
	}
	for _, v := range slices.Concat(t.mm.GetVmas(), p.mm.GetVmas()) {
		st := v.GetStatus()
		// Huge pages: MADV_DONTNEED of one 4 KiB page would fail.
		if st&(vmaAnonShared|vmaFileShared|vmaUnsupp|vmaAreaSysvipc|vmaAreaSocket|vmaAreaAioring|vmaAreaMemfd) != 0 ||
			v.GetMadv()&(1<<madvDontfork|1<<madvWipeonfork) != 0 || v.GetFlags()&unix.MAP_HUGETLB != 0 {
			return false, "unsupported VMA (shared, huge, DONTFORK, socket, ...)"
		}
		if st&vmaFilePrivate != 0 {
			if fe := r.img.files[uint32(v.GetShmid())]; fe == nil || fe.GetReg() == nil {
				return false, "file VMA without a regular file"
			}
		}
	}
	if t.pagemap.PagesSize > heirMaxPages || p.pagemap.PagesSize > heirMaxPages {
		return false, "too many pages"
	}
	for _, pm := range []*image.PageIndex{t.pagemap, p.pagemap} {
		for _, run := range pm.Runs {
			if run.Flags&image.PEParent != 0 {
				return false, "pages in a parent image" // fillPages says why
			}
		}
	}
	if (t.fs == nil) != (p.fs == nil) || (t.fs != nil && !keys.same(t.fs, p.fs)) {
		return false, "fs differs"
	}
	if !slices.EqualFunc(t.fds, p.fds, func(a, b *pb.FdinfoEntry) bool { return keys.same(a, b) }) {
		return false, "fds differ"
	}
	if !slices.EqualFunc(tc.GetSigactions(), ptc.GetSigactions(), func(a, b *pb.SaEntry) bool { return keys.same(a, b) }) {
		return false, "sigactions differ"
	}
	if (tc.Rlimits == nil) != (ptc.Rlimits == nil) || (tc.Rlimits != nil && !keys.same(tc.Rlimits, ptc.Rlimits)) ||
		tc.GetPersonality() != ptc.GetPersonality() ||
		(tc.OomScoreAdj == nil) != (ptc.OomScoreAdj == nil) || tc.GetOomScoreAdj() != ptc.GetOomScoreAdj() {
		return false, "rlimits, personality or oom_score_adj differ"
	}
	// The vDSO and vvar (and vsyscall) are where the parent has them.
	pv := keys.set(p.mm.GetVmas())
	for _, v := range t.mm.GetVmas() {
		if v.GetStatus()&(vmaAreaVdso|vmaAreaVvar|vmaAreaVsyscall) != 0 && !pv[keys.key(v)] {
			return false, "vDSO or vvar not where the parent has it"
		}
	}
	return true, ""
}

// vtMessage is an image message with the generated marshaller (no
// protobuf reflection on the restore path: see pb's lazy registration).
type vtMessage interface{ MarshalVT() ([]byte, error) }

// msgKeys compares image messages by their encoding, each encoded once.
// Decoded messages with equal content are often one (imgcache.go).
type msgKeys map[vtMessage]string

func (k msgKeys) key(m vtMessage) string {
	if s, ok := k[m]; ok {
		return s
	}
	b, err := m.MarshalVT()
	s := string(b)
	if err != nil {
		s = fmt.Sprintf("unencodable %p", m) // equal to nothing else
	}
	k[m] = s
	return s
}

// same tells whether a and b (not nil) have the same content.
func (k msgKeys) same(a, b vtMessage) bool { return a == b || k.key(a) == k.key(b) }

// set is the set of the keys of vmas.
func (k msgKeys) set(vmas []*pb.VmaEntry) map[string]bool {
	s := make(map[string]bool, len(vmas))
	for _, v := range vmas {
		s[k.key(v)] = true
	}
	return s
}

// mmFieldsEqual compares what restoreMM sets from two mm images, and the
// dumpable flag, which fork copies too. The VMAs are compared apart
// (heirLayout).
func mmFieldsEqual(a, b *pb.MmEntry) bool {
	return a.GetMmStartCode() == b.GetMmStartCode() && a.GetMmEndCode() == b.GetMmEndCode() &&
		a.GetMmStartData() == b.GetMmStartData() && a.GetMmEndData() == b.GetMmEndData() &&
		a.GetMmStartStack() == b.GetMmStartStack() && a.GetMmArgStart() == b.GetMmArgStart() &&
		a.GetMmArgEnd() == b.GetMmArgEnd() && a.GetMmEnvStart() == b.GetMmEnvStart() &&
		a.GetMmEnvEnd() == b.GetMmEnvEnd() && a.GetExeFileId() == b.GetExeFileId() &&
		slices.Equal(a.GetMmSavedAuxv(), b.GetMmSavedAuxv()) &&
		(a.Dumpable == nil) == (b.Dumpable == nil) && a.GetDumpable() == b.GetDumpable() &&
		a.GetThpDisabled() == b.GetThpDisabled()
}

// heirLayout sets what turns the parent's mappings into the heir's: the
// parent's VMAs the heir does not have as they are go, the heir's the
// parent does not have are made, and the brk is set when it differs.
func (h *heir) layout(t *taskImage, keys msgKeys) {
	pv, cv := h.from.t.mm.GetVmas(), t.mm.GetVmas()
	pset, cset := keys.set(pv), keys.set(cv)
	for _, v := range pv {
		if !cset[keys.key(v)] {
			h.unmap = append(h.unmap, iovec{Base: v.GetStart(), Len: vmaLen(v)})
		}
	}
	for _, v := range cv {
		if pset[keys.key(v)] {
			h.kept = append(h.kept, v)
		} else {
			h.mapv = append(h.mapv, v)
		}
	}
	h.setBrk = t.mm.GetMmStartBrk() != h.from.t.mm.GetMmStartBrk() || t.mm.GetMmBrk() != h.from.t.mm.GetMmBrk()
}

// inVMAs tells whether addr is in one of vmas.
func inVMAs(vmas []*pb.VmaEntry, addr uint64) bool {
	for _, v := range vmas {
		if v.GetStart() <= addr && addr < v.GetEnd() {
			return true
		}
	}
	return false
}

// readPages reads the pages pm uses from its pages file, into buf if it
// is big enough.
func readPages(dir string, pm *image.PageIndex, buf []byte) ([]byte, error) {
	if cap(buf) < int(pm.PagesSize) {
		buf = make([]byte, pm.PagesSize)
	}
	buf = buf[:pm.PagesSize]
	if pm.PagesSize == 0 {
		return buf, nil
	}
	path := image.Pages.Path(dir, uint64(pm.PagesID))
	fd, err := procfs.OpenNoPoll(path, unix.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open pages file: %w", err)
	}
	defer unix.Close(fd)
	if err := preadFull(fd, buf, 0); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return buf, nil
}

// pageAt is a page of a pagemap: its address and where it is in the
// pages data.
type pageAt struct {
	addr uint64
	off  int64
}

// presentPages lists the pages pm has in its pages file, in address order.
func presentPages(pm *image.PageIndex) []pageAt {
	var ps []pageAt
	for _, run := range pm.Runs {
		if run.Offset < 0 {
			continue
		}
		for i := uint64(0); i < run.NrPages; i++ {
			ps = append(ps, pageAt{run.Vaddr + i*pageSize, run.Offset + int64(i*pageSize)})
		}
	}
	return ps
}

// diffPages compares the pages of a child (cpm, with data cdata) with its
// parent's (ppm, pdata): what the child's memory, a copy of the parent's
// in the VMAs kept, fresh elsewhere, needs to be the child's.
func diffPages(ppm *image.PageIndex, pdata []byte, cpm *image.PageIndex, cdata []byte, kept []*pb.VmaEntry) *pageDiff {
	d := &pageDiff{}
	pp, cp := presentPages(ppm), presentPages(cpm)
	// The parent's pages outside the kept VMAs are gone with their VMA.
	pp = slices.DeleteFunc(pp, func(pg pageAt) bool { return !inVMAs(kept, pg.addr) })
	add := func(list *[]iovec, addr uint64) {
		if n := len(*list); n > 0 && (*list)[n-1].Base+(*list)[n-1].Len == addr {
			(*list)[n-1].Len += pageSize
			return
		}
		*list = append(*list, iovec{Base: addr, Len: pageSize})
	}
	write := func(c pageAt) {
		// A run goes on while both the addresses and the data do.
		if n := len(d.runs); n > 0 && d.runs[n-1].Base+d.runs[n-1].Len == c.addr && d.from[n-1]+int64(d.runs[n-1].Len) == c.off {
			d.runs[n-1].Len += pageSize
		} else {
			d.runs = append(d.runs, iovec{Base: c.addr, Len: pageSize})
			d.from = append(d.from, c.off)
		}
		d.size += pageSize
	}
	i, j := 0, 0
	for i < len(pp) || j < len(cp) {
		switch {
		case j == len(cp) || (i < len(pp) && pp[i].addr < cp[j].addr):
			add(&d.drops, pp[i].addr) // the parent's only
			i++
		case i == len(pp) || cp[j].addr < pp[i].addr:
			write(cp[j]) // the child's only
			j++
		default:
			if !inVMAs(kept, cp[j].addr) || !bytes.Equal(pdata[pp[i].off:pp[i].off+pageSize], cdata[cp[j].off:cp[j].off+pageSize]) {
				write(cp[j])
			}
			i++
			j++
		}
	}
	return d
}

// also adds the page at addr to d's runs when pm has it (in its pages
// data) and d does not write it yet: rewritten with its own contents, it
// is the heir's own copy before the heir runs.
func (d *pageDiff) also(pm *image.PageIndex, addr uint64) {
	for _, run := range d.runs {
		if run.Base <= addr && addr < run.Base+run.Len {
			return
		}
	}
	if s := pm.Lookup(addr, pageSize)[0]; s.Offset >= 0 {
		d.runs = append(d.runs, iovec{Base: addr, Len: pageSize})
		d.from = append(d.from, s.Offset)
		d.size += pageSize
	}
}

// planHeirs picks the heirs among procs, every task in image order, none
// created yet (CreateTasks).
func (r *restorer) planHeirs(procs []*proc) {
	if !r.heirsPossible() {
		return
	}
	byTask := map[*taskImage]*proc{}
	for _, pr := range procs {
		byTask[pr.t] = pr
	}
	keys := msgKeys{}
	ok := map[*taskImage]bool{}
	for _, pr := range procs {
		var why string
		ok[pr.t], why = r.heirOK(pr.t, keys)
		if !ok[pr.t] && pr.t.parent != nil {
			// Which comparison failed: otherwise a test that expects
			// heirs has nothing to say why it got none.
			r.log.Debug().Int("pid", pr.t.pid).Str("no_heir", why).Msg("restored the full way")
		}
	}
	// Heirs are forked after their parent's other children: only the
	// last children, each heir-able, are heirs, so that the parent's list
	// of children keeps the dumped order (wait() looks for exited
	// children in that order).
	last := map[*taskImage]bool{}
	for _, pr := range procs {
		c := pr.t.children
		for i := len(c) - 1; i >= 0 && ok[c[i]]; i-- {
			last[c[i]] = true
		}
	}
	for _, pr := range procs {
		if !last[pr.t] {
			if ok[pr.t] {
				r.log.Debug().Int("pid", pr.t.pid).Str("no_heir", "a later sibling is no heir").Msg("restored the full way")
			}
			continue
		}
		from := byTask[pr.t.parent]
		pr.heir = &heir{from: from}
		pr.heir.layout(pr.t, keys)
		from.heirs = append(from.heirs, pr)
	}
}

// cloneHeirs queues the forks of pr's heirs from its leader's puppet: they
// run with its next batch. Preconditions: on pr's tracer thread; pr's
// memory, files, fs info, signal actions and limits are restored (or
// queued before), nothing else of its per-thread state.
func (r *restorer) cloneHeirs(pr *proc, created func(*puppet)) error {
	lead := pr.threads[0]
	if len(pr.heirs) > 0 {
		// The trampoline's scratch area and batch table come empty in
		// each heir (its injections write what they use before they
		// run), the code page as it is: fork then leaves the parent's
		// pages there writable, and the parent's batch, which stores
		// each clone's result in its table, takes no copy-on-write
		// fault after every fork (some 20 us each here).
		tr := lead.tr
		if err := lead.queuef("wipe the trampoline's data on fork", unix.SYS_MADVISE, tr.scratch, tr.addr+tr.size-tr.scratch, madvWipeonfork); err != nil {
			return err
		}
	}
	// The pages the first heir has where its parent's differ go into
	// the parent for the forks, and the parent's own back after them.
	var back *pageDiff
	start := time.Now()
	if len(pr.heirs) > 1 {
		var err error
		if back, err = r.lendHeirPages(pr); err != nil {
			return err
		}
	}
	for _, h := range pr.heirs {
		c, err := lead.queueClone(0, uint64(unix.SIGCHLD), h.t.pid, created)
		if err != nil {
			return fmt.Errorf("create task %d: %w", h.t.pid, err)
		}
		h.threads = []*puppet{c}
		h.lane = pr.lane
	}
	if back == nil {
		return nil
	}
	// The forks run now, before anything else of the parent's (its rseq
	// registration writes its memory): then its own pages go back.
	lent := time.Since(start)
	if err := lead.runPending(); err != nil {
		return err
	}
	wb := time.Now()
	if err := lead.writeDiff(back, pr.ownPages); err != nil {
		return fmt.Errorf("restore task %d: its own pages after the forks: %w", pr.t.pid, err)
	}
	pr.ownPages = nil
	r.log.Debug().Int("pid", pr.t.pid).Int("pages", len(back.runs)).Dur("lend", lent).Dur("back", time.Since(wb)).
		Msg("the first heir's pages lent to the parent for the forks")
	return nil
}

// lendHeirPages writes into pr, before its heirs are forked, the pages in
// which its first heir differs from it (pages both have, in VMAs the heir
// keeps), and returns what writes pr's own back after the forks. Children
// forked from one parent mostly differ from it in the same pages with the
// same contents (the parent wrote them after the forks): fork gives every
// heir those pages, shared as in the dumped tree, where each heir would
// otherwise take a copy of its own (restoreHeir's writeDiff: some 10 us a
// page). pr.heirPages becomes the parent's memory at the forks, which the
// heirs' diffs start from.
func (r *restorer) lendHeirPages(pr *proc) (*pageDiff, error) {
	own, err := readPages(r.img.dir, pr.t.pagemap, nil)
	if err != nil {
		return nil, fmt.Errorf("restore task %d: its pages, for its heirs: %w", pr.t.pid, err)
	}
	first := pr.heirs[0]
	data, err := readPages(r.img.dir, first.t.pagemap, nil)
	if err != nil {
		return nil, fmt.Errorf("restore task %d: %w", first.t.pid, err)
	}
	lend, back := &pageDiff{}, &pageDiff{}
	base := own
	pp, cp := presentPages(pr.t.pagemap), presentPages(first.t.pagemap)
	for i, j := 0, 0; i < len(pp) && j < len(cp); {
		switch {
		case pp[i].addr < cp[j].addr:
			i++
		case cp[j].addr < pp[i].addr:
			j++
		default:
			po, co := pp[i].off, cp[j].off
			if inVMAs(first.heir.kept, pp[i].addr) && !bytes.Equal(own[po:po+pageSize], data[co:co+pageSize]) {
				if len(back.runs) == 0 {
					base = slices.Clone(own)
				}
				copy(base[po:po+pageSize], data[co:co+pageSize])
				lend.runs, lend.from = append(lend.runs, iovec{Base: pp[i].addr, Len: pageSize}), append(lend.from, co)
				back.runs, back.from = append(back.runs, iovec{Base: pp[i].addr, Len: pageSize}), append(back.from, po)
				lend.size += pageSize
				back.size += pageSize
			}
			i++
			j++
		}
	}
	pr.heirPages = base
	first.pagesRead = data
	if len(back.runs) == 0 {
		return nil, nil
	}
	if err := pr.threads[0].writeDiff(lend, data); err != nil {
		return nil, fmt.Errorf("restore task %d: its first heir's pages before the forks: %w", pr.t.pid, err)
	}
	pr.ownPages = own
	return back, nil
}

// restoreHeir restores what fork did not give heir pr: its own pages,
// timers, per-thread state, pending signals, credentials, registers.
// Preconditions: on its parent's tracer thread; cloneHeirs' batch ran.
func (r *restorer) restoreHeir(pr *proc, l *lane) (int64, error) {
	t := pr.t
	lead := pr.threads[0]
	lead.log = r.taskLog(t.pid)
	if err := lead.born(); err != nil {
		return 0, err
	}
	// The pages are compared here, on the tracer thread, through
	// buffers read once (the parent's) or reused (the heir's, l's):
	// fresh memory for every heir would cost a page fault per page.
	h := pr.heir
	from := h.from.t
	var err error
	if h.from.heirPages == nil {
		if h.from.heirPages, err = readPages(r.img.dir, from.pagemap, nil); err != nil {
			return 0, fmt.Errorf("restore task %d: pages of its parent: %w", t.pid, err)
		}
	}
	// The first heir's pages were read for lendHeirPages.
	buf := pr.pagesRead
	pr.pagesRead = nil
	if buf == nil {
		if l.heirBuf, err = readPages(r.img.dir, t.pagemap, l.heirBuf); err != nil {
			return 0, fmt.Errorf("restore task %d: %w", t.pid, err)
		}
		buf = l.heirBuf
	}
	d := diffPages(from.pagemap, h.from.heirPages, t.pagemap, buf, h.kept)
	// The kernel writes the rseq area once it is registered (below), on
	// the way back to user space: a copy-on-write fault in the heir,
	// some 60 us here (a fresh mm under shadow paging), where the copy
	// made by writeDiff's process_vm_writev, from outside and before
	// the heir runs, costs a few.
	if rs := t.cores[lead.vpid].GetThreadCore().GetRseqEntry(); rs != nil && rs.GetRseqAbiPointer() != 0 {
		d.also(t.pagemap, rs.GetRseqAbiPointer()&^(pageSize-1))
	}
	for _, u := range h.unmap {
		if err := lead.queuef(fmt.Sprintf("unmap the parent's VMA %#x-%#x", u.Base, u.Base+u.Len), unix.SYS_MUNMAP, u.Base, u.Len); err != nil {
			return 0, err
		}
	}
	// mapVMAs runs the unmaps and its mmaps; without VMAs of its own the
	// unmaps wait for the batch below: the pages written are all in VMAs
	// that exist by then, none in one that goes.
	var plans []vmaPlan
	if len(h.mapv) > 0 {
		if plans, err = lead.mapVMAs(r.img, nil, h.mapv, t.pagemap); err != nil {
			return 0, err
		}
	}
	if err := lead.writeDiff(d, buf); err != nil {
		return 0, err
	}
	for _, dr := range d.drops {
		if err := lead.queuef(fmt.Sprintf("drop the parent's pages %#x+%d", dr.Base, dr.Len), unix.SYS_MADVISE, dr.Base, dr.Len, unix.MADV_DONTNEED); err != nil {
			return 0, err
		}
	}
	if err := lead.protectVMAs(plans); err != nil {
		return 0, err
	}
	if err := lead.lockVMAs(t.mm.GetVmas()); err != nil {
		return 0, err
	}
	if h.setBrk {
		if err := lead.restoreMMNoExe(r.img, t.mm); err != nil {
			return 0, err
		}
	}
	tc := t.core().GetTc()
	pr.sigtrapIgn = sigtrapIgnOf(tc.GetSigactions())
	if err := lead.restoreItimers(tc.GetTimers()); err != nil {
		return 0, err
	}
	if err := lead.restorePosixTimers(tc.GetTimers().GetPosix()); err != nil {
		return 0, err
	}
	if tc.GetChildSubreaper() {
		if err := lead.queuef("set child subreaper", unix.SYS_PRCTL, unix.PR_SET_CHILD_SUBREAPER, 1); err != nil {
			return 0, err
		}
	}
	if err := lead.restoreLeader(t.cores[lead.vpid]); err != nil {
		return 0, err
	}
	if err := lead.queueSignals(tc.GetSignalsS(), true); err != nil {
		return 0, err
	}
	if err := lead.runPending(); err != nil {
		return 0, err
	}
	// Its parent's filters are installed after the fork (endProc): it
	// installs its own.
	if err := r.restoreSeccomp(pr); err != nil {
		return 0, err
	}
	c := t.cores[lead.vpid].GetThreadCore().GetCreds()
	if err := lead.restoreCreds(c, r.initial.creds); err != nil {
		return 0, err
	}
	// Fork copied the parent's flag, which its image has (heirOK).
	if err := lead.dumpableAfterCreds(t.mm, credsChange(c, r.initial.creds)); err != nil {
		return 0, err
	}
	if err := r.dropTrampoline(pr); err != nil {
		return 0, err
	}
	return d.size, nil
}

// writeDiff writes a heir's own pages (data: its pages data) with one
// process_vm_writev. Where a VMA is not writable (by its image, or widened
// for the fill: plans) that fails; those runs go through /proc/PID/mem,
// which may write read-only private pages, as a debugger does.
func (p *puppet) writeDiff(d *pageDiff, data []byte) error {
	if len(d.runs) == 0 {
		return nil
	}
	local := make([]unix.Iovec, 0, len(d.runs))
	remote := make([]unix.RemoteIovec, 0, len(d.runs))
	for i, run := range d.runs {
		local = append(local, unix.Iovec{Base: &data[d.from[i]], Len: run.Len})
		remote = append(remote, unix.RemoteIovec{Base: uintptr(run.Base), Len: int(run.Len)})
	}
	if len(d.runs) <= maxIovecs {
		if n, err := unix.ProcessVMWritev(p.pid, local, remote, 0); err == nil && int64(n) == d.size {
			return nil
		}
	}
	// One run at a time (writing a run again is harmless).
	for i, run := range d.runs {
		b := data[d.from[i] : d.from[i]+int64(run.Len)]
		err := writePlain(p.pid, run.Base, b)
		if err != nil {
			_, err = ptrace.WriteMem(p.pid, uintptr(run.Base), b)
		}
		if err != nil {
			return fmt.Errorf("write pages %#x+%d of task %d: %w", run.Base, run.Len, p.pid, err)
		}
	}
	return nil
}

// sigtrapIgnOf returns the SIGTRAP action when it is SIG_IGN, as
// restoreSigactions does for a task whose actions fork copied. The
// entries are for signals 1, 2, ... but SIGKILL and SIGSTOP, which come
// after SIGTRAP: its entry is the SIGTRAP-th.
func sigtrapIgnOf(sas []*pb.SaEntry) *kernelSigaction {
	if len(sas) < int(unix.SIGTRAP) {
		return nil
	}
	sa := sas[unix.SIGTRAP-1]
	if sa.GetSigaction() != sigIgn {
		return nil
	}
	return &kernelSigaction{Handler: sa.GetSigaction(), Flags: sa.GetFlags(), Restorer: sa.GetRestorer(), Mask: sa.GetMask()}
}

// createdFunc returns what tells Kill about each task created. Only the
// main tracer creates tasks (heirs' parents are never on the second lane,
// laneOK).
func (r *restorer) createdFunc() func(*puppet) {
	return func(c *puppet) { r.created = append(r.created, c.pid) }
}
