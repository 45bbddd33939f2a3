package dump

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/files"
	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/proc"
)

// memfds: one memfd inode is one object however many descriptors (in
// however many tasks) have it open and however many VMAs map it shared.
// It is a shmem object like shared anonymous memory (mem.go): its
// contents go once into pagemap-shmem-<ino>.img, and memfd.img holds one
// memfd_inode_entry per object (name, size, seals, owner, mode), with
// shmid = ino to find the pages and the VMAs. Each open file description
// is a MEMFD file entry (flags, offset) pointing at its inode entry.

// hugetlbfsMagic is HUGETLBFS_MAGIC (linux/magic.h).
const hugetlbfsMagic = 0x958458f6

// memfdName turns the link text "/memfd:NAME (deleted)" into NAME.
func memfdName(link string) string {
	return strings.TrimSuffix(strings.TrimPrefix(link, "/memfd:"), " (deleted)")
}

// memfdInode fills obj.inode the first time the memfd is seen: it opens
// the object again through path (an fd or map_files link of a task of the
// tree) to read its size, owner, mode and seals.
func (s *dumpState) memfdInode(obj *shmemObj, path, link, what string) error {
	if obj.inode != nil {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open memfd %q of %s: %w", memfdName(link), what, err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("stat memfd %q of %s: %w", memfdName(link), what, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err != nil {
		return fmt.Errorf("statfs memfd %q of %s: %w", memfdName(link), what, err)
	}
	if uint32(sfs.Type) == hugetlbfsMagic {
		return fmt.Errorf("%s is a hugetlb memfd (%q); hugetlb memfds are not supported yet", what, memfdName(link))
	}
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		return fmt.Errorf("read seals of memfd %q of %s: %w", memfdName(link), what, err)
	}
	s.files.memfdInodes++
	obj.openPath = path
	obj.inode = &pb.MemfdInodeEntry{
		Name: proto.String(memfdName(link)), Uid: proto.Uint32(st.Uid), Gid: proto.Uint32(st.Gid),
		Size: proto.Uint64(uint64(st.Size)), Shmid: proto.Uint32(uint32(obj.ino)), Seals: proto.Uint32(uint32(seals)),
		InodeId: proto.Uint64(uint64(s.files.memfdInodes)), Mode: proto.Uint32(st.Mode),
	}
	// Pages are read up to the larger of the file size and the mappings.
	obj.size = max(obj.size, uint64(st.Size))
	return nil
}

// memfdObj returns the shmem object of the memfd with inode ino, seen
// through path (a descriptor or map_files link of pid), recording it the
// first time.
func (s *dumpState) memfdObj(ino uint64, pid int, path, link, what string) (*shmemObj, error) {
	if s.shmem == nil {
		s.shmem = map[uint64]*shmemObj{}
	}
	obj := s.shmem[ino]
	if obj == nil {
		obj = &shmemObj{ino: ino, pid: pid}
		s.shmem[ino] = obj
		s.shmemOrder = append(s.shmemOrder, obj)
	}
	if err := s.memfdInode(obj, path, link, what); err != nil {
		return nil, err
	}
	return obj, nil
}

// mappedMemfd returns the MEMFD file entry a memfd VMA maps (one per
// object and open mode, as CRIU's vma_entry.shmid) and the open flags.
func (s *dumpState) mappedMemfd(pid int, m *proc.Mapping) (uint32, uint32, error) {
	what := fmt.Sprintf("mapping %#x-%#x of pid %d", m.Start, m.End, pid)
	obj, err := s.memfdObj(m.Inode, pid, proc.MapFilesName(pid, m.Start, m.End), m.Path, what)
	if err != nil {
		return 0, 0, err
	}
	flags := uint32(unix.O_RDONLY)
	if m.Shared && m.Write {
		flags = unix.O_RDWR
	}
	if s.files.memfdMaps == nil {
		s.files.memfdMaps = map[[2]uint64]uint32{}
	}
	key := [2]uint64{obj.inode.GetInodeId(), uint64(flags)}
	if id, ok := s.files.memfdMaps[key]; ok {
		return id, flags, nil
	}
	e := &pb.MemfdFileEntry{Flags: proto.Uint32(flags), Pos: proto.Uint64(0), Fown: zeroFown(),
		InodeId: proto.Uint32(uint32(obj.inode.GetInodeId()))}
	id := s.files.add(&pb.FileEntry{Type: pb.FdTypes_MEMFD.Enum(), Memfd: e})
	e.Id = proto.Uint32(id)
	s.files.memfdMaps[key] = id
	return id, flags, nil
}

// collectMemfd records fd of pid, an open memfd: its inode (once per
// object, shared with the mappings of it) and its open file description
// (once per description: dup'ed or inherited descriptors share it).
func (s *dumpState) collectMemfd(pid, fd int, link string) (*pb.FdinfoEntry, error) {
	what := fmt.Sprintf("fd %d of pid %d", fd, pid)
	path := fmt.Sprintf("/proc/%d/fd/%d", pid, fd)
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("stat %s (%s): %w", what, link, err)
	}
	obj, err := s.memfdObj(st.Ino, pid, path, link, what)
	if err != nil {
		return nil, err
	}
	fi, err := proc.ReadFdInfo(pid, fd)
	if err != nil {
		return nil, fmt.Errorf("read fdinfo of %s: %w", what, err)
	}
	fdFlags := uint32(0)
	if fi.Flags&unix.O_CLOEXEC != 0 {
		fdFlags = unix.FD_CLOEXEC
	}
	fdinfo := func(id uint32) *pb.FdinfoEntry {
		return &pb.FdinfoEntry{Id: proto.Uint32(id), Flags: proto.Uint32(fdFlags), Type: pb.FdTypes_MEMFD.Enum(), Fd: proto.Uint32(uint32(fd))}
	}
	for _, o := range s.files.memfdOpen {
		if o.ino != st.Ino {
			continue
		}
		r, err := files.Kcmp(pid, o.pid, files.KcmpFile, uintptr(fd), uintptr(o.fd))
		if err != nil {
			return nil, fmt.Errorf("compare %s with fd %d of pid %d: %w", what, o.fd, o.pid, err)
		}
		if r == 0 {
			return fdinfo(o.id), nil
		}
	}
	e := &pb.MemfdFileEntry{
		Flags: proto.Uint32(fi.Flags &^ unix.O_CLOEXEC), Pos: proto.Uint64(uint64(fi.Pos)),
		Fown: zeroFown(), InodeId: proto.Uint32(uint32(obj.inode.GetInodeId())),
	}
	id := s.files.add(&pb.FileEntry{Type: pb.FdTypes_MEMFD.Enum(), Memfd: e})
	e.Id = proto.Uint32(id)
	s.files.memfdOpen = append(s.files.memfdOpen, openFile{id: id, pid: pid, fd: fd, dev: st.Dev, ino: st.Ino})
	return fdinfo(id), nil
}

// writeMemfds writes memfd.img: one entry per memfd object.
func (s *dumpState) writeMemfds(dir string) error {
	var es []proto.Message
	for _, obj := range s.shmemOrder {
		if obj.inode != nil {
			es = append(es, obj.inode)
		}
	}
	if len(es) == 0 {
		return nil
	}
	if err := writeImage(dir, image.MemfdInode, 0, es...); err != nil {
		return fmt.Errorf("write memfds: %w", err)
	}
	return nil
}

// path is where writeShmemPages reads the object: the descriptor or the
// mapping it was first seen through.
func (obj *shmemObj) path() string {
	if obj.openPath != "" {
		return obj.openPath
	}
	return proc.MapFilesName(obj.pid, obj.start, obj.end)
}
