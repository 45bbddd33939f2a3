package dump

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/files"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/proc"
)

// openFile is one open file description already given an id, kept to find
// other descriptors that share it (dup, fork).
type openFile struct {
	id       uint32
	pid, fd  int
	dev, ino uint64
}

// fileTable allocates the ids of files.img entries.
type fileTable struct {
	next    uint32
	entries []*pb.FileEntry
	// open are the regular files' open file descriptions seen so far,
	// by device and inode.
	open map[[2]uint64]*files.KcmpIndex
	// memfdOpen are the memfd open file descriptions seen so far, and
	// memfdInodes counts memfd objects (memfd.go).
	memfdOpen   []openFile
	memfdInodes uint32
	memfdMaps   map[[2]uint64]uint32 // MEMFD entries of mappings by inode id and flags
	// mapped caches what linkedPath found for the files mappings show
	// (mappedFile).
	mapped map[mappedKey]mappedPath
	// pathIDs reuses one entry for every mapping of, or reference to,
	// the same path opened the same way (exe, libraries, cwd, root).
	pathIDs map[string]uint32
}

// mappedKey is a mapped file as /proc/PID/maps shows it: device, inode and
// name (the name as crtools sees it, like map_files' link).
type mappedKey struct {
	major, minor uint32
	ino          uint64
	name         string
}

type mappedPath struct {
	path    string
	st      *unix.Stat_t
	deleted bool // its last name is gone (a ghost)
}

func (ft *fileTable) add(e *pb.FileEntry) uint32 {
	ft.next++
	e.Id = proto.Uint32(ft.next)
	if e.Reg != nil {
		e.Reg.Id = proto.Uint32(ft.next)
	}
	ft.entries = append(ft.entries, e)
	return ft.next
}

func zeroFown() *pb.FownEntry {
	return &pb.FownEntry{Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(0),
		PidType: proto.Uint32(0), Pid: proto.Uint32(0)}
}

// regByPath returns the id of a REG entry for path opened with flags,
// creating it on first use. st describes the file (for size and mode).
func (ft *fileTable) regByPath(path string, flags uint32, st *unix.Stat_t) uint32 {
	key := fmt.Sprintf("%o:%s", flags, path)
	if ft.pathIDs == nil {
		ft.pathIDs = map[string]uint32{}
	}
	if id, ok := ft.pathIDs[key]; ok {
		return id
	}
	reg := &pb.RegFileEntry{Flags: proto.Uint32(flags), Pos: proto.Uint64(0), Fown: zeroFown(), Name: proto.String(path)}
	if st != nil {
		reg.Mode = proto.Uint32(st.Mode)
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			reg.Size = proto.Uint64(uint64(st.Size))
		}
	}
	id := ft.add(&pb.FileEntry{Type: pb.FdTypes_REG.Enum(), Reg: reg})
	ft.pathIDs[key] = id
	return id
}

// linkedPath resolves a /proc magic link (cwd, root) and checks that the
// file still has a name.
func linkedPath(link, what string) (string, *unix.Stat_t, error) {
	path, st, deleted, err := linkedFile(link, what)
	if err == nil && deleted {
		err = fmt.Errorf("%s is a deleted file (%s); deleted files are not supported here", what, path)
	}
	return path, st, err
}

// linkedFile resolves a /proc magic link (exe, cwd, root, map_files/...).
// deleted reports a regular file whose last name is gone (its link reads
// "NAME (deleted)"; path is NAME then): its contents go into the images
// as a ghost (mappedFile, exeFileID).
func linkedFile(link, what string) (path string, st *unix.Stat_t, deleted bool, err error) {
	path, err = os.Readlink(link)
	if err != nil {
		return "", nil, false, fmt.Errorf("read link of %s: %w", what, err)
	}
	st = new(unix.Stat_t)
	if err := unix.Stat(link, st); err != nil {
		return "", nil, false, fmt.Errorf("stat %s (%s): %w", what, path, err)
	}
	if st.Nlink == 0 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if st.Mode&unix.S_IFMT != unix.S_IFREG || !strings.HasSuffix(path, " (deleted)") {
			return "", nil, false, fmt.Errorf("%s is a deleted file (%s) that is not a regular file; such files are not supported", what, path)
		}
		path, deleted = strings.TrimSuffix(path, " (deleted)"), true
	} else if name, ok := strings.CutSuffix(path, " (deleted)"); ok && st.Mode&unix.S_IFMT == unix.S_IFREG {
		// Its name was removed but another hard link is left: the
		// name is not the file now (as for fds, engine/files).
		var now unix.Stat_t
		if unix.Stat(path, &now) != nil || now.Dev != st.Dev || now.Ino != st.Ino {
			path, deleted = name, true
		}
	}
	if !strings.HasPrefix(path, "/") {
		return "", nil, false, fmt.Errorf("%s is %s, not a file with a path", what, path)
	}
	return path, st, deleted, nil
}

// ghostReg returns the id of a REG entry for the deleted file behind link
// (path: its old name) opened with flags, creating it, with the file's
// ghost (engine/files, shared by inode with fds and other mappings), on
// first use.
func (s *dumpState) ghostReg(link, path string, flags uint32, st *unix.Stat_t) (uint32, error) {
	key := fmt.Sprintf("%o:deleted:%d:%d:%s", flags, st.Dev, st.Ino, path)
	if s.files.pathIDs == nil {
		s.files.pathIDs = map[string]uint32{}
	}
	if id, ok := s.files.pathIDs[key]; ok {
		return id, nil
	}
	reg := &pb.RegFileEntry{Flags: proto.Uint32(flags), Pos: proto.Uint64(0), Fown: zeroFown(), Name: proto.String(path),
		Mode: proto.Uint32(st.Mode), Size: proto.Uint64(uint64(st.Size))}
	id := s.files.add(&pb.FileEntry{Type: pb.FdTypes_REG.Enum(), Reg: reg})
	s.files.pathIDs[key] = id
	f, err := os.Open(link)
	if err != nil {
		return 0, fmt.Errorf("open deleted file %s: %w", path, err)
	}
	defer f.Close()
	if err := s.special.GhostMapped(id, f, st, path); err != nil {
		return 0, err
	}
	return id, nil
}

// mappedFile returns the file id and open flags for a file mapping.
func (s *dumpState) mappedFile(pid int, m *proc.Mapping) (uint32, uint32, error) {
	// A file is mapped several times by a task (a library's text, data,
	// ...) and by every task of a forked tree: its map_files link is read
	// once per dump for each file and name the map shows.
	key := mappedKey{m.DevMajor, m.DevMinor, m.Inode, m.Path}
	c, ok := s.files.mapped[key]
	if !ok {
		what := fmt.Sprintf("mapping %#x-%#x of pid %d", m.Start, m.End, pid)
		link := proc.MapFilesName(pid, m.Start, m.End)
		path, st, deleted, err := linkedFile(link, what)
		if err != nil {
			return 0, 0, err
		}
		c = mappedPath{path, st, deleted}
		if s.files.mapped == nil {
			s.files.mapped = map[mappedKey]mappedPath{}
		}
		s.files.mapped[key] = c
	}
	path, st := c.path, c.st
	what := func() string { return fmt.Sprintf("mapping %#x-%#x of pid %d", m.Start, m.End, pid) }
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFCHR:
		return 0, 0, fmt.Errorf("%s maps the device %s; device mappings are not supported", what(), path)
	default:
		return 0, 0, fmt.Errorf("%s maps %s, which is not a regular file", what(), path)
	}
	flags := uint32(unix.O_RDONLY)
	if m.Shared && m.Write {
		flags = unix.O_RDWR
	}
	if c.deleted {
		id, err := s.ghostReg(proc.MapFilesName(pid, m.Start, m.End), path, flags, st)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", what(), err)
		}
		return id, flags, nil
	}
	return s.files.regByPath(path, flags, st), flags, nil
}

// ttyMajors are character-device majors of terminals (Documentation/
// admin-guide/devices.txt): those need issue 5's tty support.
func isTTY(rdev uint64) bool {
	maj := unix.Major(rdev)
	return maj == 4 || maj == 5 || (maj >= 136 && maj <= 143)
}

// socketFd is a socket descriptor of a task: its number and /proc link.
type socketFd struct {
	fd   int
	link string
}

// collectFds reads the descriptors of pid into fdinfo entries, adding
// their open files to the table.
func (s *dumpState) collectFds(pid int) ([]*pb.FdinfoEntry, error) {
	fds, err := proc.ListFds(pid)
	if err != nil {
		return nil, fmt.Errorf("list fds of pid %d: %w", pid, err)
	}
	var out []*pb.FdinfoEntry
	for _, fd := range fds {
		e, err := s.collectFd(pid, fd)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func (s *dumpState) collectFd(pid, fd int) (*pb.FdinfoEntry, error) {
	// Pipes, sockets, event/epoll/signal/timer/inotify fds, FIFOs,
	// terminals and deleted files are engine/files' (with the refusals
	// that name -x, -l, -j); it also records the locks of regular files.
	// For the others it hands back what it read (link, stat, fdinfo).
	c, err := s.special.Dump(pid, fd)
	if err == nil {
		if _, seen := s.sockets[pid]; !seen && (c.Kind == pb.FdTypes_UNIXSK || c.Kind == pb.FdTypes_INETSK) {
			if s.sockets == nil {
				s.sockets = map[int]socketFd{}
			}
			s.sockets[pid] = socketFd{fd, c.Link}
		}
		return c.Fdinfo(), nil
	} else if !errors.Is(err, files.ErrNotHandled) {
		return nil, err
	}
	target := c.Link
	if strings.HasPrefix(target, "/memfd:") {
		return s.collectMemfd(pid, fd, target) // memfd.go
	}
	kind := ""
	switch {
	case strings.HasPrefix(target, "pipe:"):
		kind = "a pipe; pipes are"
	case strings.HasPrefix(target, "socket:"):
		kind = "a socket; sockets are"
	case target == "anon_inode:seccomp notify":
		return nil, fmt.Errorf("fd %d of pid %d is a seccomp listener (the user-space end of a filter that returns SECCOMP_RET_USER_NOTIF), which a restore cannot reconnect to its filter; seccomp listeners are not supported", fd, pid)
	case strings.HasPrefix(target, "anon_inode:"):
		name := strings.Trim(strings.TrimPrefix(target, "anon_inode:"), "[]")
		kind = "an " + name + " file; " + name + " files are"
	case !strings.HasPrefix(target, "/"):
		kind = fmt.Sprintf("%q; such files are", target)
	}
	if kind != "" {
		return nil, fmt.Errorf("fd %d of pid %d is %s not supported yet", fd, pid, kind)
	}
	st := &c.Stat
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR:
		if st.Nlink == 0 && st.Mode&unix.S_IFMT == unix.S_IFREG {
			return nil, fmt.Errorf("fd %d of pid %d is a deleted file (%s); deleted files are not supported yet", fd, pid, target)
		}
	case unix.S_IFCHR:
		if isTTY(st.Rdev) {
			return nil, fmt.Errorf("fd %d of pid %d is a terminal (%s); terminals are not supported yet", fd, pid, target)
		}
	case unix.S_IFIFO:
		return nil, fmt.Errorf("fd %d of pid %d is a FIFO (%s); FIFOs are not supported yet", fd, pid, target)
	default:
		return nil, fmt.Errorf("fd %d of pid %d is %s (mode %o), which is not supported yet", fd, pid, target, st.Mode)
	}
	id, err := s.fileID(pid, fd, target, st, c.Flags, c.Pos)
	if err != nil {
		return nil, err
	}
	return &pb.FdinfoEntry{Id: proto.Uint32(id), Flags: proto.Uint32(c.FdFlags), Type: pb.FdTypes_REG.Enum(), Fd: proto.Uint32(uint32(fd))}, nil
}

// fileID finds the open file description behind fd among those seen so far
// (kcmp KCMP_FILE, among the files with the same inode), or records a new
// one, with its owner (F_SETOWN). flags are its open flags (without
// O_CLOEXEC), pos its offset.
func (s *dumpState) fileID(pid, fd int, path string, st *unix.Stat_t, flags uint32, pos int64) (uint32, error) {
	key := [2]uint64{st.Dev, st.Ino}
	if s.files.open == nil {
		s.files.open = map[[2]uint64]*files.KcmpIndex{}
	}
	ix := s.files.open[key]
	if ix == nil {
		ix = &files.KcmpIndex{Type: files.KcmpFile}
		s.files.open[key] = ix
	}
	var ownErr error
	id, _, err := ix.Find(pid, uintptr(fd), func() uint32 {
		// The owner belongs to the open file description: read once,
		// for the first descriptor of it.
		fown, err := s.special.Owner(pid, fd)
		if err != nil {
			ownErr = err
			fown = zeroFown()
		}
		reg := &pb.RegFileEntry{
			Flags: proto.Uint32(flags),
			Pos:   proto.Uint64(uint64(pos)),
			Fown:  fown,
			Name:  proto.String(path),
			Mode:  proto.Uint32(st.Mode),
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			reg.Size = proto.Uint64(uint64(st.Size))
		}
		return s.files.add(&pb.FileEntry{Type: pb.FdTypes_REG.Enum(), Reg: reg})
	})
	if err != nil {
		return 0, fmt.Errorf("find the open file description of fd %d of pid %d (%s): %w", fd, pid, path, err)
	}
	if ownErr != nil {
		return 0, fmt.Errorf("%s: %w", path, ownErr)
	}
	return id, nil
}

// collectFS reads cwd, root and umask of pid.
func (s *dumpState) collectFS(pid int, umask uint32) (*pb.FsEntry, error) {
	cwd, cst, err := linkedPath(fmt.Sprintf("/proc/%d/cwd", pid), fmt.Sprintf("cwd of pid %d", pid))
	if err != nil {
		return nil, err
	}
	root, rst, err := linkedPath(fmt.Sprintf("/proc/%d/root", pid), fmt.Sprintf("root of pid %d", pid))
	if err != nil {
		return nil, err
	}
	return &pb.FsEntry{
		CwdId:  proto.Uint32(s.files.regByPath(cwd, 0, cst)),
		RootId: proto.Uint32(s.files.regByPath(root, 0, rst)),
		Umask:  proto.Uint32(umask),
	}, nil
}

// exeFileID returns the file id of the executable of pid.
func (s *dumpState) exeFileID(pid int) (uint32, error) {
	link := fmt.Sprintf("/proc/%d/exe", pid)
	path, st, deleted, err := linkedFile(link, fmt.Sprintf("executable of pid %d", pid))
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return 0, fmt.Errorf("pid %d has no executable (a kernel thread?)", pid)
		}
		return 0, err
	}
	if deleted {
		id, err := s.ghostReg(link, path, unix.O_RDONLY, st)
		if err != nil {
			return 0, fmt.Errorf("executable of pid %d: %w", pid, err)
		}
		return id, nil
	}
	return s.files.regByPath(path, unix.O_RDONLY, st), nil
}

// checkSharedKobjs refuses processes that share their memory (CLONE_VM) or
// their signal handler table (CLONE_SIGHAND, which the kernel allows only
// with CLONE_VM) with another process of the tree: restore creates every
// process with its own mm and handler table, so the sharing would be lost
// silently. Shared fd tables and fs info are restored (engine/restore,
// create.go). ids are pid's, just computed; s.tasks holds the processes
// collected before it.
func (s *dumpState) checkSharedKobjs(pid int, ids *pb.TaskKobjIdsEntry) error {
	for _, o := range s.tasks {
		if o.t.zombie || o.ids == nil {
			continue
		}
		if o.ids.GetSighandId() == ids.GetSighandId() {
			return fmt.Errorf("pid %d shares its signal handler table with pid %d (clone with CLONE_SIGHAND without CLONE_THREAD); processes sharing signal handlers are not supported", pid, o.t.pid)
		}
		if o.ids.GetVmId() == ids.GetVmId() {
			return fmt.Errorf("pid %d shares its memory with pid %d (clone with CLONE_VM, e.g. vfork, without CLONE_THREAD); processes sharing an address space are not supported", pid, o.t.pid)
		}
	}
	return nil
}
