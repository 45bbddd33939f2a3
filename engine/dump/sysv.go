package dump

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/ns"
	"github.com/crtools/crtools/engine/proc"
)

// SysV shared memory attachments (shmat).
//
// The kernel backs a SysV segment with a shmem file named "SYSV<key>",
// whose inode number is the segment's id (ipc/shm.c sets it), so a task's
// maps show an attachment as "/SYSV0000abcd (deleted)" with inode = shmid.
// As CRIU's images, such a VMA is VMA_AREA_REGULAR|VMA_AREA_SYSVIPC,
// MAP_SHARED, with vma_entry.shmid the segment id and pgoff the offset in
// the segment; no page of it is saved with the task: the segment holds
// them. A segment of crtools' own IPC namespace lives on outside the
// dumped tree, and restore attaches it again (engine/restore/sysv.go); a
// segment of an IPC namespace dumped with the tree (-n ipc) is saved
// whole with the namespace (engine/ns/sysv.go) and recreated before the
// tasks attach it.
//
// What restore can rebuild is a whole attachment: shmat maps the whole
// segment at one address. A task may have split it (mprotect: several
// VMAs, each with its protection, which restore sets again) but not have
// unmapped or moved part of it; such a task is refused.

// sysvAttach is one attachment of a SysV segment seen in a task's maps:
// its VMAs from the attach address on.
type sysvAttach struct {
	pid        int
	shmid      uint64
	key        uint32
	start, end uint64
	size       uint64 // the segment's size (st_size of its file)
	vmas       int    // its VMAs (each counts in the segment's shm_nattch)
}

// sysvKey parses the key out of a SysV mapping's name, "/SYSV%08x
// (deleted)"; ok false if path is not such a name.
func sysvKey(path string) (uint32, bool) {
	rest, ok := strings.CutPrefix(path, "/SYSV")
	if !ok {
		return 0, false
	}
	hex, ok := strings.CutSuffix(rest, " (deleted)")
	if !ok || len(hex) != 8 {
		return 0, false
	}
	k, err := strconv.ParseUint(hex, 16, 32)
	if err != nil {
		return 0, false
	}
	return uint32(k), true
}

// addSysV records mapping m of pid, a SysV attachment or a part of one
// (the VMAs of one attachment follow each other in the maps, and atts
// ends with the attachment the previous such mapping belonged to).
func addSysV(atts []sysvAttach, pid int, m *proc.Mapping, key uint32) ([]sysvAttach, error) {
	if m.Flag("ht") {
		return nil, fmt.Errorf("pid %d attaches a SysV shared memory segment on huge pages (SHM_HUGETLB, id %d) at %#x: %w", pid, m.Inode, m.Start, engine.ErrNotSupported)
	}
	if n := len(atts); n > 0 {
		a := &atts[n-1]
		if a.pid == pid && a.shmid == m.Inode && a.end == m.Start && m.Offset == a.end-a.start {
			a.end = m.End
			a.vmas++
			return atts, nil
		}
	}
	if m.Offset != 0 {
		return nil, fmt.Errorf("pid %d maps SysV shared memory segment %d (key %#x) from offset %#x at %#x: the start of the attachment was unmapped or moved; "+
			"restore attaches whole segments only: %w", pid, m.Inode, key, m.Offset, m.Start, engine.ErrNotSupported)
	}
	// The file behind the mapping: its size is the segment's.
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End), &st); err != nil {
		return nil, fmt.Errorf("stat SysV shared memory segment %d mapped by pid %d at %#x: %w", m.Inode, pid, m.Start, err)
	}
	return append(atts, sysvAttach{pid: pid, shmid: m.Inode, key: key, start: m.Start, end: m.End, size: uint64(st.Size), vmas: 1}), nil
}

// checkSysVWhole refuses an attachment that does not cover its whole
// segment (a part unmapped).
func checkSysVWhole(atts []sysvAttach) error {
	for _, a := range atts {
		if want := (a.size + pageSize - 1) &^ (pageSize - 1); a.end-a.start != want {
			return fmt.Errorf("pid %d maps %d bytes of SysV shared memory segment %d (key %#x, %d bytes) at %#x: part of the attachment was unmapped; "+
				"restore attaches whole segments only: %w", a.pid, a.end-a.start, a.shmid, a.key, a.size, a.start, engine.ErrNotSupported)
		}
	}
	return nil
}

// shmDest is SHM_DEST of shm_perm.mode: the segment was removed
// (IPC_RMID) and goes away with its last detach.
const shmDest = 0o1000

// checkSysVOwn checks the attachments of tasks in crtools' own IPC
// namespace against the segments there: each must exist with the key and
// size seen, and must not be removed already (IPC_RMID): it would die
// with the dumped tree, and nothing could attach it again.
//
// With kernel/shm_rmid_forced set, the kernel destroys a segment at its
// last detach: one that only the tree attaches (its shm_nattch, which
// counts VMAs, no more than the tree's VMAs of it) would go with a
// killed tree too, and is refused the same way.
func checkSysVOwn(atts []sysvAttach) error {
	if len(atts) == 0 {
		return nil
	}
	forced, err := os.ReadFile("/proc/sys/kernel/shm_rmid_forced")
	if err != nil {
		return fmt.Errorf("read sysctl kernel/shm_rmid_forced: %w", err)
	}
	treeVMAs := map[uint64]int{}
	for _, a := range atts {
		treeVMAs[a.shmid] += a.vmas
	}
	for _, a := range atts {
		var ds unix.SysvShmDesc
		if _, err := unix.SysvShmCtl(int(a.shmid), unix.IPC_STAT, &ds); err != nil {
			return fmt.Errorf("read SysV shared memory segment %d (key %#x) attached by pid %d at %#x: %w", a.shmid, a.key, a.pid, a.start, err)
		}
		if ds.Perm.Mode&shmDest != 0 {
			return fmt.Errorf("pid %d attaches SysV shared memory segment %d (key %#x) at %#x, which was removed (IPC_RMID) and lives only while attached: "+
				"it would go with the dumped tree, and restore could not attach it again: %w", a.pid, a.shmid, a.key, a.start, engine.ErrNotSupported)
		}
		if strings.TrimSpace(string(forced)) != "0" && ds.Nattch <= uint64(treeVMAs[a.shmid]) {
			return fmt.Errorf("pid %d attaches SysV shared memory segment %d (key %#x) at %#x, which only the dumped tree attaches, in an ipc namespace with kernel/shm_rmid_forced set: "+
				"it would go with the dumped tree at its last detach, and restore could not attach it again: %w", a.pid, a.shmid, a.key, a.start, engine.ErrNotSupported)
		}
		if uint32(ds.Perm.Key) != a.key {
			return fmt.Errorf("SysV shared memory segment %d attached by pid %d at %#x has key %#x, its mapping says %#x", a.shmid, a.pid, a.start, uint32(ds.Perm.Key), a.key)
		}
		if uint64(ds.Segsz) != a.size {
			return fmt.Errorf("SysV shared memory segment %d attached by pid %d at %#x has %d bytes, its mapping %d", a.shmid, a.pid, a.start, ds.Segsz, a.size)
		}
	}
	return nil
}

// addSysVAttachments records the attachments of a task.
func (s *dumpState) addSysVAttachments(atts []sysvAttach) {
	s.sysv = append(s.sysv, atts...)
}

// isSysV tells a SysV shared memory mapping by its name.
func isSysV(m *proc.Mapping) bool {
	_, ok := sysvKey(m.Path)
	return ok
}

// addSysVSegments takes the SysV segments of the dumped IPC namespace
// (engine/ns) as shmem objects whose pages go, as CRIU's, into
// pagemap-shmem-<shmid>.img (the segment's inode number is its id), and
// checks the tasks' attachments against them.
func (s *dumpState) addSysVSegments(segs []ns.SysVShm, root int) error {
	if s.shmem == nil {
		s.shmem = map[uint64]*shmemObj{}
	}
	for i, g := range segs {
		id := uint64(g.ID)
		if o := s.shmem[id]; o != nil {
			// Shared anonymous memory whose inode number is the id of
			// a segment: both would have pagemap-shmem-<id>.img. The
			// files not taken are closed here (Collect's error path
			// closes those of shmemOrder).
			for _, h := range segs[i:] {
				h.File.Close()
			}
			return fmt.Errorf("SysV shared memory segment %d and shared memory mapped by pid %d have the same number, which names both pagemap-shmem-%d.img: %w",
				id, o.pid, id, engine.ErrNotSupported)
		}
		obj := &shmemObj{ino: id, size: (g.Size + pageSize - 1) &^ (pageSize - 1), pid: root, file: g.File}
		s.shmem[id] = obj
		s.shmemOrder = append(s.shmemOrder, obj)
	}
	// The key too: a task that left an IPC namespace (unshare, setns)
	// keeps what it attached there, and another segment of the same
	// number may be in its new one. (A segment's file is named after
	// its key at creation; a segment removed with IPC_RMID has the
	// private key since, and its number is all there is to match.)
	for _, a := range s.sysv {
		ok := false
		for _, g := range segs {
			ok = ok || (uint64(g.ID) == a.shmid && (g.Key == a.key || g.Removed) && g.Size == a.size)
		}
		if !ok {
			return fmt.Errorf("pid %d attaches SysV shared memory segment %d (key %#x, %d bytes) at %#x, which its ipc namespace does not hold (attached in another ipc namespace?): %w",
				a.pid, a.shmid, a.key, a.size, a.start, engine.ErrNotSupported)
		}
	}
	return nil
}

// closeShmemFiles closes the files of shmem objects that came open (SysV
// segments of a dumped IPC namespace); writeShmemPages closes each once
// its pages are written, and a second close does nothing.
func (s *dumpState) closeShmemFiles() {
	for _, obj := range s.shmemOrder {
		if obj.file != nil {
			obj.file.Close()
		}
	}
}
