package image

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func addFixtureSeeds(f *testing.F, pattern string) {
	names, _ := filepath.Glob(filepath.Join(criuDir, pattern))
	for _, n := range names {
		if filepath.Ext(n) == ".md" || filepath.Ext(n) == ".txt" {
			continue
		}
		b, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		if len(b) > 64<<10 {
			continue // raw pages: no structure to learn from
		}
		f.Add(b)
	}
}

// FuzzReadImage feeds arbitrary bytes to a reader that finds the kind from
// the header, and reads every entry with its payload. It must return an
// error or entries, never panic, and never allocate past its limits.
func FuzzReadImage(f *testing.F) {
	addFixtureSeeds(f, "*")
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader(bytes.NewReader(data), "fuzz.img", nil, int64(len(data)), Limits{MaxEntry: 1 << 20, MaxPayload: 1 << 20})
		if err != nil {
			return
		}
		_, _ = r.ReadAll()
	})
}

// FuzzReadKind reads arbitrary bytes as a given kind with an unknown size
// (a stream), so only the limits protect the reader.
func FuzzReadKind(f *testing.F) {
	addFixtureSeeds(f, "*")
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		k := Kinds[int(data[0])%len(Kinds)]
		if k.Header == HeaderNone {
			return
		}
		r, err := NewReader(bytes.NewReader(data[1:]), "fuzz.img", k, -1, Limits{MaxEntry: 1 << 20, MaxPayload: 1 << 20})
		if err != nil {
			return
		}
		_, _ = r.ReadAll()
	})
}

// FuzzPagemap decodes arbitrary pagemaps and checks that Lookup covers
// exactly the asked range with segments in order.
func FuzzPagemap(f *testing.F) {
	addFixtureSeeds(f, "pagemap-*")
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader(bytes.NewReader(data), "pagemap-1.img", Pagemap, int64(len(data)), Limits{MaxEntry: 1 << 20})
		if err != nil {
			return
		}
		pm, err := DecodePagemap(r)
		if err != nil {
			return
		}
		for _, run := range pm.Runs {
			for _, probe := range [][2]uint64{{run.Vaddr, PageSize}, {run.Vaddr - PageSize, 3 * PageSize}, {run.End() - 1, 2}} {
				segs := pm.Lookup(probe[0], probe[1])
				cur := probe[0]
				end := probe[0] + probe[1]
				if end < cur {
					end = ^uint64(0)
				}
				for _, s := range segs {
					if s.Vaddr != cur || s.Len == 0 {
						t.Fatalf("lookup %#x+%#x: segment %+v at %#x", probe[0], probe[1], s, cur)
					}
					if s.Offset >= 0 && s.Offset+int64(s.Len) > pm.PagesSize {
						t.Fatalf("segment %+v past the pages (%d)", s, pm.PagesSize)
					}
					cur += s.Len
				}
				if cur != end {
					t.Fatalf("lookup %#x+%#x covers up to %#x", probe[0], probe[1], cur)
				}
			}
		}
	})
}
