package image

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// OpenPath of a FIFO with no writer returns at once with a clear error
// (it blocked in open for ever).
func TestOpenPathFifo(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "pstree.img")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		r, err := OpenPath(fifo, Pstree)
		if err == nil {
			r.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "truncated at offset 0") {
			t.Errorf("OpenPath(fifo without writer) = %v, want a truncated error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OpenPath of a FIFO without a writer blocks")
	}

}
