package cpu

import (
	"testing"

	"github.com/crtools/crtools/test/testenv"
)

// TestXStateLayout checks what holds on every x86-64 CPU with AVX: the
// upper YMM halves sit right after the legacy area and the XSAVE header.
func TestXStateLayout(t *testing.T) {
	c, ok := XStateComponent(2)
	if !ok {
		testenv.SkipOrFail(t, "CPU without AVX (no xstate component 2); CI machines have it")
	}
	if c.Offset != 576 || c.Size != 256 {
		t.Errorf("AVX component at %d (+%d), want 576 (+256)", c.Offset, c.Size)
	}
	for b := 3; b < 32; b++ {
		if o, ok := XStateComponent(b); ok {
			t.Logf("xfeature %d: offset %d size %d", b, o.Offset, o.Size)
			if o.Offset < 576+256 {
				t.Errorf("xfeature %d at %d overlaps AVX", b, o.Offset)
			}
		}
	}
}
