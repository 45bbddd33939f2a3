package files

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/proc"
)

// inotify: each watch is a fdinfo line
//
//	inotify wd:1 ino:3c4a3 sdev:fe00000 mask:80000100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a3c4030000000000
//
// The watched inode is named by a file handle. At dump time the handle is
// also resolved to a path (open_by_handle_at on the mount with that device,
// then the /proc/self/fd link) and kept in the handle entry: restore adds
// the watch by path and falls back to the handle. Watches are added again in
// wd order, so a program that remembered its wd numbers finds them again;
// events that were queued but not read at dump time are not kept.

func (d *Dumper) dumpInotify(e *pb.FileEntry, id, flags uint32, fown *pb.FownEntry, info *fdinfo) error {
	ie := &pb.InotifyFileEntry{Id: u32p(id), Flags: u32p(flags), Fown: fown}
	for _, l := range info.withPrefix("inotify ") {
		m := fields(l)
		var v [7]uint64
		for i, k := range []string{"wd", "ino", "sdev", "mask", "ignored_mask", "fhandle-bytes", "fhandle-type"} {
			n, err := hexField(m, k)
			if err != nil {
				return fmt.Errorf("parse inotify watch %q: %w", l, err)
			}
			v[i] = n
		}
		raw, err := hex.DecodeString(m["f_handle"])
		if err != nil || uint64(len(raw)) != v[5] {
			return fmt.Errorf("parse inotify watch %q: bad f_handle", l)
		}
		fh := &pb.FhEntry{Bytes: u32p(uint32(v[5])), Type: u32p(uint32(v[6])), Handle: packHandle(raw)}
		if p, err := handlePath(uint32(v[2]), int32(v[6]), raw); err == nil {
			fh.Path = strp(p)
		} else {
			d.log.Warn().Err(err).Uint64("wd", v[0]).Msg("cannot resolve inotify watch to a path; restore will use the file handle")
		}
		ie.Wd = append(ie.Wd, &pb.InotifyWdEntry{
			Id: u32p(id), IIno: u64p(v[1]), Mask: u32p(uint32(v[3])), IgnoredMask: u32p(uint32(v[4])),
			SDev: u32p(uint32(v[2])), Wd: u32p(uint32(v[0])), FHandle: fh,
		})
	}
	sort.Slice(ie.Wd, func(i, j int) bool { return ie.Wd[i].GetWd() < ie.Wd[j].GetWd() })
	e.Ify = ie
	return nil
}

func packHandle(b []byte) []uint64 {
	out := make([]uint64, (len(b)+7)/8)
	for i, c := range b {
		out[i/8] |= uint64(c) << (8 * (i % 8))
	}
	return out
}

func unpackHandle(words []uint64, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		if i/8 < len(words) {
			b[i] = byte(words[i/8] >> (8 * (i % 8)))
		}
	}
	return b
}

// mountForDev finds a mount point of the file system with kernel device
// number sdev (MKDEV: major<<20 | minor) in crtools' mount namespace.
func mountForDev(sdev uint32) (string, error) {
	want := fmt.Sprintf("%d:%d", sdev>>20, sdev&0xfffff)
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 4 && fs[2] == want {
			return proc.UnescapeOctal(fs[4]), nil
		}
	}
	return "", fmt.Errorf("no mount of device %s", want)
}

// openHandle opens the inode a file handle names, O_PATH.
func openHandle(sdev uint32, typ int32, raw []byte) (*os.File, error) {
	mnt, err := mountForDev(sdev)
	if err != nil {
		return nil, err
	}
	mfd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0) // not O_PATH: open_by_handle_at refuses it (EBADF)
	if err != nil {
		return nil, fmt.Errorf("open mount %s: %w", mnt, err)
	}
	defer unix.Close(mfd)
	fd, err := unix.OpenByHandleAt(mfd, unix.NewFileHandle(typ, raw), unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("open file handle on %s: %w", mnt, os.NewSyscallError("open_by_handle_at", err))
	}
	return os.NewFile(uintptr(fd), "handle"), nil
}

func handlePath(sdev uint32, typ int32, raw []byte) (string, error) {
	f, err := openHandle(sdev, typ, raw)
	if err != nil {
		return "", err
	}
	defer f.Close()
	p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		return "", err
	}
	if strings.HasSuffix(p, " (deleted)") {
		return "", fmt.Errorf("watched file %s is deleted", p)
	}
	return p, nil
}

func openInotify(e *pb.FileEntry, log func(string, ...any)) (*os.File, error) {
	ie := e.GetIfy()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("create inotify %d: %w", ie.GetId(), os.NewSyscallError("inotify_init1", err))
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("inotify%d", ie.GetId()))
	fail := func(err error) (*os.File, error) { f.Close(); return nil, err }
	removed := false
	for _, w := range ie.GetWd() {
		path, closeFn, err := watchPath(w)
		if err != nil {
			return fail(fmt.Errorf("restore inotify %d watch %d: %w", ie.GetId(), w.GetWd(), err))
		}
		want := int(w.GetWd())
		for {
			got, err := unix.InotifyAddWatch(fd, path, w.GetMask())
			if err != nil {
				closeFn()
				return fail(fmt.Errorf("restore inotify %d watch %d on %s: %w", ie.GetId(), want, path, os.NewSyscallError("inotify_add_watch", err)))
			}
			if got >= want {
				if got > want {
					log("inotify watch %d on %s came back as wd %d", want, path, got)
				}
				break
			}
			// wds are handed out cyclically: drop this one and take the
			// next number until we reach the dumped one.
			if _, err := unix.InotifyRmWatch(fd, uint32(got)); err != nil {
				closeFn()
				return fail(fmt.Errorf("restore inotify %d: remove wd %d: %w", ie.GetId(), got, os.NewSyscallError("inotify_rm_watch", err)))
			}
			removed = true
		}
		closeFn()
	}
	if removed {
		// inotify_rm_watch queued IN_IGNORED events the program must not see.
		buf := make([]byte, 64<<10)
		for {
			if n, err := unix.Read(fd, buf); err != nil || n <= 0 {
				break
			}
		}
	}
	if err := setFileFlags(f, ie.GetFlags()); err != nil {
		return fail(err)
	}
	return f, nil
}

// watchPath returns a path to watch for w: the saved path if it still names
// the same inode, else the file handle opened through /proc/self/fd.
func watchPath(w *pb.InotifyWdEntry) (string, func(), error) {
	fh := w.GetFHandle()
	if p := fh.GetPath(); p != "" {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err == nil && st.Ino == w.GetIIno() {
			return p, func() {}, nil
		}
	}
	raw := unpackHandle(fh.GetHandle(), int(fh.GetBytes()))
	f, err := openHandle(w.GetSDev(), int32(fh.GetType()), raw)
	if err != nil {
		return "", nil, fmt.Errorf("find watched inode %d: %w", w.GetIIno(), err)
	}
	return fmt.Sprintf("/proc/self/fd/%d", f.Fd()), func() { f.Close() }, nil
}
