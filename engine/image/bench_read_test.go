package image

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkReadFixture decodes every image of the CRIU fixture from memory.
func BenchmarkReadFixture(b *testing.B) {
	names, _ := filepath.Glob(filepath.Join(criuDir, "*.img"))
	var files [][]byte
	for _, n := range names {
		if k, _, ok := KindByFilename(n); ok && k.Header != HeaderNone {
			d, _ := os.ReadFile(n)
			files = append(files, d)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, d := range files {
			r, err := NewReader(bytes.NewReader(d), "x.img", nil, int64(len(d)), Limits{})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := r.ReadAll(); err != nil {
				b.Fatal(err)
			}
		}
	}
}
