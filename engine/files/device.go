package files

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
)

// Devices whose path is gone (--evasive-devices). A character device is
// reopened by its path on restore; if that path no longer leads to the same
// device (removed, or replaced), the dump is refused unless
// --evasive-devices is given, in which case any path under /dev to a node
// of the same device number is saved instead.

// evasiveDevice returns "" if the device is still reachable through its
// path, else the other path to use (or the refusal).
func (d *Dumper) evasiveDevice(link string, st *unix.Stat_t, desc string) (string, error) {
	path := strings.TrimSuffix(link, " (deleted)")
	var pst unix.Stat_t
	if path == link && unix.Stat(path, &pst) == nil && pst.Mode&unix.S_IFMT == unix.S_IFCHR && pst.Rdev == st.Rdev {
		return "", nil
	}
	dev := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	if !d.opts.EvasiveDevices {
		return "", fmt.Errorf("%s: the device %s is no longer reachable through %s; dump with --evasive-devices to use another path to it", desc, dev, path)
	}
	alt, err := findDevice("/dev", st.Rdev)
	if err != nil {
		return "", fmt.Errorf("%s: find another path to device %s: %w", desc, dev, err)
	}
	d.log.Info().Str("path", path).Str("instead", alt).Msg("device reopened through another path (--evasive-devices)")
	return alt, nil
}

// findDevice walks root for a character device node with number rdev.
func findDevice(root string, rdev uint64) (string, error) {
	found := ""
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil || found != "" {
			return nil // unreadable corners of /dev do not matter
		}
		if de.Type()&fs.ModeCharDevice == 0 {
			return nil
		}
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && st.Rdev == rdev {
			found = p
			return fs.SkipAll
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if found == "" {
		return "", fmt.Errorf("no node in %s", root)
	}
	return found, nil
}

// dumpDevice saves a device descriptor as a regular-file entry under path.
func (d *Dumper) dumpDevice(c *Collected, pid, fd int, path string, st *unix.Stat_t, info *fdinfo, flags uint32, f *os.File) (*Collected, error) {
	desc := fdDesc(pid, fd, path)
	id, shared, err := d.openFileID(objKey{pb.FdTypes_REG, st.Ino}, pid, fd, desc)
	if err != nil {
		return nil, err
	}
	if shared {
		c.Kind, c.ID, c.Shared = pb.FdTypes_REG, id, true
		return c, nil
	}
	fown, err := dumpFown(f)
	if err != nil {
		return nil, fmt.Errorf("dump owner of %s: %w", desc, err)
	}
	c.Kind = pb.FdTypes_REG
	c.ID = id
	k := pb.FdTypes_REG
	c.Entry = &pb.FileEntry{Type: &k, Id: u32p(c.ID), Reg: &pb.RegFileEntry{
		Id: u32p(c.ID), Flags: u32p(flags), Pos: u64p(uint64(info.Pos)), Fown: fown, Name: strp(path),
		MntId: i32p(int32(info.MntID)), Mode: u32p(st.Mode),
	}}
	if c.Locks, err = d.locks(pid, fd, desc, info); err != nil {
		return nil, err
	}
	d.set.Files = append(d.set.Files, c.Entry)
	return c, nil
}
