package dump

import "testing"

// TestPlanBatches: the batches the readers share cover the ranges in
// address order, back to back in the pages file, each within batchBytes
// and maxIov, with a range read through /proc/PID/mem in batches of its
// own of one run each.
func TestPlanBatches(t *testing.T) {
	const mib = 1 << 20
	var ranges []pageRange
	// Many one-page ranges (more than maxIov), a big range, a viaMem
	// range bigger than a batch, and a plain range after it.
	for i := range uint64(maxIov + 10) {
		ranges = append(ranges, pageRange{start: 0x100000 + 2*i*pageSize, end: 0x100000 + (2*i+1)*pageSize})
	}
	ranges = append(ranges,
		pageRange{start: 0x10000000, end: 0x10000000 + 20*mib},
		pageRange{start: 0x20000000, end: 0x20000000 + 10*mib, viaMem: true},
		pageRange{start: 0x30000000, end: 0x30000000 + 3*pageSize},
	)
	plans := planBatches(ranges)
	var want uint64
	for _, r := range ranges {
		want += r.end - r.start
	}
	var off, last uint64
	var got []pageRange
	for i, p := range plans {
		if p.off != off {
			t.Fatalf("batch %d at offset %d, want %d", i, p.off, off)
		}
		if p.bytes == 0 || p.bytes > batchBytes || len(p.runs) > maxIov {
			t.Fatalf("batch %d: %d bytes in %d runs", i, p.bytes, len(p.runs))
		}
		if p.viaMem && len(p.runs) != 1 {
			t.Fatalf("batch %d via /proc/PID/mem has %d runs", i, len(p.runs))
		}
		var n uint64
		for _, r := range p.runs {
			if r.start < last {
				t.Fatalf("batch %d: run %#x before %#x", i, r.start, last)
			}
			last = r.end
			n += r.end - r.start
			if k := len(got); k > 0 && got[k-1].end == r.start && got[k-1].viaMem == p.viaMem {
				got[k-1].end = r.end
			} else {
				got = append(got, pageRange{start: r.start, end: r.end, viaMem: p.viaMem})
			}
		}
		if n != p.bytes {
			t.Fatalf("batch %d: runs hold %d bytes, plan says %d", i, n, p.bytes)
		}
		off += p.bytes
	}
	if off != want {
		t.Fatalf("batches hold %d bytes, ranges %d", off, want)
	}
	if len(got) != len(ranges) {
		t.Fatalf("batches cover %d ranges, want %d", len(got), len(ranges))
	}
	for i := range got {
		if got[i] != ranges[i] {
			t.Fatalf("range %d covered as %+v, want %+v", i, got[i], ranges[i])
		}
	}
	if len(plans) < 2+3+2 {
		t.Fatalf("%d batches: cut too coarsely", len(plans))
	}
}
