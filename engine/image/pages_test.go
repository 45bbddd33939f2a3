package image

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/crtools/crtools/engine/image/pb"
)

func page(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n*PageSize) }

func TestPagesWriterRoundTrip(t *testing.T) {
	dir := t.TempDir()
	w, err := CreatePages(dir, Pagemap, 100, 7)
	must(t, err)
	must(t, w.AddRun(0x10000, page(1, 2), 2))
	must(t, w.AddRun(0x12000, page(2, 1), 1)) // adjacent: merged
	must(t, w.AddEntry(0x13000, 3, PEParent)) // other flags: new entry
	must(t, w.AddRun(0x20000, page(3, 4), 4))
	if err := w.AddRun(0x1f000, page(4, 1), 1); err == nil {
		t.Fatal("accepted a run below the previous one")
	}
	must(t, w.Close())

	es, err := ReadFile(dir, Pagemap, 100)
	must(t, err)
	if len(es) != 4 || es[0].Msg.(*pb.PagemapHead).GetPagesId() != 7 {
		t.Fatalf("pagemap has %d entries: %v", len(es), es)
	}
	if e := es[1].Msg.(*pb.PagemapEntry); e.GetNrPages() != 3 || e.GetFlags() != PEPresent {
		t.Errorf("merged run %v", e)
	}
	pr, err := OpenPages(dir, Pagemap, 100)
	must(t, err)
	defer pr.Close()
	if pr.Index.PagesSize != 7*PageSize {
		t.Errorf("pages size %d", pr.Index.PagesSize)
	}
	buf := make([]byte, 0x12000)
	missing, err := pr.ReadAt(buf, 0x10000)
	must(t, err)
	want := append(append(append(page(1, 2), page(2, 1)...), make([]byte, 0xd000)...), page(3, 2)...)
	if !bytes.Equal(buf, want) {
		t.Error("ReadAt returned wrong bytes")
	}
	if missing != 0xd000 {
		t.Errorf("missing %#x bytes, want 0xd000", missing)
	}
	segs := pr.Index.Lookup(0x11000, 0x3000)
	if len(segs) != 2 || segs[0].Offset != PageSize || segs[0].Len != 0x2000 || segs[1].Offset != -1 || segs[1].Flags != PEParent {
		t.Errorf("lookup: %+v", segs)
	}
}

func TestPagesWriterAddRuns(t *testing.T) {
	dir := t.TempDir()
	w, err := CreatePages(dir, Pagemap, 5, 5)
	must(t, err)
	data := append(page(1, 1), page(2, 2)...)
	must(t, w.AddRuns(data, []PageRun{{Vaddr: 0x1000, NrPages: 1}, {Vaddr: 0x5000, NrPages: 2}}))
	if err := w.AddRuns(page(3, 1), []PageRun{{Vaddr: 0x9000, NrPages: 2}}); err == nil {
		t.Fatal("accepted runs that do not match the data")
	}
	must(t, w.AddRuns(page(4, 1), []PageRun{{Vaddr: 0x7000, NrPages: 1}})) // adjacent: merged
	must(t, w.Close())
	pr, err := OpenPages(dir, Pagemap, 5)
	must(t, err)
	defer pr.Close()
	if len(pr.Index.Runs) != 2 || pr.Index.Runs[1].NrPages != 3 {
		t.Fatalf("runs %+v", pr.Index.Runs)
	}
	buf := make([]byte, 3*PageSize)
	_, err = pr.ReadAt(buf, 0x5000)
	must(t, err)
	if !bytes.Equal(buf, append(page(2, 2), page(4, 1)...)) {
		t.Error("AddRuns data read back wrong")
	}
}

func TestPagemapRejectsBadRuns(t *testing.T) {
	for name, entries := range map[string][]*pb.PagemapEntry{
		"unaligned":  {{Vaddr: u64(0x1001), CompatNrPages: u32(1)}},
		"zero":       {{Vaddr: u64(0x1000), CompatNrPages: u32(0)}},
		"overflow":   {{Vaddr: u64(^uint64(0) &^ 0xfff), NrPages: u64(2), CompatNrPages: u32(0)}},
		"overlap":    {{Vaddr: u64(0x1000), CompatNrPages: u32(2)}, {Vaddr: u64(0x2000), CompatNrPages: u32(1)}},
		"compressed": {{Vaddr: u64(0x1000), CompatNrPages: u32(1), Blocks: &pb.PagemapBlocks{TotalPayloadSize: u64(1), PagesPerBlock: u32(1)}}},
	} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			w, _ := NewWriter(&buf, "pm", Pagemap)
			must(t, w.Write(&pb.PagemapHead{PagesId: u32(1)}))
			for _, e := range entries {
				must(t, w.Write(e))
			}
			must(t, w.Close())
			r, err := NewReader(bytes.NewReader(buf.Bytes()), "pagemap-1.img", nil, int64(buf.Len()), Limits{})
			must(t, err)
			var de *DecodeError
			if _, err := DecodePagemap(r); !errors.As(err, &de) {
				t.Fatalf("got %v, want a DecodeError", err)
			}
		})
	}
}

func TestOpenPagesShortFile(t *testing.T) {
	dir := t.TempDir()
	w, err := CreatePages(dir, Pagemap, 1, 1)
	must(t, err)
	must(t, w.AddRun(0x1000, page(9, 2), 2))
	must(t, w.Close())
	must(t, os.Truncate(Pages.Path(dir, 1), PageSize))
	var te *TruncatedError
	if _, err := OpenPages(dir, Pagemap, 1); !errors.As(err, &te) {
		t.Fatalf("got %v, want a TruncatedError", err)
	}
}

func u64(v uint64) *uint64 { return &v }
func u32(v uint32) *uint32 { return &v }

// BenchmarkPagesWriter writes 256 MiB in runs of 64 pages and reports the
// throughput next to a plain memcpy of the same data.
func BenchmarkPagesWriter(b *testing.B) {
	const total = 256 << 20
	const run = 64 * PageSize
	src := page(0x5a, run/PageSize)
	dst := make([]byte, total)
	b.SetBytes(total)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w, err := CreatePages(b.TempDir(), Pagemap, 1, 1)
		if err != nil {
			b.Fatal(err)
		}
		for off := uint64(0); off < total; off += run {
			// A hole every 16 runs forces a new pagemap entry.
			gap := uint64(0)
			if off/run%16 == 0 {
				gap = PageSize
			}
			if err := w.AddRun(0x7f0000000000+off*2+gap, src, run/PageSize); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	t0 := time.Now()
	for off := 0; off < total; off += run {
		copy(dst[off:], src)
	}
	b.ReportMetric(float64(total)/time.Since(t0).Seconds()/1e9, "memcpy-GB/s")
}
