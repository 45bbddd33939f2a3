package dump

import (
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/cpu"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/ptrace"
)

// regsEntry makes the image's general registers of r. The 27 values share
// one allocation (proto.Uint64 makes one each: 27 a thread).
func regsEntry(r *ptrace.Regs) *pb.UserX86RegsEntry {
	v := &[27]uint64{r.R15, r.R14, r.R13, r.R12, r.Rbp, r.Rbx, r.R11, r.R10, r.R9, r.R8, r.Rax, r.Rcx,
		r.Rdx, r.Rsi, r.Rdi, r.Orig_rax, r.Rip, r.Cs, r.Eflags, r.Rsp, r.Ss, r.Fs_base, r.Gs_base,
		r.Ds, r.Es, r.Fs, r.Gs}
	return &pb.UserX86RegsEntry{
		R15: &v[0], R14: &v[1], R13: &v[2], R12: &v[3], Bp: &v[4], Bx: &v[5],
		R11: &v[6], R10: &v[7], R9: &v[8], R8: &v[9], Ax: &v[10], Cx: &v[11],
		Dx: &v[12], Si: &v[13], Di: &v[14], OrigAx: &v[15], Ip: &v[16], Cs: &v[17],
		Flags: &v[18], Sp: &v[19], Ss: &v[20], FsBase: &v[21], GsBase: &v[22],
		Ds: &v[23], Es: &v[24], Fs: &v[25], Gs: &v[26],
		Mode: pb.UserX86RegsMode_NATIVE.Enum(),
	}
}

// xsaveComponents say how each XSAVE state component maps to a field of
// UserX86XsaveEntry. Where a component sits in the NT_X86_XSTATE buffer is
// NOT architectural (AMD packs them: opmask at 832 where Intel has 1088), so
// offsets and sizes come from CPUID leaf 0xD (engine/cpu), which restore
// uses too.
var xsaveComponents = []struct {
	bit       int
	wordsOf32 bool
	set       func(x *pb.UserX86XsaveEntry, w32 []uint32, w64 []uint64)
}{
	{bit: 2, wordsOf32: true, set: func(x *pb.UserX86XsaveEntry, w32 []uint32, _ []uint64) { x.YmmhSpace = w32 }},
	{bit: 3, set: func(x *pb.UserX86XsaveEntry, _ []uint32, w64 []uint64) { x.BndregState = w64 }},
	{bit: 4, set: func(x *pb.UserX86XsaveEntry, _ []uint32, w64 []uint64) { x.BndcsrState = w64 }},
	{bit: 5, set: func(x *pb.UserX86XsaveEntry, _ []uint32, w64 []uint64) { x.OpmaskReg = w64 }},
	{bit: 6, set: func(x *pb.UserX86XsaveEntry, _ []uint32, w64 []uint64) { x.ZmmUpper = w64 }},
	{bit: 7, set: func(x *pb.UserX86XsaveEntry, _ []uint32, w64 []uint64) { x.Hi16Zmm = w64 }},
	{bit: 9, wordsOf32: true, set: func(x *pb.UserX86XsaveEntry, w32 []uint32, _ []uint64) { x.Pkru = w32 }},
}

// copyWords32 decodes b as little-endian 32-bit words into a new slice.
func copyWords32(b []byte) []uint32 {
	out := make([]uint32, len(b)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(b[i*4:])
	}
	return out
}

// copyWords64 decodes b as little-endian 64-bit words into a new slice.
func copyWords64(b []byte) []uint64 {
	out := make([]uint64, len(b)/8)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(b[i*8:])
	}
	return out
}

// fpregsEntry splits an NT_X86_XSTATE buffer (or a bare 512-byte fxsave
// area) into CRIU's UserX86FpregsEntry. Its word lists are views of xs
// where words32 and words64 can make them (words_unsafe.go): xs must not
// change while the entry is in use.
func fpregsEntry(xs []byte) (*pb.UserX86FpregsEntry, error) {
	if len(xs) < 512 {
		return nil, fmt.Errorf("fpu state is %d bytes, want at least 512", len(xs))
	}
	le := binary.LittleEndian
	f := &pb.UserX86FpregsEntry{
		Cwd:       proto.Uint32(uint32(le.Uint16(xs[0:]))),
		Swd:       proto.Uint32(uint32(le.Uint16(xs[2:]))),
		Twd:       proto.Uint32(uint32(le.Uint16(xs[4:]))),
		Fop:       proto.Uint32(uint32(le.Uint16(xs[6:]))),
		Rip:       proto.Uint64(le.Uint64(xs[8:])),
		Rdp:       proto.Uint64(le.Uint64(xs[16:])),
		Mxcsr:     proto.Uint32(le.Uint32(xs[24:])),
		MxcsrMask: proto.Uint32(le.Uint32(xs[28:])),
		StSpace:   words32(xs[32:160]),
		XmmSpace:  words32(xs[160:416]),
		Padding:   words32(xs[416:512]),
	}
	if len(xs) < 576 {
		return f, nil
	}
	// For ptrace the kernel puts the user xfeatures (XCR0) in the first
	// word of sw_reserved (USER_XSTATE_XCR0_WORD, byte 464).
	xfeatures := le.Uint64(xs[464:])
	x := &pb.UserX86XsaveEntry{XstateBv: proto.Uint64(le.Uint64(xs[512:]))}
	for _, c := range xsaveComponents {
		comp, ok := cpu.XStateComponent(c.bit)
		if !ok || xfeatures&(1<<c.bit) == 0 || comp.Offset+comp.Size > len(xs) {
			continue
		}
		b := xs[comp.Offset : comp.Offset+comp.Size]
		if c.wordsOf32 {
			c.set(x, words32(b), nil)
		} else {
			c.set(x, nil, words64(b))
		}
	}
	f.Xsave = x
	return f, nil
}
