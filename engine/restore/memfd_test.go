package restore

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
)

// TestFillMemfd: a memfd gets the dumped size (not rounded to pages: the
// last page is cut at EOF), the saved pages where they were, zeros in the
// holes, and the mode; a run past EOF is ignored.
func TestFillMemfd(t *testing.T) {
	dir := t.TempDir()
	pages := append(bytes.Repeat([]byte{'A'}, pageSize), bytes.Repeat([]byte{'B'}, pageSize)...)
	pages = append(pages, bytes.Repeat([]byte{'C'}, pageSize)...)
	if err := os.WriteFile(filepath.Join(dir, image.Pages.FileName(7)), pages, 0o600); err != nil {
		t.Fatal(err)
	}
	img := &imageSet{dir: dir, shmem: map[uint64]*image.PageIndex{
		42: {PagesID: 7, Runs: []image.PageRun{
			{Vaddr: 0, NrPages: 1, Offset: 0},
			{Vaddr: 2 * pageSize, NrPages: 1, Offset: pageSize},
			{Vaddr: 4 * pageSize, NrPages: 1, Offset: 2 * pageSize}, // past EOF
		}},
	}}
	m := &pb.MemfdInodeEntry{Name: proto.String("t"), Size: proto.Uint64(2*pageSize + 100), Shmid: proto.Uint32(42),
		Mode: proto.Uint32(unix.S_IFREG | 0o640), Uid: proto.Uint32(uint32(os.Getuid())), Gid: proto.Uint32(uint32(os.Getgid()))}
	fd, err := unix.MemfdCreate("crtools-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "memfd")
	defer f.Close()
	if err := img.fillMemfd(f, m); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 3*pageSize)
	n, _ := f.ReadAt(got, 0)
	want := append(bytes.Repeat([]byte{'A'}, pageSize), make([]byte, pageSize)...)
	want = append(want, bytes.Repeat([]byte{'B'}, 100)...)
	if !bytes.Equal(got[:n], want) {
		t.Errorf("contents: got %d bytes, want %d (A page, hole, 100 B)", n, len(want))
	}
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", st.Mode().Perm())
	}
}
