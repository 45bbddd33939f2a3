package files

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
)

// Deleted files still open.
//
// A regular file whose last name is gone travels in the images as a ghost
// (its contents, mode, owner and times), up to Options.GhostLimit bytes.
// With --link-remap the dumper first tries to link the open file back under
// a hidden name next to where it was (".crtools-link-remap.INO") and saves
// only the name; restore opens that name and removes it. The kernel links
// back only files that still have a name elsewhere or were created with
// O_TMPFILE (a file with no link left cannot be linked, ENOENT): those fall
// back to a ghost. A file whose path was removed but that still has another
// hard link is handled the same way (its hard-link identity is kept only
// with --link-remap).

func isGhost(link string, st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFREG && strings.HasSuffix(link, " (deleted)")
}

type ghostKey struct {
	dev, ino uint64
}

type remapName struct {
	name string
	id   uint32
}

func (d *Dumper) dumpGhost(c *Collected, e *pb.FileEntry, f *os.File, st *unix.Stat_t, link string, flags uint32, fown *pb.FownEntry, info *fdinfo, desc string) error {
	name := strings.TrimSuffix(link, " (deleted)")
	e.Reg = &pb.RegFileEntry{
		Id: u32p(c.ID), Flags: u32p(flags), Pos: u64p(uint64(info.Pos)), Fown: fown, Name: strp(name),
		MntId: i32p(int32(info.MntID)), Size: u64p(uint64(st.Size)), Mode: u32p(st.Mode),
	}
	return d.remapDeleted(c.ID, f, st, name, fown)
}

// GhostMapped records the contents of a deleted file that the tree maps
// or runs (f: opened through its map_files or exe link) for the
// regular-file entry id: the ghost of its inode, shared with every
// descriptor and mapping of the same file (one copy in the images, one
// file again at restore, so MAP_SHARED writes and fds meet), or with
// --link-remap a hidden name. Over the ghost limit it refuses as for fds.
func (d *Dumper) GhostMapped(id uint32, f *os.File, st *unix.Stat_t, name string) error {
	fown := &pb.FownEntry{Uid: u32p(0), Euid: u32p(0), Signum: u32p(0), PidType: u32p(0), Pid: u32p(0)}
	return d.remapDeleted(id, f, st, name, fown)
}

// remapDeleted saves the deleted file f (named name) for entry id: a
// link-remap name or a ghost.
func (d *Dumper) remapDeleted(id uint32, f *os.File, st *unix.Stat_t, name string, fown *pb.FownEntry) error {
	key := ghostKey{st.Dev, st.Ino}
	if d.opts.LinkRemap {
		if r, ok := d.remapped[key]; ok {
			d.set.LinkRemaps[id] = r.name
			d.set.linkRemapIDs[id] = r.id
			return nil
		}
		hidden := filepath.Join(filepath.Dir(name), fmt.Sprintf(".crtools-link-remap.%d", st.Ino))
		err := unix.Linkat(int(f.Fd()), "", unix.AT_FDCWD, hidden, unix.AT_EMPTY_PATH)
		switch {
		case err == nil:
			d.links = append(d.links, hidden)
			// The hidden name is a file of its own in files.img, which the
			// remap entry names (CRIU's LINKED remap).
			rid := d.newID()
			k := pb.FdTypes_REG
			d.set.Files = append(d.set.Files, &pb.FileEntry{Type: &k, Id: u32p(rid), Reg: &pb.RegFileEntry{
				Id: u32p(rid), Flags: u32p(0), Pos: u64p(0), Fown: fown, Name: strp(hidden),
			}})
			d.remapped[key] = remapName{hidden, rid}
			d.set.LinkRemaps[id] = hidden
			d.set.linkRemapIDs[id] = rid
			return nil
		case errors.Is(err, unix.ENOENT) && st.Nlink == 0:
			d.log.Debug().Str("file", name).Msg("deleted file cannot be linked back (no link left); saving its contents")
		default:
			return fmt.Errorf("link deleted file %s back as %s: %w", name, hidden, os.NewSyscallError("linkat", err))
		}
	}
	if g, ok := d.ghosts[key]; ok {
		d.set.Ghosts[id] = g
		return nil
	}
	if st.Size > d.opts.GhostLimit {
		return fmt.Errorf("deleted file %s holds %d bytes, more than the ghost file limit of %d bytes: raise the limit (--ghost-limit SIZE) or dump with --link-remap", name, st.Size, d.opts.GhostLimit)
	}
	// The descriptor may be write-only: read through a read-only reopen.
	rfd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("reopen deleted file %s for reading: %w", name, os.NewSyscallError("open", err))
	}
	r := os.NewFile(uintptr(rfd), name)
	defer r.Close()
	data := make([]byte, st.Size)
	if _, err := r.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read deleted file %s: %w", name, err)
	}
	g := &Ghost{
		Entry: &pb.GhostFileEntry{
			Uid: u32p(st.Uid), Gid: u32p(st.Gid), Mode: u32p(st.Mode), Dev: u32p(uint32(st.Dev)), Ino: u64p(st.Ino),
			Atim: &pb.Timeval{TvSec: u64p(uint64(st.Atim.Sec)), TvUsec: u64p(uint64(st.Atim.Nsec / 1000))},
			Mtim: &pb.Timeval{TvSec: u64p(uint64(st.Mtim.Sec)), TvUsec: u64p(uint64(st.Mtim.Nsec / 1000))},
			Size: u64p(uint64(st.Size)),
		},
		Data: data,
	}
	d.ghosts[key] = g
	d.set.Ghosts[id] = g
	return nil
}

// MakeGhosts recreates every deleted file of the images (once per inode),
// opens it for every file id that had it (descriptors, mappings, the
// executable: one file for all of them, so MAP_SHARED writes and fds
// meet), and removes its name again. The name is its own when nothing has
// it now (so the restored fds, maps and exe links name it as before),
// else a hidden name next to it, or in the temporary directory when its
// directory is gone. Open hands out the files (the puppets take them,
// whatever their mount namespace); Close closes them. Restore calls it
// before it makes the tasks; Open does if it was not.
func (r *Restorer) MakeGhosts() error {
	r.ghostMu.Lock()
	defer r.ghostMu.Unlock()
	if r.ghostFiles != nil {
		return nil
	}
	r.ghostFiles = map[uint32]*os.File{}
	ids := make([]uint32, 0, len(r.set.Ghosts))
	for id := range r.set.Ghosts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	done := map[ghostKey]bool{}
	for _, id := range ids {
		g := r.set.Ghosts[id]
		key := ghostKey{uint64(g.Entry.GetDev()), g.Entry.GetIno()}
		reg := r.byID[id].GetReg()
		if done[key] || reg == nil {
			continue
		}
		done[key] = true
		path, err := makeGhost(reg.GetName(), g)
		if err != nil {
			return err
		}
		for _, oid := range ids {
			og := r.set.Ghosts[oid]
			oe := r.byID[oid].GetReg()
			if og.Entry.GetDev() != g.Entry.GetDev() || og.Entry.GetIno() != g.Entry.GetIno() || oe == nil {
				continue
			}
			f, err := openRegAt(path, oe)
			if err != nil {
				os.Remove(path)
				return err
			}
			r.ghostFiles[oid] = f
			r.keep = append(r.keep, f)
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("remove recreated deleted file %s: %w", path, err)
		}
	}
	return nil
}

// makeGhost writes g's contents, mode, owner and times into a new file
// for the deleted file name and returns its path.
func makeGhost(name string, g *Ghost) (string, error) {
	ge := g.Entry
	tmp, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		dir := filepath.Dir(name)
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			dir = os.TempDir()
		}
		tmp, err = os.CreateTemp(dir, "."+filepath.Base(name)+".crtools-ghost-*")
		if err != nil {
			return "", fmt.Errorf("recreate deleted file %s: %w", name, err)
		}
	}
	path := tmp.Name()
	_, err = tmp.Write(g.Data)
	if err == nil {
		err = unix.Fchmod(int(tmp.Fd()), ge.GetMode()&0o7777)
	}
	if err == nil {
		err = tmp.Chown(int(ge.GetUid()), int(ge.GetGid()))
	}
	if err == nil && ge.GetMode()&0o6000 != 0 {
		// chown clears set-user/group-ID bits: set them again.
		err = unix.Fchmod(int(tmp.Fd()), ge.GetMode()&0o7777)
	}
	if err == nil && ge.GetMtim() != nil {
		ts := []unix.Timespec{
			{Sec: int64(ge.GetAtim().GetTvSec()), Nsec: int64(ge.GetAtim().GetTvUsec()) * 1000},
			{Sec: int64(ge.GetMtim().GetTvSec()), Nsec: int64(ge.GetMtim().GetTvUsec()) * 1000},
		}
		err = unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, 0)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("recreate deleted file %s: %w", name, err)
	}
	return path, nil
}

// openGhost returns the recreated deleted file (MakeGhosts) of entry e.
func (r *Restorer) openGhost(e *pb.FileEntry, _ *Ghost) (*os.File, error) {
	if err := r.MakeGhosts(); err != nil {
		return nil, err
	}
	r.ghostMu.Lock()
	f, ok := r.ghostFiles[e.GetId()]
	r.ghostMu.Unlock()
	if !ok {
		return nil, fmt.Errorf("deleted file %s: file id %d: %w", e.GetReg().GetName(), e.GetId(), errNoEntry)
	}
	return f, nil
}

// openRegAt opens path with the entry's flags and offset.
func openRegAt(path string, reg *pb.RegFileEntry) (*os.File, error) {
	// O_TMPFILE (which includes O_DIRECTORY) was how the file was made,
	// not how it can be opened again.
	fl := int(reg.GetFlags()) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_NOCTTY | unix.O_TMPFILE)
	fd, err := unix.Open(path, fl|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s (for %s): %w", path, reg.GetName(), os.NewSyscallError("open", err))
	}
	f := os.NewFile(uintptr(fd), reg.GetName())
	if _, err := unix.Seek(fd, int64(reg.GetPos()), io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("seek %s to %d: %w", reg.GetName(), reg.GetPos(), err)
	}
	return f, nil
}

// openLinkRemap opens the file a --link-remap dump linked to hidden. When
// its old name is free the file is opened through that name, linked for
// the moment, so that the task's fd, maps and exe link name it as before
// (deleted); else through hidden. Close removes hidden.
func (r *Restorer) openLinkRemap(e *pb.FileEntry, hidden string) (*os.File, error) {
	r.remapMu.Lock()
	defer r.remapMu.Unlock()
	r.remapNames[hidden] = true
	path := hidden
	if name := e.GetReg().GetName(); os.Link(hidden, name) == nil {
		path = name
		defer os.Remove(name)
	}
	return openRegAt(path, e.GetReg())
}
