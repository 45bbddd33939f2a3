package image

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// SyncDir makes everything written under dir durable: one syncfs(2) of
// dir's filesystem (data and metadata of every file written, errors of any
// earlier writeback included) and an fsync of dir itself. Writers do not
// fsync each image on Close: whoever publishes a set of images (the
// executor's commit, the page server's) calls this once before the rename
// that makes them visible, instead of an fsync per file (hundreds for a
// tree, each a journal commit on a disk).
func SyncDir(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s for sync: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
