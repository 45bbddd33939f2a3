package files

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
	key := ghostKey{st.Dev, st.Ino}
	if d.opts.LinkRemap {
		if r, ok := d.remapped[key]; ok {
			d.set.LinkRemaps[c.ID] = r.name
			d.set.linkRemapIDs[c.ID] = r.id
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
			d.set.LinkRemaps[c.ID] = hidden
			d.set.linkRemapIDs[c.ID] = rid
			return nil
		case errors.Is(err, unix.ENOENT) && st.Nlink == 0:
			d.log.Debug().Str("file", name).Msg("deleted file cannot be linked back (no link left); saving its contents")
		default:
			return fmt.Errorf("link deleted file %s back as %s: %w", name, hidden, os.NewSyscallError("linkat", err))
		}
	}
	if g, ok := d.ghosts[key]; ok {
		d.set.Ghosts[c.ID] = g
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
	d.set.Ghosts[c.ID] = g
	return nil
}

// openGhost recreates a ghost file (once per inode): a new file with the
// saved contents next to where the original lived, opened for every file id
// that shares it, then unlinked.
func (r *Restorer) openGhost(e *pb.FileEntry, g *Ghost) (*os.File, error) {
	reg := e.GetReg()
	ge := g.Entry
	key := ghostKey{uint64(ge.GetDev()), ge.GetIno()}
	if _, ok := r.ghostDone[key]; !ok {
		dir := filepath.Dir(reg.GetName())
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			dir = os.TempDir()
		}
		tmp, err := os.CreateTemp(dir, "."+filepath.Base(reg.GetName())+".crtools-ghost-*")
		if err != nil {
			return nil, fmt.Errorf("recreate deleted file %s: %w", reg.GetName(), err)
		}
		path := tmp.Name()
		defer os.Remove(path)
		_, err = tmp.Write(g.Data)
		if err == nil {
			err = tmp.Chmod(os.FileMode(ge.GetMode() & 0o777))
		}
		if err == nil {
			err = unix.Fchmod(int(tmp.Fd()), ge.GetMode()&0o7777)
		}
		if err == nil {
			err = tmp.Chown(int(ge.GetUid()), int(ge.GetGid()))
		}
		if err == nil && ge.GetMtim() != nil {
			ts := []unix.Timespec{
				{Sec: int64(ge.GetAtim().GetTvSec()), Nsec: int64(ge.GetAtim().GetTvUsec()) * 1000},
				{Sec: int64(ge.GetMtim().GetTvSec()), Nsec: int64(ge.GetMtim().GetTvUsec()) * 1000},
			}
			err = unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, 0)
		}
		tmp.Close()
		if err != nil {
			return nil, fmt.Errorf("recreate deleted file %s: %w", reg.GetName(), err)
		}
		// Open it for every file id that had this inode, before the name
		// goes away.
		opened := map[uint32]*os.File{}
		for id, og := range r.set.Ghosts {
			if og.Entry.GetDev() != ge.GetDev() || og.Entry.GetIno() != ge.GetIno() {
				continue
			}
			oe := r.byID[id].GetReg()
			if oe == nil {
				continue
			}
			f, err := openRegAt(path, oe)
			if err != nil {
				return nil, err
			}
			opened[id] = f
		}
		r.ghostDone[key] = opened
	}
	f, ok := r.ghostDone[key][e.GetId()]
	if !ok {
		return nil, fmt.Errorf("deleted file %s: file id %d: %w", reg.GetName(), e.GetId(), errNoEntry)
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

func (r *Restorer) openLinkRemap(e *pb.FileEntry, hidden string) (*os.File, error) {
	f, err := openRegAt(hidden, e.GetReg())
	if err != nil {
		return nil, err
	}
	r.remapNames[hidden] = true
	return f, nil
}
