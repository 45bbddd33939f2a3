package show

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/crtools/crtools/engine/image"
)

// FuzzShowFile renders arbitrary bytes saved under the name of any image
// kind, as text, JSON and with page dumps: an error or output, never a
// panic.
func FuzzShowFile(f *testing.F) {
	names, _ := filepath.Glob(filepath.Join(criuDir, "*"))
	for _, n := range names {
		if b, err := os.ReadFile(n); err == nil && len(b) < 8<<10 {
			f.Add(byte(0), b)
		}
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, sel byte, data []byte) {
		k := image.Kinds[int(sel)%len(image.Kinds)]
		path := k.Path(dir, 1)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		opts := Options{JSON: sel&0x80 != 0, Pages: sel&0x40 != 0}
		_ = File(io.Discard, path, opts)
		os.Remove(path)
	})
}
