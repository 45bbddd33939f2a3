package dump

import (
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/cpu"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/engine/ptrace"
)

func regsEntry(r *ptrace.Regs) *pb.UserX86RegsEntry {
	u := proto.Uint64
	return &pb.UserX86RegsEntry{
		R15: u(r.R15), R14: u(r.R14), R13: u(r.R13), R12: u(r.R12), Bp: u(r.Rbp), Bx: u(r.Rbx),
		R11: u(r.R11), R10: u(r.R10), R9: u(r.R9), R8: u(r.R8), Ax: u(r.Rax), Cx: u(r.Rcx),
		Dx: u(r.Rdx), Si: u(r.Rsi), Di: u(r.Rdi), OrigAx: u(r.Orig_rax), Ip: u(r.Rip), Cs: u(r.Cs),
		Flags: u(r.Eflags), Sp: u(r.Rsp), Ss: u(r.Ss), FsBase: u(r.Fs_base), GsBase: u(r.Gs_base),
		Ds: u(r.Ds), Es: u(r.Es), Fs: u(r.Fs), Gs: u(r.Gs),
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
