package files

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestKcmpIndex: descriptors of one open file description get one id,
// others a new one each, whatever the order they are looked up in.
func TestKcmpIndex(t *testing.T) {
	var fds, want []int // want[i]: which open file fds[i] is
	for n := 0; n < 9; n++ {
		f, err := os.Open("/dev/null")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fds, want = append(fds, int(f.Fd())), append(want, n)
		for k := 0; k < n%3; k++ { // dups share the open file
			d, err := unix.Dup(int(f.Fd()))
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(d)
			fds, want = append(fds, d), append(want, n)
		}
	}
	var next uint32
	ix := &KcmpIndex{Type: KcmpFile}
	ids := map[int]uint32{} // open file -> id
	pid := os.Getpid()
	for i, fd := range fds {
		id, found, err := ix.Find(pid, uintptr(fd), func() uint32 { next++; return next })
		if err != nil {
			t.Fatalf("Find fd %d: %v", fd, err)
		}
		prev, seen := ids[want[i]]
		if found != seen || (seen && id != prev) {
			t.Errorf("fd %d (file %d): id %d found %v, want found %v id %d", fd, want[i], id, found, seen, prev)
		}
		ids[want[i]] = id
	}
	if ix.Len() != 9 {
		t.Errorf("%d objects recorded, want 9", ix.Len())
	}
}
