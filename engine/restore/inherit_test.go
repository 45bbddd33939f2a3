package restore

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
)

// TestDiffPages: what a heir's memory, a copy of its parent's in the VMAs
// kept, needs: its pages that differ or that the parent lacks (also in a
// VMA of its own), and a drop of the parent's pages it lacks; the
// parent's pages outside the kept VMAs need nothing (their VMA goes).
func TestDiffPages(t *testing.T) {
	page := func(b byte) []byte { return bytes.Repeat([]byte{b}, pageSize) }
	const a = 0x10000
	kept := []*pb.VmaEntry{{Start: u64(a), End: u64(a + 8*pageSize)}}
	// Parent: pages 0-3 of the kept VMA, and one in a VMA it alone has.
	ppm := &image.PageIndex{Runs: []image.PageRun{
		{Vaddr: a, NrPages: 4, Offset: 0, Flags: image.PEPresent},
		{Vaddr: 0x90000, NrPages: 1, Offset: 4 * pageSize, Flags: image.PEPresent},
	}}
	pdata := bytes.Join([][]byte{page(1), page(2), page(3), page(4), page(9)}, nil)
	// Heir: page 0 the same, page 1 its own, pages 2-3 not at all (the
	// parent's dropped), page 5 only it has, and one page in a VMA of
	// its own.
	cpm := &image.PageIndex{Runs: []image.PageRun{
		{Vaddr: a, NrPages: 2, Offset: 0, Flags: image.PEPresent},
		{Vaddr: a + 5*pageSize, NrPages: 1, Offset: 2 * pageSize, Flags: image.PEPresent},
		{Vaddr: 0xa0000, NrPages: 1, Offset: 3 * pageSize, Flags: image.PEPresent},
	}}
	cdata := bytes.Join([][]byte{page(1), page(7), page(5), page(6)}, nil)
	d := diffPages(ppm, pdata, cpm, cdata, kept)
	wantRuns := []iovec{{a + pageSize, pageSize}, {a + 5*pageSize, pageSize}, {0xa0000, pageSize}}
	wantFrom := []int64{pageSize, 2 * pageSize, 3 * pageSize}
	if len(d.runs) != len(wantRuns) {
		t.Fatalf("runs %v, want %v", d.runs, wantRuns)
	}
	for i := range wantRuns {
		if d.runs[i] != wantRuns[i] || d.from[i] != wantFrom[i] {
			t.Errorf("run %d: %v from %d, want %v from %d", i, d.runs[i], d.from[i], wantRuns[i], wantFrom[i])
		}
	}
	if d.size != 3*pageSize {
		t.Errorf("size %d, want %d", d.size, 3*pageSize)
	}
	if want := []iovec{{a + 2*pageSize, 2 * pageSize}}; len(d.drops) != 1 || d.drops[0] != want[0] {
		t.Errorf("drops %v, want %v", d.drops, want)
	}
}

// TestDiffPagesAlso: also adds a page the heir has and the diff does not
// write (page 0, the same as the parent's), with its place in the heir's
// pages data, once; a page the diff writes already or the heir does not
// have is left alone.
func TestDiffPagesAlso(t *testing.T) {
	const a = 0x10000
	cpm := &image.PageIndex{Runs: []image.PageRun{
		{Vaddr: a, NrPages: 2, Offset: 0, Flags: image.PEPresent},
		{Vaddr: a + 4*pageSize, NrPages: 1, Offset: -1, Flags: image.PEParent},
	}}
	d := &pageDiff{runs: []iovec{{a + pageSize, pageSize}}, from: []int64{pageSize}, size: pageSize}
	d.also(cpm, a+pageSize)   // written already
	d.also(cpm, a+4*pageSize) // not in the heir's pages data
	d.also(cpm, a+8*pageSize) // not the heir's at all
	if len(d.runs) != 1 || d.size != pageSize {
		t.Fatalf("runs %v (size %d), want the one run only", d.runs, d.size)
	}
	d.also(cpm, a)
	d.also(cpm, a)
	if len(d.runs) != 2 || d.runs[1] != (iovec{a, pageSize}) || d.from[1] != 0 || d.size != 2*pageSize {
		t.Errorf("runs %v from %v (size %d), want page %#x from 0 added once", d.runs, d.from, d.size, a)
	}
}

// heirPair is a parent (pid 10, threads tids) and its child (pid 20) whose
// images make the child a heir: alive, in the parent's session and group
// (1), nothing shared, one memory image for both.
func heirPair(tids ...int) (*restorer, *taskImage) {
	alive := func() *pb.CoreEntry {
		return &pb.CoreEntry{Tc: &pb.TaskCoreEntry{TaskState: proto.Uint32(taskAlive)}, ThreadCore: &pb.ThreadCoreEntry{}, ThreadInfo: &pb.ThreadInfoX86{}}
	}
	ids := func(n uint32) *pb.TaskKobjIdsEntry {
		return &pb.TaskKobjIdsEntry{VmId: proto.Uint32(n), FilesId: proto.Uint32(n), FsId: proto.Uint32(n), SighandId: proto.Uint32(n)}
	}
	mm := &pb.MmEntry{Vmas: []*pb.VmaEntry{{Start: u64(0x10000), End: u64(0x20000), Status: proto.Uint32(vmaAreaRegular)}}}
	p := &taskImage{pid: 10, pgid: 1, sid: 1, tids: tids, cores: map[int]*pb.CoreEntry{}, ids: ids(1), mm: mm, pagemap: &image.PageIndex{}}
	for _, tid := range tids {
		p.cores[tid] = alive()
	}
	c := &taskImage{pid: 20, ppid: 10, pgid: 1, sid: 1, tids: []int{20}, cores: map[int]*pb.CoreEntry{20: alive()}, ids: ids(2), mm: mm,
		pagemap: &image.PageIndex{}, parent: p}
	p.children = []*taskImage{c}
	return &restorer{img: &imageSet{tasks: []*taskImage{p, c}}}, c
}

// TestHeirOKParentThreadRseq: a parent's other threads register their
// rseq areas before the heirs are forked (restoreOtherThreads, while the
// pages are copied), and the kernel then writes their cpu fields into
// the parent's memory, where the heir's copy would keep them instead of
// the bytes its image has: no heir then. A single-threaded parent, or
// one whose other threads have no rseq area, still has heirs.
func TestHeirOKParentThreadRseq(t *testing.T) {
	r, c := heirPair(10)
	if ok, why := r.heirOK(c, msgKeys{}); !ok || why != "" {
		t.Fatalf("child of a single-threaded parent is no heir (%q)", why)
	}
	r, c = heirPair(10, 11)
	if ok, why := r.heirOK(c, msgKeys{}); !ok {
		t.Fatalf("child of a parent whose other thread has no rseq area is no heir (%q)", why)
	}
	c.parent.cores[10].ThreadCore.RseqEntry = &pb.RseqEntry{RseqAbiPointer: u64(0x10020), RseqAbiSize: proto.Uint32(32), Signature: proto.Uint32(0x53053053)}
	if ok, why := r.heirOK(c, msgKeys{}); !ok {
		t.Fatalf("child of a parent whose leader (registered after the fork) has an rseq area is no heir (%q)", why)
	}
	c.parent.cores[11].ThreadCore.RseqEntry = &pb.RseqEntry{RseqAbiPointer: u64(0x10040), RseqAbiSize: proto.Uint32(32), Signature: proto.Uint32(0x53053053)}
	if ok, why := r.heirOK(c, msgKeys{}); ok || why != "a thread of the parent has an rseq area" {
		t.Errorf("child of a parent whose other thread has an rseq area: heir %v, reason %q", ok, why)
	}
}

// TestHeirOKParentLeaderExited: the child of a process whose main thread
// had exited is no heir: heirs are forked by their parent's leader, which
// exits again (exitLeader) once every thread exists.
func TestHeirOKParentLeaderExited(t *testing.T) {
	r, c := heirPair(10, 11)
	if ok, _ := r.heirOK(c, msgKeys{}); !ok {
		t.Fatal("child of a two-thread parent is no heir")
	}
	c.parent.cores[10].ThreadInfo = nil // an exited leader's core
	if !c.parent.leaderExited() {
		t.Fatal("a leader core without registers is not an exited leader")
	}
	if ok, why := r.heirOK(c, msgKeys{}); ok || why != "parent's main thread has exited" {
		t.Errorf("child of a parent whose main thread exited: heir %v, reason %q", ok, why)
	}
}

// TestPlanHeirsOrder: heirs are forked after every other child of their
// parent, so only children none of whose later siblings is restored the
// full way are heirs: a parent's list of children keeps the dumped order,
// in which wait() finds them (the first of two exited children in the
// list is reaped first).
func TestPlanHeirsOrder(t *testing.T) {
	r, c := heirPair(10)
	p := c.parent
	for i, tids := range [][]int{{21, 31}, {22}} {
		o := &taskImage{pid: tids[0], ppid: 10, pgid: 1, sid: 1, tids: tids, cores: map[int]*pb.CoreEntry{}, mm: p.mm, pagemap: &image.PageIndex{}, parent: p,
			ids: &pb.TaskKobjIdsEntry{VmId: proto.Uint32(uint32(3 + i)), FilesId: proto.Uint32(uint32(3 + i)), FsId: proto.Uint32(uint32(3 + i)), SighandId: proto.Uint32(uint32(3 + i))}}
		for _, tid := range tids {
			o.cores[tid] = &pb.CoreEntry{Tc: &pb.TaskCoreEntry{TaskState: proto.Uint32(taskAlive)}, ThreadCore: &pb.ThreadCoreEntry{}, ThreadInfo: &pb.ThreadInfoX86{}}
		}
		p.children = append(p.children, o)
		r.img.tasks = append(r.img.tasks, o)
	}
	var procs []*proc
	for _, ti := range r.img.tasks {
		procs = append(procs, &proc{t: ti})
	}
	var logBuf bytes.Buffer
	r.log = zerolog.New(&logBuf).Level(zerolog.DebugLevel)
	r.planHeirs(procs)
	// Each child that is no heir says why, once.
	for _, want := range []string{
		`{"level":"debug","pid":20,"no_heir":"a later sibling is no heir","message":"restored the full way"}`,
		`{"level":"debug","pid":21,"no_heir":"not a live single-threaded leaf with a live parent","message":"restored the full way"}`,
	} {
		if n := strings.Count(logBuf.String(), want+"\n"); n != 1 {
			t.Errorf("log has %d times %s, want once; log:\n%s", n, want, logBuf.String())
		}
	}
	if n := strings.Count(logBuf.String(), "no_heir"); n != 2 {
		t.Errorf("log has %d no_heir lines, want 2 (20, 21); log:\n%s", n, logBuf.String())
	}
	// 20 is heir-able but 21 after it is not (two threads); 22 is last.
	for i, want := range []bool{false, false, false, true} {
		if got := procs[i].heir != nil; got != want {
			t.Errorf("task %d: heir %v, want %v", procs[i].t.pid, got, want)
		}
	}
	if len(procs[0].heirs) != 1 || procs[0].heirs[0] != procs[3] {
		t.Errorf("heirs of the parent: %d, want task 22 only", len(procs[0].heirs))
	}
}

// TestSigtrapIgnOf: the SIGTRAP entry of an image's actions (signals 1,
// 2, ... but SIGKILL and SIGSTOP) when it is SIG_IGN, else nothing.
func TestSigtrapIgnOf(t *testing.T) {
	sas := make([]*pb.SaEntry, 62)
	for i := range sas {
		sas[i] = &pb.SaEntry{Sigaction: u64(0), Flags: u64(uint64(i)), Restorer: u64(0), Mask: u64(0)}
	}
	if got := sigtrapIgnOf(sas); got != nil {
		t.Errorf("default actions: %+v, want none", got)
	}
	sas[4].Sigaction = u64(sigIgn) // signal 5, SIGTRAP
	if got := sigtrapIgnOf(sas); got == nil || got.Handler != sigIgn || got.Flags != 4 {
		t.Errorf("ignored SIGTRAP: %+v, want SIG_IGN with flags 4", got)
	}
	if got := sigtrapIgnOf(sas[:4]); got != nil {
		t.Errorf("4 entries: %+v, want none", got)
	}
}

// TestCheckLeadersExitedPdeath: load refuses a process whose main thread
// had exited with a child that has a parent-death signal (the restored
// leader, the child's creator, exits again and would send it); without
// the signal, or with a leader that did not exit, it is fine.
func TestCheckLeadersExitedPdeath(t *testing.T) {
	r, c := heirPair(10, 11)
	if err := r.img.checkLeadersExited(); err != nil {
		t.Fatalf("a parent whose leader runs: %v", err)
	}
	c.cores[20].ThreadCore.PdeathSig = proto.Uint32(uint32(9))
	if err := r.img.checkLeadersExited(); err != nil {
		t.Fatalf("a parent whose leader runs, a child with a parent-death signal: %v", err)
	}
	c.parent.cores[10].ThreadInfo = nil
	err := r.img.checkLeadersExited()
	if err == nil || !strings.Contains(err.Error(), "parent-death signal 9") || !strings.Contains(err.Error(), "child 20") {
		t.Fatalf("a parent whose main thread exited, a child with a parent-death signal: %v", err)
	}
	c.cores[20].ThreadCore.PdeathSig = nil
	if err := r.img.checkLeadersExited(); err != nil {
		t.Fatalf("a parent whose main thread exited, a child without a parent-death signal: %v", err)
	}
}
