package ns

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/proc"
)

// Mount namespaces (-n mnt, restore -r).
//
// Dump reads the root task's mountinfo into mountpoints-ID.img (MntEntry,
// as CRIU) in mountinfo order. Kinds:
//
//   - the root mount ("/"): nothing is saved; restore puts the directory
//     given with -r/--root there (a bind mount of it).
//   - tmpfs: options and contents; the contents go into
//     tmpfs-dev-DEV.tar.gz.img, a gzipped tar as CRIU's (regular files,
//     directories, symlinks; modes, owners, times).
//   - proc, sysfs, devpts, mqueue: a new instance with the same options.
//   - a bind mount of a directory crtools also sees (the same device, and
//     the mount's root under the root of one of crtools' mounts): saved as
//     an external mount whose ext_key is that path in crtools' namespace;
//     restore bind-mounts the path again.
//
// Any other mount is refused, naming its mount point. Propagation (shared,
// slave) is not restored: every restored mount is private.
//
// Restore clones the root with CLONE_NEWNS and, by syscalls injected into
// the root task (engine/restore/ns.go), makes its mounts private, binds -r
// on itself, mounts every entry under it, extracts tmpfs contents (from
// crtools through /proc/PID/root) and pivot_roots into it.

// mountinfo is one line of /proc/PID/mountinfo.
type mountinfo struct {
	id, parent   int
	major, minor uint32
	root, mp     string
	opts         string // per-mount options
	fstype, src  string
	super        string // super block options
}

func readMountinfo(pid string) ([]mountinfo, error) {
	path := "/proc/" + pid + "/mountinfo"
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	var out []mountinfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fs {
			if x == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if len(fs) < 10 || sep < 0 || len(fs) < sep+4 {
			return nil, fmt.Errorf("parse %s line %q", path, sc.Text())
		}
		var m mountinfo
		m.id, _ = strconv.Atoi(fs[0])
		m.parent, _ = strconv.Atoi(fs[1])
		if _, err := fmt.Sscanf(fs[2], "%d:%d", &m.major, &m.minor); err != nil {
			return nil, fmt.Errorf("parse %s device %q: %w", path, fs[2], err)
		}
		m.root, m.mp, m.opts = proc.UnescapeOctal(fs[3]), proc.UnescapeOctal(fs[4]), fs[5]
		m.fstype, m.src, m.super = fs[sep+1], proc.UnescapeOctal(fs[sep+2]), fs[sep+3]
		out = append(out, m)
	}
	return out, sc.Err()
}

// mountOptFlags are the MS_* flags of per-mount options; other options
// carry no flag.
var mountOptFlags = map[string]uint32{
	"ro":          unix.MS_RDONLY,
	"nosuid":      unix.MS_NOSUID,
	"nodev":       unix.MS_NODEV,
	"noexec":      unix.MS_NOEXEC,
	"noatime":     unix.MS_NOATIME,
	"nodiratime":  unix.MS_NODIRATIME,
	"relatime":    unix.MS_RELATIME,
	"strictatime": unix.MS_STRICTATIME,
}

// mountFlags turns per-mount options into MS_* flags.
func mountFlags(opts string) uint32 {
	var f uint32
	for _, o := range strings.Split(opts, ",") {
		f |= mountOptFlags[o]
	}
	return f
}

// superData drops rw/ro from super block options: the rest is mount data.
func superData(s string) string {
	var keep []string
	for _, o := range strings.Split(s, ",") {
		if o != "rw" && o != "ro" && o != "" {
			keep = append(keep, o)
		}
	}
	return strings.Join(keep, ",")
}

var newInstanceFS = map[string]pb.Fstype{"proc": pb.Fstype_PROC, "sysfs": pb.Fstype_SYSFS, "devpts": pb.Fstype_DEVPTS, "mqueue": pb.Fstype_MQUEUE}

// isNewInstance: restore mounts a new instance of a file system of that
// type (one of newInstanceFS).
func isNewInstance(t pb.Fstype) bool {
	for _, v := range newInstanceFS {
		if v == t {
			return true
		}
	}
	return false
}

// tmpfsImageName is the file of the contents of the tmpfs of root_dev dev.
func tmpfsImageName(dev uint32) string { return fmt.Sprintf("tmpfs-dev-%d.tar.gz.img", dev) }

// kdev is the kernel's encoding of a device number, as CRIU's root_dev.
func kdev(major, minor uint32) uint32 { return major<<20 | minor }

type mntDump struct {
	id      uint32
	entries []*pb.MntEntry
	tmpfs   map[uint32]string // root_dev -> directory to save, via /proc/PID/root
}

// collectMnt reads the mount table of pid's mount namespace.
func collectMnt(pid int, id uint32) (*mntDump, error) {
	mine, err := readMountinfo(strconv.Itoa(pid))
	if err != nil {
		return nil, fmt.Errorf("read mount namespace of pid %d: %w", pid, err)
	}
	host, err := readMountinfo("self")
	if err != nil {
		return nil, err
	}
	d := &mntDump{id: id, tmpfs: map[uint32]string{}}
	for _, m := range mine {
		e := &pb.MntEntry{MntId: proto.Uint32(uint32(m.id)), ParentMntId: proto.Uint32(uint32(m.parent)),
			RootDev: proto.Uint32(kdev(m.major, m.minor)), Flags: proto.Uint32(mountFlags(m.opts)), Root: proto.String(m.root),
			Mountpoint: proto.String(m.mp), Source: proto.String(m.src), Options: proto.String(superData(m.super)),
			Fsname: proto.String(m.fstype), SbFlags: proto.Uint32(mountFlags(m.super))}
		switch {
		case m.mp == "/":
			e.Fstype = proto.Uint32(uint32(pb.Fstype_AUTO))
		case newInstanceFS[m.fstype] != 0:
			e.Fstype = proto.Uint32(uint32(newInstanceFS[m.fstype]))
		default:
			// A bind mount of something crtools sees: the longest
			// mount root of crtools' on the same device that holds it.
			best := -1
			for i, h := range host {
				if h.major != m.major || h.minor != m.minor {
					continue
				}
				if h.root != "/" && m.root != h.root && !strings.HasPrefix(m.root, h.root+"/") {
					continue
				}
				if best < 0 || len(h.root) > len(host[best].root) {
					best = i
				}
			}
			if best < 0 && m.fstype == "tmpfs" && m.root == "/" {
				// A tmpfs of the tree's own: saved with its contents.
				e.Fstype = proto.Uint32(uint32(pb.Fstype_TMPFS))
				d.tmpfs[e.GetRootDev()] = filepath.Join(fmt.Sprintf("/proc/%d/root", pid), m.mp)
				break
			}
			if best < 0 {
				return nil, fmt.Errorf("mount %s (%s from %s, root %s) is not visible in crtools' mount namespace; mounts of that kind: %w", m.mp, m.fstype, m.src, m.root, engine.ErrNotSupported)
			}
			h := host[best]
			rel := strings.TrimPrefix(m.root, h.root)
			if h.root == "/" {
				rel = m.root
			}
			path := filepath.Join(h.mp, rel)
			if _, err := os.Stat(path); err != nil {
				return nil, fmt.Errorf("mount %s: bind mount of %s: %w", m.mp, path, err)
			}
			e.Fstype = proto.Uint32(uint32(pb.Fstype_AUTO))
			e.ExtMount, e.ExtKey = proto.Bool(true), proto.String(path)
		}
		d.entries = append(d.entries, e)
	}
	if len(d.entries) == 0 || d.entries[0].GetMountpoint() != "/" {
		return nil, fmt.Errorf("mount namespace of pid %d: its first mount is not /", pid)
	}
	// Sub-mounts inside a tmpfs are other entries: the tar skips them.
	return d, nil
}

func (d *mntDump) write(dir string) error {
	var ms []proto.Message
	for _, e := range d.entries {
		ms = append(ms, e)
	}
	if err := image.WriteFile(dir, image.Mnts, uint64(d.id), ms...); err != nil {
		return fmt.Errorf("write mount table: %w", err)
	}
	var devs []uint32
	for dev := range d.tmpfs {
		devs = append(devs, dev)
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i] < devs[j] })
	for _, dev := range devs {
		if err := writeTar(filepath.Join(dir, tmpfsImageName(dev)), d.tmpfs[dev]); err != nil {
			return fmt.Errorf("save tmpfs contents: %w", err)
		}
	}
	return nil
}

// writeTar saves the tree under src, not crossing into other mounts.
func writeTar(dst, src string) error {
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return fmt.Errorf("stat %s: %w", src, err)
	}
	dev := st.Dev
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	werr := filepath.WalkDir(src, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == src {
			return nil
		}
		info, err := de.Info() // an lstat, as WalkDir does not follow links
		if err != nil {
			return err
		}
		s, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("stat %s: no stat_t", path)
		}
		if s.Dev != dev {
			if de.IsDir() {
				return filepath.SkipDir // another mount
			}
			return nil
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		} else if !info.Mode().IsRegular() && !info.IsDir() {
			rel, _ := filepath.Rel(src, path)
			return fmt.Errorf("%s: special files in a tmpfs: %w", rel, engine.ErrNotSupported)
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		h.Name, _ = filepath.Rel(src, path)
		h.Uid, h.Gid, h.Uname, h.Gname = int(s.Uid), int(s.Gid), "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			in, err := os.Open(path)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, in)
			in.Close()
			return err
		}
		return nil
	})
	// No fsync here: like every other image, the tar is made durable by
	// the commit of the whole images dir (image.SyncDir).
	errs := []error{werr, tw.Close(), zw.Close(), f.Close()}
	return errors.Join(errs...)
}

// extractTar restores a tmpfs' contents into dst (the new tmpfs, seen by
// crtools through /proc/PID/root).
func extractTar(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("read %s: %w", src, err)
	}
	tr := tar.NewReader(zr)
	type dirTime struct {
		path string
		h    *tar.Header
	}
	var dirs []dirTime
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", src, err)
		}
		name := filepath.Clean(h.Name)
		if name == ".." || strings.HasPrefix(name, "../") || filepath.IsAbs(name) {
			return fmt.Errorf("read %s: bad name %q", src, h.Name)
		}
		p := filepath.Join(dst, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(p, fs.FileMode(h.Mode).Perm()); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			dirs = append(dirs, dirTime{p, h})
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				return err
			}
		case tar.TypeReg:
			out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fs.FileMode(h.Mode).Perm())
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("write %s: %w", p, err)
			}
		default:
			return fmt.Errorf("read %s: %s has type %c: %w", src, h.Name, h.Typeflag, engine.ErrNotSupported)
		}
		if err := os.Lchown(p, h.Uid, h.Gid); err != nil {
			return err
		}
		if h.Typeflag != tar.TypeSymlink {
			if err := os.Chmod(p, fs.FileMode(h.Mode).Perm()|modeBits(h.Mode)); err != nil {
				return err
			}
			if h.Typeflag == tar.TypeReg {
				_ = os.Chtimes(p, h.AccessTime, h.ModTime)
			}
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = os.Chtimes(dirs[i].path, dirs[i].h.AccessTime, dirs[i].h.ModTime)
	}
	return nil
}

func modeBits(m int64) fs.FileMode {
	var out fs.FileMode
	if m&04000 != 0 {
		out |= fs.ModeSetuid
	}
	if m&02000 != 0 {
		out |= fs.ModeSetgid
	}
	if m&01000 != 0 {
		out |= fs.ModeSticky
	}
	return out
}

// MountOp is one mount the root task does in its new mount namespace.
type MountOp struct {
	Source, Target, FSType, Data string
	Flags                        uint64
	// Remount: after a bind mount, its per-mount flags (a bind ignores
	// them) are set with MS_REMOUNT|MS_BIND.
	Remount uint64
	// Tar, if set, is the image of the tmpfs' contents to extract once
	// mounted.
	Tar string
	// Mountpoint is the path in the restored tree, for messages.
	Mountpoint string
}

// MntRestore is the mount namespace to rebuild.
type MntRestore struct {
	dir     string
	entries []*pb.MntEntry
}

func loadMnt(dir string, id uint32) (*MntRestore, error) {
	rd, err := image.Open(dir, image.Mnts, uint64(id))
	if err != nil {
		return nil, fmt.Errorf("open mount table image: %w", err)
	}
	defer rd.Close()
	m := &MntRestore{dir: dir}
	for {
		e := &pb.MntEntry{}
		err := rd.Next(e)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read mount table image: %w", err)
		}
		m.entries = append(m.entries, e)
	}
	if len(m.entries) == 0 || m.entries[0].GetMountpoint() != "/" {
		return nil, fmt.Errorf("mount table image: the first mount is not /")
	}
	return m, nil
}

// Ops lists the mounts to do under root (the -r directory, absolute).
func (m *MntRestore) Ops(root string) ([]MountOp, error) {
	if root == "" {
		return nil, fmt.Errorf("restore a mount namespace: give the directory of its root mount with -r/--root")
	}
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("-r/--root %s: not an absolute path", root)
	}
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("-r/--root %s: not a directory (%v)", root, err)
	}
	ops := []MountOp{{Source: root, Target: root, Flags: unix.MS_BIND, Mountpoint: "/"}}
	for _, e := range m.entries[1:] {
		op := MountOp{Target: filepath.Join(root, e.GetMountpoint()), Mountpoint: e.GetMountpoint(), Flags: uint64(e.GetFlags())}
		switch fst := pb.Fstype(e.GetFstype()); {
		case fst == pb.Fstype_TMPFS:
			op.Source, op.FSType, op.Data = e.GetSource(), "tmpfs", e.GetOptions()
			op.Tar = filepath.Join(m.dir, tmpfsImageName(e.GetRootDev()))
		case isNewInstance(fst):
			op.Source, op.FSType, op.Data = e.GetSource(), e.GetFsname(), e.GetOptions()
		case e.GetExtMount() && e.GetExtKey() != "":
			op.Source, op.Flags, op.Remount = e.GetExtKey(), unix.MS_BIND, uint64(e.GetFlags())
		default:
			return nil, fmt.Errorf("restore mount %s (%s): %w", e.GetMountpoint(), e.GetFsname(), engine.ErrNotSupported)
		}
		ops = append(ops, op)
	}
	return ops, nil
}

// ExtractTmpfs puts the saved contents into the mounted tmpfs, through the
// path dst (under /proc/PID/root of the task that mounted it).
func ExtractTmpfs(tarPath, dst string) error {
	if err := extractTar(tarPath, dst); err != nil {
		return fmt.Errorf("restore tmpfs contents into %s: %w", dst, err)
	}
	return nil
}
