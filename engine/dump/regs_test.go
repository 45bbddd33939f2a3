package dump

import (
	"encoding/binary"
	"slices"
	"testing"

	"github.com/crtools/crtools/engine/cpu"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/proc"
	"github.com/crtools/crtools/engine/ptrace"
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

// TestRegsEntry: every register lands in its own field.
func TestRegsEntry(t *testing.T) {
	r := ptrace.Regs{R15: 1, R14: 2, R13: 3, R12: 4, Rbp: 5, Rbx: 6, R11: 7, R10: 8, R9: 9, R8: 10,
		Rax: 11, Rcx: 12, Rdx: 13, Rsi: 14, Rdi: 15, Orig_rax: 16, Rip: 17, Cs: 18, Eflags: 19,
		Rsp: 20, Ss: 21, Fs_base: 22, Gs_base: 23, Ds: 24, Es: 25, Fs: 26, Gs: 27}
	e := regsEntry(&r)
	got := []uint64{e.GetR15(), e.GetR14(), e.GetR13(), e.GetR12(), e.GetBp(), e.GetBx(), e.GetR11(), e.GetR10(),
		e.GetR9(), e.GetR8(), e.GetAx(), e.GetCx(), e.GetDx(), e.GetSi(), e.GetDi(), e.GetOrigAx(), e.GetIp(),
		e.GetCs(), e.GetFlags(), e.GetSp(), e.GetSs(), e.GetFsBase(), e.GetGsBase(), e.GetDs(), e.GetEs(),
		e.GetFs(), e.GetGs()}
	for i, v := range got {
		if v != uint64(i+1) {
			t.Errorf("field %d of the entry is %d, want %d", i, v, i+1)
		}
	}
	if e.GetMode() != pb.UserX86RegsMode_NATIVE {
		t.Errorf("mode %v", e.GetMode())
	}
}

// TestCreds: ids, capability sets (two words each, low first), securebits
// and no_new_privs land in their fields.
func TestCreds(t *testing.T) {
	s := &proc.Status{Uid: [4]uint32{1, 2, 3, 4}, Gid: [4]uint32{5, 6, 7, 8}, CapInh: 0x1_0000_0002,
		CapPrm: 0x3_0000_0004, CapEff: 0x5_0000_0006, CapBnd: 0x7_0000_0008, CapAmb: 0x9_0000_000a, NoNewPrivs: 1}
	c := creds(s, 0x2f)
	ids := []uint32{c.GetUid(), c.GetEuid(), c.GetSuid(), c.GetFsuid(), c.GetGid(), c.GetEgid(), c.GetSgid(), c.GetFsgid()}
	if !slices.Equal(ids, []uint32{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Errorf("ids %v", ids)
	}
	for _, x := range []struct {
		got  []uint32
		want []uint32
	}{{c.CapInh, []uint32{2, 1}}, {c.CapPrm, []uint32{4, 3}}, {c.CapEff, []uint32{6, 5}}, {c.CapBnd, []uint32{8, 7}}, {c.CapAmb, []uint32{10, 9}}} {
		if !slices.Equal(x.got, x.want) || cap(x.got) != 2 {
			t.Errorf("capability set %v (cap %d), want %v", x.got, cap(x.got), x.want)
		}
	}
	if c.GetSecbits() != 0x2f || c.GetNoNewPrivs() != 1 || c.Groups == nil {
		t.Errorf("secbits %#x, no_new_privs %d, groups %v", c.GetSecbits(), c.GetNoNewPrivs(), c.Groups)
	}
}
