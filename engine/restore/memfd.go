package restore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
)

// memfds (memfd.img): crtools creates each memfd object once, with its
// name, size, owner, mode and contents, and every task gets it with
// pidfd_getfd from crtools: an open file description per MEMFD file entry
// of a descriptor (one offset for every descriptor that shared it) and,
// for each mapping of it (a file VMA whose shmid is a MEMFD entry, as
// CRIU writes them), a temporary descriptor to mmap, so that fds and
// mappings in every task are one object again, shown as /memfd:NAME in
// maps. Its contents are written by crtools before any task maps it.
// Seals are added last, once every task has mapped it (F_SEAL_WRITE
// would refuse the writable mappings, and F_SEAL_GROW the ftruncate).

// memfdCopyChunk is how much of a memfd's contents crtools copies at once.
const memfdCopyChunk = 1 << 20

// memfdSet is the memfds of an image set and crtools' own files on them.
type memfdSet struct {
	byInode map[uint64]*pb.MemfdInodeEntry // by inode_id
	objs    map[uint64]*os.File            // created objects, by inode_id
	descs   map[uint32]*os.File            // open file descriptions, by file id
}

// loadMemfds reads memfd.img and the pages of every memfd object with r,
// as load reads the other images. Both are optional: a missing one is
// ErrNotExist (no stat first).
func (img *imageSet) loadMemfds(r *imageReader) error {
	es, err := r.readFile(image.MemfdInode, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read memfds: %w", err)
	}
	ms := &memfdSet{byInode: map[uint64]*pb.MemfdInodeEntry{},
		objs: map[uint64]*os.File{}, descs: map[uint32]*os.File{}}
	for _, e := range es {
		m := e.Msg.(*pb.MemfdInodeEntry)
		if m.GetHugetlbFlag() != 0 {
			return fmt.Errorf("read memfds: memfd %q is a hugetlb memfd, which crtools cannot restore", m.GetName())
		}
		ms.byInode[m.GetInodeId()] = m
		if err := img.loadShmem(r, uint64(m.GetShmid())); err != nil { // load.go
			return fmt.Errorf("read pages of memfd %q: %w", m.GetName(), err)
		}
	}
	img.memfds = ms
	return nil
}

// memfdObject returns crtools' descriptor on the memfd object, creating
// and filling it on first use.
func (img *imageSet) memfdObject(m *pb.MemfdInodeEntry) (*os.File, error) {
	ms := img.memfds
	if f := ms.objs[m.GetInodeId()]; f != nil {
		return f, nil
	}
	// Sealing is always allowed at creation: the dumped seals (which
	// include F_SEAL_SEAL for a memfd made without MFD_ALLOW_SEALING)
	// are added at the end.
	fd, err := unix.MemfdCreate(m.GetName(), unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("create memfd %q: %w", m.GetName(), err)
	}
	f := os.NewFile(uintptr(fd), "memfd:"+m.GetName())
	if err := img.fillMemfd(f, m); err != nil {
		f.Close()
		return nil, err
	}
	ms.objs[m.GetInodeId()] = f
	return f, nil
}

// fillMemfd gives the new memfd its size, contents, mode and owner.
func (img *imageSet) fillMemfd(f *os.File, m *pb.MemfdInodeEntry) error {
	name := m.GetName()
	size := int64(m.GetSize())
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("size memfd %q to %d bytes: %w", name, size, err)
	}
	if pm := img.shmem[uint64(m.GetShmid())]; pm != nil {
		pages, err := os.Open(image.Pages.Path(img.dir, uint64(pm.PagesID)))
		if err != nil {
			return fmt.Errorf("open pages of memfd %q: %w", name, err)
		}
		defer pages.Close()
		var buf []byte
		for _, r := range pm.Runs {
			if r.Flags&image.PEParent != 0 {
				return fmt.Errorf("pages of memfd %q are in a parent images directory: incremental images are not supported yet", name)
			}
			if r.Offset < 0 || int64(r.Vaddr) >= size {
				continue
			}
			// The last page may reach past EOF: writing it whole
			// would grow the file.
			n := min(int64(r.NrPages*pageSize), size-int64(r.Vaddr))
			// In pieces: the buffer stays small whatever the images say.
			for done := int64(0); done < n; {
				k := min(n-done, memfdCopyChunk)
				if buf == nil {
					buf = make([]byte, memfdCopyChunk)
				}
				got, err := pages.ReadAt(buf[:k], r.Offset+done)
				if err != nil && !(errors.Is(err, io.EOF) && got == int(k)) {
					return fmt.Errorf("read pages of memfd %q at %d: %w", name, r.Offset+done, err)
				}
				if _, err := f.WriteAt(buf[:k], int64(r.Vaddr)+done); err != nil {
					return fmt.Errorf("write memfd %q at %d: %w", name, int64(r.Vaddr)+done, err)
				}
				done += k
			}
		}
	}
	if m.Mode != nil {
		if err := unix.Fchmod(int(f.Fd()), m.GetMode()&0o7777); err != nil {
			return fmt.Errorf("set mode of memfd %q to %o: %w", name, m.GetMode()&0o7777, err)
		}
	}
	if err := f.Chown(int(m.GetUid()), int(m.GetGid())); err != nil {
		return fmt.Errorf("set owner of memfd %q: %w", name, err)
	}
	return nil
}

// memfdDesc returns crtools' copy of the open file description of a MEMFD
// file entry: the object opened again (a new description) with the dumped
// flags and offset.
func (img *imageSet) memfdDesc(fe *pb.MemfdFileEntry) (*os.File, error) {
	ms := img.memfds
	if ms == nil {
		return nil, fmt.Errorf("memfd file %d: the images have no memfd.img", fe.GetId())
	}
	if f := ms.descs[fe.GetId()]; f != nil {
		return f, nil
	}
	m := ms.byInode[uint64(fe.GetInodeId())]
	if m == nil {
		return nil, fmt.Errorf("memfd file %d: inode %d is not in memfd.img", fe.GetId(), fe.GetInodeId())
	}
	obj, err := img.memfdObject(m)
	if err != nil {
		return nil, err
	}
	flags := int(fe.GetFlags()) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_NOCTTY)
	path := fmt.Sprintf("/proc/self/fd/%d", obj.Fd())
	f, err := os.OpenFile(path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open memfd %q again with flags %#x: %w", m.GetName(), flags, err)
	}
	if _, err := f.Seek(int64(fe.GetPos()), io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("seek memfd %q to %d: %w", m.GetName(), fe.GetPos(), err)
	}
	ms.descs[fe.GetId()] = f
	return f, nil
}

// takeMemfd gives the puppet the open file description of a MEMFD entry.
func (p *puppet) takeMemfd(img *imageSet, fe *pb.MemfdFileEntry) (uint64, error) {
	f, err := img.memfdDesc(fe)
	if err != nil {
		return 0, err
	}
	return p.takeFile(f)
}

// sealMemfds adds the dumped seals once every task has mapped its memfds.
func (img *imageSet) sealMemfds() error {
	if img == nil || img.memfds == nil {
		return nil
	}
	for id, f := range img.memfds.objs {
		m := img.memfds.byInode[id]
		if seals := m.GetSeals(); seals != 0 {
			if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, int(seals)); err != nil {
				return fmt.Errorf("seal memfd %q with %#x: %w", m.GetName(), seals, err)
			}
		}
	}
	return nil
}

// closeMemfds drops crtools' files on the memfds (the tasks hold theirs).
func (img *imageSet) closeMemfds() {
	if img == nil || img.memfds == nil {
		return
	}
	for id, f := range img.memfds.objs {
		f.Close()
		delete(img.memfds.objs, id)
	}
	for id, f := range img.memfds.descs {
		f.Close()
		delete(img.memfds.descs, id)
	}
}
