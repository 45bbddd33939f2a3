package ns

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/proc"
)

// TestReadMountinfo parses crtools' own mount table: the first entry is
// "/", every entry has a type, and the escapes of mountinfo are undone.
func TestReadMountinfo(t *testing.T) {
	ms, err := readMountinfo("self")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		t.Fatal("no mounts")
	}
	root := false
	for _, m := range ms {
		if m.fstype == "" || m.id == 0 || !strings.HasPrefix(m.mp, "/") {
			t.Errorf("bad entry %+v", m)
		}
		root = root || m.mp == "/"
	}
	if !root {
		t.Error("no / in crtools' mount table")
	}
	if got := proc.UnescapeOctal(`/a\040b\011c`); got != "/a b\tc" {
		t.Errorf("unescape: %q", got)
	}
}

func TestMountOptions(t *testing.T) {
	if f := mountFlags("ro,nosuid,nodev,relatime"); f != unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_RELATIME {
		t.Errorf("mountFlags: %#x", f)
	}
	if d := superData("rw,size=4096k,mode=1777"); d != "size=4096k,mode=1777" {
		t.Errorf("superData: %q", d)
	}
}

// TestMntOps: restore needs an absolute -r directory, and a mount kind it
// does not know is refused naming the mount point.
func TestMntOps(t *testing.T) {
	dir := t.TempDir()
	m := &MntRestore{dir: dir, entries: []*pb.MntEntry{
		{Mountpoint: proto.String("/"), Fstype: proto.Uint32(uint32(pb.Fstype_AUTO))},
		{Mountpoint: proto.String("/tmp"), Fstype: proto.Uint32(uint32(pb.Fstype_TMPFS)), Source: proto.String("tmpfs"),
			Options: proto.String("size=1m"), RootDev: proto.Uint32(42), Flags: proto.Uint32(unix.MS_NOSUID)},
		{Mountpoint: proto.String("/data"), Fstype: proto.Uint32(uint32(pb.Fstype_AUTO)), ExtMount: proto.Bool(true), ExtKey: proto.String("/srv")},
	}}
	for _, bad := range []string{"", "rel/dir", filepath.Join(dir, "missing")} {
		if _, err := m.Ops(bad); err == nil || !strings.Contains(err.Error(), "-r") {
			t.Errorf("Ops(%q): %v, want an error naming -r", bad, err)
		}
	}
	ops, err := m.Ops(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 3 || ops[0].Source != dir || ops[0].Target != dir || ops[0].Flags != unix.MS_BIND {
		t.Fatalf("ops %+v: want the -r bind first", ops)
	}
	if o := ops[1]; o.Target != filepath.Join(dir, "tmp") || o.FSType != "tmpfs" || o.Data != "size=1m" || o.Tar != filepath.Join(dir, "tmpfs-dev-42.tar.gz.img") {
		t.Errorf("tmpfs op %+v", o)
	}
	if o := ops[2]; o.Source != "/srv" || o.Flags != unix.MS_BIND {
		t.Errorf("bind op %+v", o)
	}
	m.entries = append(m.entries, &pb.MntEntry{Mountpoint: proto.String("/mnt/img"), Fstype: proto.Uint32(uint32(pb.Fstype_FUSE)), Fsname: proto.String("fuse")})
	if _, err := m.Ops(dir); !errors.Is(err, engine.ErrNotSupported) || !strings.Contains(err.Error(), "/mnt/img") {
		t.Errorf("fuse mount: %v, want not supported naming /mnt/img", err)
	}
}

// TestTarRoundTrip saves a directory (files, a sub-directory, a symlink,
// modes) and extracts it elsewhere.
func TestTarRoundTrip(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(src, "a"), []byte("alpha"), 0o640))
	must(os.Mkdir(filepath.Join(src, "d"), 0o750))
	must(os.WriteFile(filepath.Join(src, "d", "b"), []byte("beta"), 0o600))
	must(os.Symlink("d/b", filepath.Join(src, "l")))
	img := filepath.Join(t.TempDir(), "t.tar.gz.img")
	must(writeTar(img, src))
	must(extractTar(img, dst))
	for name, want := range map[string]string{"a": "alpha", "d/b": "beta", "l": "beta"} {
		b, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", name, b, err, want)
		}
	}
	if fi, err := os.Stat(filepath.Join(dst, "d")); err != nil || fi.Mode().Perm() != 0o750 {
		t.Errorf("d: %v %v, want mode 0750", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "a")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("a: %v %v, want mode 0640", fi, err)
	}
}
