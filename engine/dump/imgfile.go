package dump

import (
	"bytes"
	"fmt"
	"os"

	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image"
)

// writeImage writes a small image file (core, mm, ids, ...) in one write
// and without an fsync of its own. A dump writes one core per thread; an
// fsync each (a journal commit on ext4) made a 64-thread dump spend most of
// its time there. The executor's commit step fsyncs every file of the
// images directory and the directory itself before renaming it into place
// (DESIGN.md, "Rollback contract"), which is where durability comes from.
func writeImage(dir string, kind *image.Kind, id uint64, msgs ...proto.Message) error {
	var buf bytes.Buffer
	w, err := image.NewWriter(&buf, kind.Path(dir, id), kind)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if err := w.Write(m); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := os.WriteFile(kind.Path(dir, id), buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", kind.Path(dir, id), err)
	}
	return nil
}
