// Package cpu describes the CPU features the engine must agree on between
// dump and restore: where each XSAVE component sits in the xstate buffer
// that PTRACE_GETREGSET/SETREGSET NT_X86_XSTATE use.
//
// The buffer is in the standard (non-compacted) format, whose component
// offsets are NOT the same on every CPU: Intel leaves room for MPX (opmask
// at 1088), AMD Zen 4 packs them (opmask at 832, a 2432-byte buffer). The
// only authority is CPUID leaf 0xD, read here with one instruction of Go
// assembly.
package cpu

import "sync"

func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)

// Component is one XSAVE state component in the standard format.
type Component struct {
	Bit    int // XFEATURE number (2 = AVX upper halves, 5 = opmask, ...)
	Offset int // byte offset in the xstate buffer
	Size   int // bytes
}

var (
	layoutOnce sync.Once
	layout     map[int]Component
)

// XStateComponent returns the offset and size of XSAVE component bit (2 to
// 31) on this CPU, and false when the CPU does not have it. Components 0
// and 1 (x87, SSE) live in the legacy 512-byte area at fixed places.
func XStateComponent(bit int) (Component, bool) {
	layoutOnce.Do(func() {
		layout = map[int]Component{}
		if maxLeaf, _, _, _ := cpuid(0, 0); maxLeaf < 0xd {
			return
		}
		xcr0lo, _, _, xcr0hi := cpuid(0xd, 0)
		supported := uint64(xcr0lo) | uint64(xcr0hi)<<32
		for b := 2; b < 32; b++ {
			if supported&(1<<b) == 0 {
				continue
			}
			size, off, _, _ := cpuid(0xd, uint32(b))
			if size == 0 || off == 0 {
				continue // a supervisor component: not in the user buffer
			}
			layout[b] = Component{Bit: b, Offset: int(off), Size: int(size)}
		}
	})
	c, ok := layout[bit]
	return c, ok
}
