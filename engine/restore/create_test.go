package restore

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image/pb"
)

func TestShareSourceOf(t *testing.T) {
	task := func(pid int, parent *taskImage, files, fs uint32) *taskImage {
		ti := &taskImage{pid: pid, parent: parent, cores: map[int]*pb.CoreEntry{
			pid: {Tc: &pb.TaskCoreEntry{TaskState: proto.Uint32(taskAlive)}}},
			ids: &pb.TaskKobjIdsEntry{FilesId: proto.Uint32(files), FsId: proto.Uint32(fs)}}
		if parent != nil {
			parent.children = append(parent.children, ti)
		}
		return ti
	}
	root := task(1, nil, 1, 1)
	own := task(2, root, 2, 2)     // fork: nothing shared
	files := task(3, root, 1, 3)   // CLONE_FILES from root
	both := task(4, root, 1, 1)    // CLONE_FILES|CLONE_FS from root
	sib := task(5, own, 5, 5)      // child of 2
	sibShare := task(6, own, 5, 6) // shares files with sibling 5
	grand := task(7, sib, 7, 1)    // shares fs with root: not reachable
	split := task(8, root, 1, 2)   // files with root, fs with 2
	done := []*taskImage{root, own, files, both, sib, sibShare, grand, split}

	for _, tc := range []struct {
		t       *taskImage
		from    *taskImage
		flags   uint64
		sibling bool
		err     bool
	}{
		{t: own, from: root},
		{t: files, from: root, flags: unix.CLONE_FILES},
		{t: both, from: root, flags: unix.CLONE_FILES | unix.CLONE_FS},
		{t: sib, from: own},
		{t: sibShare, from: sib, flags: unix.CLONE_FILES, sibling: true},
		{t: grand, err: true},
		{t: split, err: true},
	} {
		// Only the tasks before t are created when t is.
		i := 0
		for done[i] != tc.t {
			i++
		}
		src, err := shareSourceOf(tc.t, done[:i])
		if tc.err {
			if !errors.Is(err, engine.ErrNotSupported) {
				t.Errorf("task %d: err %v, want ErrNotSupported", tc.t.pid, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("task %d: %v", tc.t.pid, err)
			continue
		}
		if src.from != tc.from || src.flags != tc.flags || src.sibling != tc.sibling ||
			src.files != (tc.flags&unix.CLONE_FILES != 0) || src.fs != (tc.flags&unix.CLONE_FS != 0) {
			t.Errorf("task %d: from %d flags %#x sibling %v, want from %d flags %#x sibling %v",
				tc.t.pid, src.from.pid, src.flags, src.sibling, tc.from.pid, tc.flags, tc.sibling)
		}
	}
}
