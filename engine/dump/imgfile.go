package dump

import (
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image"
)

// writeImage writes a small image file (core, mm, ids, ...) without an
// fsync of its own. A dump writes one core per thread; an fsync each (a
// journal commit on ext4) made a 64-thread dump spend most of its time
// there. The executor's commit step makes the whole images directory
// durable at once (image.SyncDir: one syncfs and an fsync of the
// directory) before renaming it into place (DESIGN.md, "Rollback
// contract"). image.WriteFile opens without Go's poller and encodes into a
// reused buffer: a dump of 50 tasks writes some 250 images, and a new
// buffer for each was a fresh page or two (a page fault each on this kind
// of host).
func writeImage(dir string, kind *image.Kind, id uint64, msgs ...proto.Message) error {
	return image.WriteFile(dir, kind, id, msgs...)
}
