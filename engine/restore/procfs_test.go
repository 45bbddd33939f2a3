package restore

import (
	"os"
	"slices"
	"testing"
)

func TestFindMappingSelf(t *testing.T) {
	start, size, err := findMapping(os.Getpid(), "[vdso]")
	if err != nil {
		t.Fatal(err)
	}
	if start == 0 || size == 0 || size%pageSize != 0 {
		t.Errorf("[vdso] at %#x, %d bytes", start, size)
	}
	if _, _, err := findMapping(os.Getpid(), "[no such mapping]"); err == nil {
		t.Errorf("found a mapping that does not exist")
	}
}

func TestOpenFdsSelf(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fds, err := openFds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(fds, uint64(f.Fd())) {
		t.Errorf("fd %d of %s not among %v", f.Fd(), os.DevNull, fds)
	}
	f.Close()
	fds2, err := openFds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(fds2, uint64(f.Fd())) && len(fds2) >= len(fds) {
		t.Errorf("closed fd still listed: %v", fds2)
	}
}
