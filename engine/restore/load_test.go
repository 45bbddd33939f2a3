package restore

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
)

// TestLoadCRIUFixture: load reads the CRIU 4.2 fixture (a 2-task tree with
// pipes, a ghost file, a memfd and shared memory) to what image.ReadOne
// and image.ReadPagemap read from each file, through its own readers, the
// image cache and the shared core parts.
func TestLoadCRIUFixture(t *testing.T) {
	dir := filepath.Join("..", "image", "testdata", "criu-4.2-tree")
	img, err := load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(img.tasks) != 2 {
		t.Fatalf("%d tasks, want 2", len(img.tasks))
	}
	for _, ti := range img.tasks {
		for _, tid := range ti.tids {
			want := &pb.CoreEntry{}
			if err := image.ReadOne(dir, image.Core, uint64(tid), want); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(ti.cores[tid], want) {
				t.Errorf("core of %d differs from image.ReadOne's", tid)
			}
		}
		mm := &pb.MmEntry{}
		if err := image.ReadOne(dir, image.MM, uint64(ti.pid), mm); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(ti.mm, mm) {
			t.Errorf("mm of %d differs", ti.pid)
		}
		ids := &pb.TaskKobjIdsEntry{}
		if err := image.ReadOne(dir, image.IDs, uint64(ti.pid), ids); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(ti.ids, ids) {
			t.Errorf("ids of %d differ", ti.pid)
		}
		pm, err := image.ReadPagemap(dir, image.Pagemap, uint64(ti.pid))
		if err != nil {
			t.Fatal(err)
		}
		if pm.File != ti.pagemap.File || pm.PagesID != ti.pagemap.PagesID || pm.PagesSize != ti.pagemap.PagesSize || len(pm.Runs) != len(ti.pagemap.Runs) {
			t.Errorf("pagemap of %d differs: %+v, want %+v", ti.pid, ti.pagemap, pm)
		}
		es, err := image.ReadFile(dir, image.Fdinfo, uint64(ids.GetFilesId()))
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != len(ti.fds) {
			t.Fatalf("task %d: %d fds, want %d", ti.pid, len(ti.fds), len(es))
		}
		for i, e := range es {
			if !proto.Equal(e.Msg, ti.fds[i]) {
				t.Errorf("task %d: fd %d differs", ti.pid, i)
			}
		}
	}
	// The two tasks were forked from one program: one creds message.
	a, b := img.tasks[0].core(), img.tasks[1].core()
	if a.GetThreadCore().GetCreds() != b.GetThreadCore().GetCreds() {
		t.Errorf("the tasks' identical creds are two messages")
	}
	if len(img.shmem) == 0 || img.memfds == nil || img.special == nil {
		t.Errorf("shared memory, memfds or special files not loaded: %d %v %v", len(img.shmem), img.memfds, img.special)
	}
}

// BenchmarkLoadCRIUFixture: load of the CRIU 4.2 fixture (warm: the
// first-touch page faults that dominate a fresh crtools are not in it;
// allocs/op is the figure to watch).
func BenchmarkLoadCRIUFixture(b *testing.B) {
	dir := filepath.Join("..", "image", "testdata", "criu-4.2-tree")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := load(dir); err != nil {
			b.Fatal(err)
		}
	}
}

// TestLoadNotADirectory: a missing images directory and a file given as
// one fail load with an error that names the path and says why.
func TestLoadNotADirectory(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ dir, want string }{
		{filepath.Join(tmp, "nope"), "no such file or directory"},
		{file, "not a directory"},
	} {
		_, err := load(c.dir)
		if err == nil || !strings.HasPrefix(err.Error(), "open images directory") ||
			!strings.Contains(err.Error(), c.dir) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("load(%s): %v; want an error naming it and saying %q", c.dir, err, c.want)
		} else {
			t.Log(err)
		}
	}
}
