package restore

import (
	"fmt"
	"os"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image/pb"
	procfs "github.com/crtools/crtools/engine/proc"
)

// TestMapAnonRuns: mapVMAs maps runs of adjacent private anonymous VMAs
// with one mmap and an mprotect of each VMA whose protection differs
// (anonRun), in fewer calls than one mmap each, and the puppet ends up
// with exactly the image's VMAs: thread stacks between guard pages, a
// MAP_NORESERVE neighbour that starts a run of its own, a VMA after a gap,
// and a read-only VMA between writable ones.
func TestMapAnonRuns(t *testing.T) {
	requireRoot(t)
	const base = 0x20000000
	const pg = pageSize
	anon := uint32(unix.MAP_PRIVATE | unix.MAP_ANONYMOUS)
	none, rw, ro := uint32(unix.PROT_NONE), uint32(unix.PROT_READ|unix.PROT_WRITE), uint32(unix.PROT_READ)
	type vma struct {
		start, end  uint64 // pages from base
		prot, flags uint32
	}
	vmas := []vma{
		// Three threads' stacks, each below a guard page.
		{0, 1, none, anon}, {1, 9, rw, anon}, {9, 10, none, anon}, {10, 18, rw, anon}, {18, 19, none, anon}, {19, 27, rw, anon},
		// A MAP_NORESERVE neighbour: other flags, another run.
		{27, 30, rw, anon | unix.MAP_NORESERVE},
		// After a gap: read-only between writable.
		{40, 42, rw, anon}, {42, 43, ro, anon}, {43, 45, rw, anon},
	}
	var entries []*pb.VmaEntry
	for _, v := range vmas {
		entries = append(entries, &pb.VmaEntry{Start: u64(base + v.start*pg), End: u64(base + v.end*pg), Prot: u32(v.prot),
			Flags: u32(v.flags), Status: u32(vmaAreaRegular | vmaAnonPrivate)})
	}
	dir := t.TempDir()
	pid := freePid(t)
	task := &taskImage{pid: pid, tids: []int{pid}, mm: &pb.MmEntry{Vmas: entries}}
	r := &restorer{opts: engine.RestoreOptions{ImagesDir: dir}, log: zerolog.New(os.Stderr),
		img: &imageSet{dir: dir, tasks: []*taskImage{task}, files: map[uint32]*pb.FileEntry{}}}
	if err := r.CreateTasks(t.Context()); err != nil {
		r.Close()
		t.Fatalf("CreateTasks: %v", err)
	}
	defer r.Close()
	p := r.procs[0].threads[0]
	calls := 0
	err := r.tr.Do(func() error {
		if err := p.unmapPuppet(); err != nil {
			return err
		}
		if err := p.runPending(); err != nil {
			return err
		}
		before := p.calls
		if _, err := p.mapVMAs(r.img, newShmState(), entries, nil); err != nil {
			return err
		}
		calls = p.calls - before
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Stacks: 1 mmap + 3 mprotects; the NORESERVE VMA: 1 mmap; after the
	// gap: 1 mmap + 1 mprotect. 10 VMAs, 7 calls.
	if calls != 7 {
		t.Errorf("mapVMAs made %d calls for %d VMAs, want 7", calls, len(vmas))
	}
	b, err := procfs.ReadFile(fmt.Sprintf("/proc/%d/maps", p.pid))
	if err != nil {
		t.Fatal(err)
	}
	maps, err := procfs.ParseMaps(b)
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint64]string{}
	for _, m := range maps {
		if m.Start >= base && m.End <= base+100*pg {
			perms := []byte("---p")
			if m.Read {
				perms[0] = 'r'
			}
			if m.Write {
				perms[1] = 'w'
			}
			if m.Exec {
				perms[2] = 'x'
			}
			if m.Shared {
				perms[3] = 's'
			}
			got[m.Start] = fmt.Sprintf("%#x-%#x %s", m.Start, m.End, perms)
		}
	}
	if len(got) != len(vmas) {
		t.Errorf("%d mappings in the range, want %d: %v", len(got), len(vmas), got)
	}
	for _, v := range vmas {
		perms := "---p"
		switch v.prot {
		case rw:
			perms = "rw-p"
		case ro:
			perms = "r--p"
		}
		want := fmt.Sprintf("%#x-%#x %s", base+v.start*pg, base+v.end*pg, perms)
		if got[base+v.start*pg] != want {
			t.Errorf("mapping at %#x: %q, want %q", base+v.start*pg, got[base+v.start*pg], want)
		}
	}
}
