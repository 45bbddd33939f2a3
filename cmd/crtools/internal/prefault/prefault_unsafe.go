package prefault

import "unsafe"

// textAddr returns an address in crtools' own text: the code of this
// package's init, which is part of the binary whatever way it was built
// (static, dynamic, PIE).
func textAddr() uintptr {
	f := textAddr
	// A func value points to a closure whose first word is the code
	// address.
	return **(**uintptr)(unsafe.Pointer(&f))
}

// heapSink keeps heapFront's object on the heap.
var heapSink []byte

// heapFront returns the address of a fresh large heap object: large
// objects get pages of their own from the page allocator, which hands out
// the lowest free address, so the object lies where the heap grows next.
func heapFront() uintptr {
	// Just over the largest small-object size (32 KiB), so as to take
	// pages of its own and no more.
	heapSink = make([]byte, 32<<10+1)
	p := uintptr(unsafe.Pointer(unsafe.SliceData(heapSink)))
	heapSink = nil
	return p
}
