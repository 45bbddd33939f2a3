package dump

import (
	"encoding/binary"
	"unsafe"
)

// littleEndian: this machine stores words as the images do.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// words32 returns b as little-endian 32-bit words: b itself, seen as
// words, when the machine is little-endian and b is aligned for them,
// else a decoded copy. The FPU entry of every thread is some 600 words of
// its XSAVE buffer: copies were 2.3 KiB of fresh heap a thread (a 50-thread
// dump: 28 pages, each a trap on this kind of host) for bytes the buffer
// already holds in that layout.
func words32(b []byte) []uint32 {
	if len(b) >= 4 && len(b)%4 == 0 && littleEndian && uintptr(unsafe.Pointer(&b[0]))%4 == 0 {
		return unsafe.Slice((*uint32)(unsafe.Pointer(&b[0])), len(b)/4)
	}
	return copyWords32(b)
}

// words64 is words32 for 64-bit words.
func words64(b []byte) []uint64 {
	if len(b) >= 8 && len(b)%8 == 0 && littleEndian && uintptr(unsafe.Pointer(&b[0]))%8 == 0 {
		return unsafe.Slice((*uint64)(unsafe.Pointer(&b[0])), len(b)/8)
	}
	return copyWords64(b)
}
