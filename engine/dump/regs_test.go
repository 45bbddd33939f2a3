package dump

import (
	"encoding/binary"
	"slices"
	"testing"

	"github.com/crtools/crtools/engine/cpu"
)

// TestWords: words32 and words64 give the little-endian words of b, from
// an aligned buffer (a view of it) and from a misaligned one (a copy) alike.
func TestWords(t *testing.T) {
	buf := make([]byte, 8*65)
	for i := range buf {
		buf[i] = byte(i*7 + 3)
	}
	for _, off := range []int{0, 1, 4} {
		b := buf[off : off+8*64]
		if got, want := words32(b), copyWords32(b); !slices.Equal(got, want) {
			t.Errorf("offset %d: words32 %x, want %x", off, got[:4], want[:4])
		}
		if got, want := words64(b), copyWords64(b); !slices.Equal(got, want) {
			t.Errorf("offset %d: words64 %x, want %x", off, got[:2], want[:2])
		}
		for i := 0; i < 64; i++ {
			if w := words64(b)[i]; w != binary.LittleEndian.Uint64(b[i*8:]) {
				t.Fatalf("offset %d: word %d is %#x", off, i, w)
			}
		}
	}
	if w := words32(buf[:4]); cap(w) != len(w) {
		t.Errorf("a view with room beyond its words: len %d cap %d", len(w), cap(w))
	}
}

// TestFpregsEntry: the legacy area and the XSAVE components of an
// NT_X86_XSTATE buffer land in their fields with their values.
func TestFpregsEntry(t *testing.T) {
	size := 4096
	xs := make([]byte, size)
	for i := range xs {
		xs[i] = byte(i * 13)
	}
	// xfeatures in sw_reserved: x87, SSE, AVX and every component the
	// CPU has.
	binary.LittleEndian.PutUint64(xs[464:], ^uint64(0))
	f, err := fpregsEntry(xs)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.StSpace, copyWords32(xs[32:160])) || !slices.Equal(f.XmmSpace, copyWords32(xs[160:416])) ||
		!slices.Equal(f.Padding, copyWords32(xs[416:512])) {
		t.Errorf("legacy area: st %x xmm %x", f.StSpace[:2], f.XmmSpace[:2])
	}
	if f.GetMxcsr() != binary.LittleEndian.Uint32(xs[24:]) || f.GetXsave().GetXstateBv() != binary.LittleEndian.Uint64(xs[512:]) {
		t.Errorf("mxcsr %#x, xstate_bv %#x", f.GetMxcsr(), f.GetXsave().GetXstateBv())
	}
	if c, ok := cpu.XStateComponent(2); ok && c.Offset+c.Size <= size {
		if !slices.Equal(f.GetXsave().GetYmmhSpace(), copyWords32(xs[c.Offset:c.Offset+c.Size])) {
			t.Errorf("AVX component at %d: %x", c.Offset, f.GetXsave().GetYmmhSpace()[:2])
		}
	}
	if c, ok := cpu.XStateComponent(6); ok && c.Offset+c.Size <= size {
		if !slices.Equal(f.GetXsave().GetZmmUpper(), copyWords64(xs[c.Offset:c.Offset+c.Size])) {
			t.Errorf("ZMM_Hi256 component at %d: %x", c.Offset, f.GetXsave().GetZmmUpper()[:2])
		}
	}
}
